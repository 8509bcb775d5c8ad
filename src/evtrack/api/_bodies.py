"""Request bodies: bounded per request, bounded for the whole server, and read against a clock.

Every handler that needs a whole body gets it from :func:`read_body`, never from
``request.read()``, so three limits hold whatever the clients do:

- **Per request**: a body larger than the route's limit (``MAX_REQUEST_BODY`` unless the
  route says less) is refused with 413 as soon as that is known: from ``Content-Length``
  before a byte is read, or while reading (a chunked or gzip body, counted inflated).
- **Per server**: the bodies buffered at once stay within one budget
  (``--max-buffered-body-bytes``), each charged twice its size (its bytes and their decoded
  form). A body takes its share before it is read (for its declared length, or chunk by chunk
  when undeclared) and gives it back when its request is answered.
  A request that cannot get its share within ``--body-budget-wait`` seconds gets 503 with
  ``Retry-After``, which MLflow's client retries. Until then it reads nothing: the client's
  bytes wait in its socket, not in this process.
- **In time**: a body must keep arriving. As Apache's ``mod_reqtimeout`` does, a body has
  ``--body-timeout`` seconds, plus one more second for every ``--body-min-rate`` bytes that
  arrived; a client that stalls or trickles slower than that gets 408 and its connection is
  closed. Streamed uploads (artifacts) are held to the same clock through :func:`body_chunks`.

Decoding is charged as much again as the body, which holds for the large bodies that matter
(long strings); many small numbers decode to more, but MLflow's routes bound those (a
log-batch body is at most 1 MB). The budget bounds what clients can make the server hold,
which is what would otherwise grow with concurrency.
"""

from __future__ import annotations

import asyncio
import collections
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from evtrack.errors import ErrorCode, EvtrackError, invalid

MiB = 1024 * 1024
MAX_REQUEST_BODY = 64 * MiB
"""The largest body any route buffers (the reference's limit is similar)."""
BUDGET_RETRY_AFTER_S = 1
DECODED_CHARGE = 2
"""A buffered body is charged twice its size: its bytes, and what decoding them takes (the
text of a JSON string, about as large; numbers and structures vary)."""
Body = bytes | bytearray
_READ_SIZE = 1 << 16


class HttpStatusError(EvtrackError):
    """An MLflow-shaped error whose HTTP status is not its code's usual one (408, 413)."""

    def __init__(
        self,
        code: ErrorCode,
        message: str,
        status: int,
        *,
        headers: dict[str, str] | None = None,
        close: bool = False,
        drop: bool = False,
    ) -> None:
        super().__init__(code, message, headers=headers)
        self.status = status
        # close: answer with "Connection: close" (the body was left unread; aiohttp reads and
        # discards it for a while first, so that a client still sending sees the answer).
        # drop: close the connection as soon as the answer is written (a stalled client).
        self.close = close or drop
        self.drop = drop

    @property
    def http_status(self) -> int:
        return self.status


@dataclass(frozen=True)
class BodyLimits:
    max_buffered_bytes: int = 256 * MiB
    budget_wait_s: float = 5.0
    timeout_s: float = 20.0
    min_rate: float = 500.0  # bytes per second; 0: no rate floor, only pauses time out


class BodyBudget:
    """A server-wide pool of bytes for buffered bodies, granted first come, first served."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.used = 0
        self._waiting: collections.deque[tuple[int, asyncio.Future[None]]] = collections.deque()

    def _grant_waiting(self) -> None:
        while self._waiting:
            size, future = self._waiting[0]
            if future.done():
                self._waiting.popleft()
                continue
            if self.used + size > self.capacity:
                return
            self._waiting.popleft()
            self.used += size
            future.set_result(None)

    async def acquire(self, size: int, timeout_s: float) -> bool:
        """Take ``size`` bytes, waiting up to ``timeout_s``; False when they did not come."""
        if size <= 0:
            return True
        if not self._waiting and self.used + size <= self.capacity:
            self.used += size
            return True
        if size > self.capacity:
            return False
        future = asyncio.get_running_loop().create_future()
        self._waiting.append((size, future))
        try:
            await asyncio.wait_for(asyncio.shield(future), timeout_s)
        except TimeoutError:
            if future.done():  # granted just as the wait ran out
                return True
            future.cancel()
            return False
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.release(size)
            else:
                future.cancel()
            raise
        return True

    def release(self, size: int) -> None:
        self.used -= size
        self._grant_waiting()


@dataclass
class _Held:
    budget: BodyBudget
    size: int = 0


_BODY: web.RequestKey[Body] = web.RequestKey("body")
_HELD = web.RequestKey("body_budget_held", _Held)
BODIES = web.AppKey("body_limits", BodyLimits)
BUDGET = web.AppKey("body_budget", BodyBudget)
_DEFAULT_LIMITS = BodyLimits()
_PROCESS_BUDGET = BodyBudget(_DEFAULT_LIMITS.max_buffered_bytes)
"""For an app that was not given limits (``build_app`` always gives them): the defaults."""


def _limits(request: web.Request) -> BodyLimits:
    return request.config_dict.get(BODIES, _DEFAULT_LIMITS)


def _budget(request: web.Request) -> BodyBudget:
    return request.config_dict.get(BUDGET, _PROCESS_BUDGET)


def release_body(request: web.Request) -> None:
    """Give the request's share of the budget back (once it is answered)."""
    held: _Held | None = request.get(_HELD)
    if held is not None and held.size:
        held.budget.release(held.size)
        held.size = 0


def _too_large(limit: int, declared: int | None = None) -> HttpStatusError:
    said = f" ({declared} bytes declared)" if declared is not None else ""
    return HttpStatusError(
        ErrorCode.INVALID_PARAMETER_VALUE,
        f"Request body too large{said}: the limit is {limit} bytes.",
        413,
        close=True,
    )


def _timed_out(limits: BodyLimits, received: int) -> HttpStatusError:
    rule = (
        f"{limits.timeout_s:g} s plus 1 s per {limits.min_rate:g} bytes"
        if limits.min_rate > 0
        else f"at most {limits.timeout_s:g} s between two reads"
    )
    return HttpStatusError(
        ErrorCode.BAD_REQUEST,
        f"The request body did not arrive in time ({received} bytes received; a body has {rule}).",
        408,
        drop=True,
    )


class _Clock:
    """The body's deadline: ``timeout_s`` after the first read, one second later for every
    ``min_rate`` bytes received. Without a rate floor (``min_rate`` 0), ``timeout_s`` after
    the last bytes instead: only a pause that long ends the body."""

    def __init__(self, limits: BodyLimits) -> None:
        self.limits = limits
        self.started = asyncio.get_running_loop().time()
        self.received = 0

    def remaining(self) -> float:
        now = asyncio.get_running_loop().time()
        if self.limits.min_rate <= 0:
            return self.limits.timeout_s - (now - self.started)
        allowed = self.limits.timeout_s + self.received / self.limits.min_rate
        return allowed - (now - self.started)

    async def next_chunk(self, request: web.Request) -> bytes:
        remaining = self.remaining()
        if remaining <= 0:
            raise _timed_out(self.limits, self.received)
        try:
            async with asyncio.timeout(remaining):
                chunk = await request.content.readany()
        except TimeoutError:
            raise _timed_out(self.limits, self.received) from None
        self.received += len(chunk)
        if self.limits.min_rate <= 0:
            self.started = asyncio.get_running_loop().time()  # the pause starts again
        return chunk


async def read_body(request: web.Request, *, limit: int = MAX_REQUEST_BODY) -> Body:
    """The whole body (inflated when sent with ``Content-Encoding``), read once per request
    within the per-request ``limit``, the server's budget and the body clock."""
    cached: Body | None = request.get(_BODY)
    if cached is not None:
        return cached
    if not request.body_exists:
        request[_BODY] = b""
        return b""
    limits = _limits(request)
    budget = _budget(request)
    limit = min(limit, budget.capacity // DECODED_CHARGE)
    declared = request.content_length
    if declared is not None and declared > limit:
        raise _too_large(limit, declared)
    held = request.get(_HELD)
    if held is None:
        held = request[_HELD] = _Held(budget)

    async def reserve(size: int) -> None:
        if not await budget.acquire(size, limits.budget_wait_s):
            raise HttpStatusError(
                ErrorCode.TEMPORARILY_UNAVAILABLE,
                "The server is buffering as many request bodies as it may; retry shortly.",
                503,
                headers={"Retry-After": str(BUDGET_RETRY_AFTER_S)},
                close=True,
            )
        held.size += size

    await reserve(DECODED_CHARGE * (declared or 0))
    clock = _Clock(limits)
    # One buffer grown in place: joining a list of chunks would hold the body twice.
    body = bytearray()
    try:
        while chunk := await clock.next_chunk(request):
            if clock.received > limit:
                raise _too_large(limit)
            if DECODED_CHARGE * clock.received > held.size:
                await reserve(DECODED_CHARGE * clock.received - held.size)
            body += chunk
    except (ValueError, zlib.error, HttpProcessingError) as exc:
        raise invalid(f"Unreadable request body: {exc}") from None
    request[_BODY] = body
    return body


async def body_chunks(request: web.Request) -> AsyncIterator[bytes]:
    """The body as it arrives, for handlers that stream it on (uploads): no budget, since
    nothing is buffered, but the same clock as :func:`read_body`."""
    clock = _Clock(_limits(request))
    while chunk := await clock.next_chunk(request):
        yield chunk


__all__ = [
    "BODIES",
    "BUDGET",
    "MAX_REQUEST_BODY",
    "Body",
    "BodyBudget",
    "BodyLimits",
    "HttpStatusError",
    "body_chunks",
    "read_body",
    "release_body",
]

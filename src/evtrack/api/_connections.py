"""Connections: how many the server holds, which give way, and running out of descriptors.

Each connection costs a file descriptor, and a process has a fixed number
(``RLIMIT_NOFILE``; 1,024 by default on many systems). Without a bound, a client that opens
idle connections takes them all: ``accept()`` fails with ``EMFILE``, ``/health`` stops
answering, and asyncio logs a traceback for every failed accept, many times a second.

So the server holds at most ``max_connections`` (by default the descriptor limit less a
reserve for the database pool, the listening backlog, files and logs). When a connection
arrives at the cap, the connection idle the longest gives way: one that sent nothing yet, an
unfinished request head, or a keep-alive connection between requests. Connections with a
request in progress (an upload, an event stream) are never cut for a newcomer. When none is
idle, the newcomer is answered ``503`` with ``Retry-After`` and closed, so a probe gets an
answer rather than a hang. Idle connections also time out by themselves
(``--keepalive-timeout``), and a request head must arrive within ``--header-timeout``.

If ``accept()`` still fails (descriptors taken by something else), asyncio stops accepting for
a second and reports each failure through the loop's exception handler;
:class:`AcceptFailures` turns those reports into at most one log line per interval, and frees
descriptors by closing idle connections, so the server accepts again as soon as it can.
"""

from __future__ import annotations

import asyncio
import errno
import os
import resource
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Protocol

import structlog

log = structlog.get_logger("evtrack.api")

ACCEPT_BURST = 32
"""The most connections asyncio accepts in one event-loop turn (it takes the listen backlog it
is given for that). Each is a descriptor the cap does not see yet, so the burst is small."""
LISTEN_QUEUE = 4096
"""The kernel's queue of connections waiting for ``accept()`` (capped by ``somaxconn``): long,
so that in a flood a probe's connection waits its turn instead of having its SYN dropped and
retried a second later."""
_RESERVED_FDS = 100
"""Descriptors kept for what is not a client connection: projector connections, artifact
files, logs, the event loop, the embedded PostgreSQL's pipes."""
MIN_CONNECTIONS = 64
FD_LIMIT_CAP = 1 << 20
ACCEPT_OUT_OF_RESOURCES = "socket.accept() out of system resource"
_RESOURCE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


@dataclass(frozen=True)
class ConnectionLimits:
    keepalive_timeout_s: float = 15.0
    header_timeout_s: float = 10.0
    max_connections: int = 1000
    accept_burst: int = ACCEPT_BURST


def raise_fd_limit() -> tuple[int, int]:
    """Raise this process's soft descriptor limit to its hard limit (as Go's runtime does):
    the soft default of 1,024 is a relic of ``select()``, which nothing here uses. Returns
    the (soft, hard) limits in force afterwards."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = FD_LIMIT_CAP if hard == resource.RLIM_INFINITY else min(hard, FD_LIMIT_CAP)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return soft, hard


def default_max_connections(fd_limit: int, pool_size: int, burst: int = ACCEPT_BURST) -> int:
    """Client connections that fit in ``fd_limit`` descriptors next to everything else.

    Beyond the connections counted, a few accept bursts of descriptors may be open: accepted
    in the last two event-loop turns but not yet handed to a protocol, and those of connections
    closed to make room, which asyncio releases a turn or two later."""
    return max(MIN_CONNECTIONS, fd_limit - 4 * burst - pool_size - _RESERVED_FDS)


class Connection(Protocol):
    """What the registry needs of a connection (the HTTP protocol handler)."""

    def can_give_way(self) -> bool: ...

    def force_close(self) -> None: ...


class ConnectionRegistry:
    """The server's open connections, least recently seen first."""

    def __init__(self, max_connections: int) -> None:
        self.max_connections = max_connections
        self._open: OrderedDict[Connection, None] = OrderedDict()
        self.evicted = 0
        self.refused = 0

    def __len__(self) -> int:
        return len(self._open)

    def admit(self, conn: Connection) -> bool:
        """Count a new connection; at the cap, close the longest-idle one for it. False when
        every other connection is busy: the newcomer must be refused."""
        if len(self._open) >= self.max_connections and not self.shed(1):
            self.refused += 1
            return False
        self._open[conn] = None
        return True

    def forget(self, conn: Connection) -> None:
        self._open.pop(conn, None)

    def shed(self, count: int) -> int:
        """Close up to ``count`` idle connections, longest idle first; how many were closed.

        Busy connections met on the way move to the back, so that a scan does not walk past
        the same long-lived streams again and again."""
        closed = 0
        for _ in range(len(self._open)):
            if closed >= count or not self._open:
                break
            conn = next(iter(self._open))
            if conn.can_give_way():
                del self._open[conn]
                conn.force_close()
                closed += 1
            else:
                self._open.move_to_end(conn)
        self.evicted += closed
        return closed


class ThrottledLog:
    """One warning per ``interval_s`` for an event that can repeat thousands of times a
    second; the next line says how many were left out."""

    def __init__(self, event: str, interval_s: float = 10.0) -> None:
        self.event = event
        self.interval_s = interval_s
        self._last = -float("inf")
        self.suppressed = 0
        self.total = 0

    def __call__(self, **fields: Any) -> None:
        self.total += 1
        now = time.monotonic()
        if now - self._last < self.interval_s:
            self.suppressed += 1
            return
        log.warning(self.event, suppressed=self.suppressed, total=self.total, **fields)
        self._last = now
        self.suppressed = 0


def _open_fds() -> int | None:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:  # not Linux, or no descriptor left even for that
        return None


class AcceptFailures:
    """The event loop's exception handler: ``accept()`` out of descriptors is logged at most
    once per interval (asyncio reports it once per attempt, and retries every second with a
    burst of attempts) and closes idle connections to free descriptors; anything else goes to
    asyncio's default handler."""

    def __init__(self, registry: ConnectionRegistry, interval_s: float = 10.0) -> None:
        self.registry = registry
        self.log = ThrottledLog("server.accept_failed", interval_s)

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if context.get("message") == ACCEPT_OUT_OF_RESOURCES or (
            isinstance(exc, OSError) and exc.errno in _RESOURCE_ERRNOS and "socket" in context
        ):
            freed = self.registry.shed(max(1, self.registry.max_connections // 20))
            self.log(
                error=str(exc) if exc is not None else context.get("message"),
                open_fds=_open_fds(),
                open_connections=len(self.registry),
                max_connections=self.registry.max_connections,
                closed_idle=freed,
            )
            return
        loop.default_exception_handler(context)


__all__ = [
    "ACCEPT_BURST",
    "LISTEN_QUEUE",
    "AcceptFailures",
    "ConnectionLimits",
    "ConnectionRegistry",
    "ThrottledLog",
    "default_max_connections",
    "raise_fd_limit",
]

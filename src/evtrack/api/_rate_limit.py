"""Per-user rate limits: a token bucket per caller, 429 with ``Retry-After`` when it is empty.

The caller is the authenticated user when authentication is on, else the client's address.
Each caller may make ``rate`` requests per second on average and ``burst`` at once; MLflow's
client retries a 429 after ``Retry-After``. Probes (``/health``, ``/ready``, ``/version``) are
never limited.

Off by default (``--rate-limit 0``): without authentication every user behind one proxy or
NAT shares an address, and a training loop logging metric by metric makes hundreds of small
requests a second; a default limit would throttle the wrong people. Turn it on with auth.

Buckets are kept only while they matter: a bucket that has refilled is the same as no bucket,
so idle callers are forgotten and the table stays small whatever the number of clients.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from dataclasses import dataclass

from aiohttp import web

from evtrack.api._access import auth_enabled, principal
from evtrack.api._cross_site import PROBE_PATHS
from evtrack.errors import ErrorCode, EvtrackError
from evtrack.permissions import Permission

MAX_TRACKED = 100_000


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """Token buckets keyed by caller, ``rate`` per second, holding at most ``burst``."""

    def __init__(self, rate: float, burst: int, *, max_tracked: int = MAX_TRACKED) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("a rate limit needs rate > 0 and burst >= 1")
        self.rate = rate
        self.burst = burst
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()
        self._max_tracked = max_tracked
        self._full_after = burst / rate  # seconds after which any bucket is full again

    def waiting(self, key: str, now: float | None = None) -> float:
        """Seconds until ``key`` has a token again (0.0 if it has one), spending none."""
        bucket = self._buckets.get(key)
        if bucket is None:
            return 0.0
        now = time.monotonic() if now is None else now
        tokens = min(self.burst, bucket.tokens + (now - bucket.updated) * self.rate)
        return 0.0 if tokens >= 1.0 else (1.0 - tokens) / self.rate

    def take(self, key: str, now: float | None = None) -> float:
        """Spend one token of ``key``'s bucket: 0.0 when granted, else the seconds until the
        next token."""
        now = time.monotonic() if now is None else now
        bucket = self._buckets.get(key)
        if bucket is None:
            self._forget_idle(now)
            bucket = self._buckets[key] = _Bucket(float(self.burst), now)
        else:
            self._buckets.move_to_end(key)
            bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.updated) * self.rate)
            bucket.updated = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        return (1.0 - bucket.tokens) / self.rate

    def _forget_idle(self, now: float) -> None:
        # Least recently used first: stop at the first bucket still refilling.
        while self._buckets:
            key, oldest = next(iter(self._buckets.items()))
            if now - oldest.updated < self._full_after and len(self._buckets) < self._max_tracked:
                return
            del self._buckets[key]

    def __len__(self) -> int:
        return len(self._buckets)


RATE_LIMITER = web.AppKey("rate_limiter", RateLimiter)


def _address(request: web.Request) -> str:
    return f"addr:{request.remote or 'unknown'}"


def _limited(limiter: RateLimiter, wait: float) -> EvtrackError:
    retry_after = max(1, math.ceil(wait))
    return EvtrackError(
        ErrorCode.REQUEST_LIMIT_EXCEEDED,
        f"Too many requests: at most {limiter.rate:g} per second (bursts of "
        f"{limiter.burst}) per user; retry in {retry_after} s.",
        headers={"Retry-After": str(retry_after)},
    )


async def check_rate(request: web.Request, permission: Permission) -> None:
    """Spend one of the caller's requests, or refuse with 429 and ``Retry-After``.

    With authentication on, a route that needs a permission authenticates its caller here
    (once per request; the access guard reuses it) and counts the request against that
    user; a request whose credentials fail counts against its address, and an address out
    of requests is refused before its credentials are even checked, so that guessing
    passwords is limited too. Otherwise requests count against the client's address.
    """
    limiter = request.config_dict.get(RATE_LIMITER)
    if limiter is None or request.path in PROBE_PATHS:
        return
    key = _address(request)
    if permission is not Permission.NONE and auth_enabled(request):
        if (wait := limiter.waiting(key)) > 0:
            raise _limited(limiter, wait)
        try:
            key = f"user:{(await principal(request)).name}"
        except EvtrackError as exc:
            if exc.code is ErrorCode.UNAUTHENTICATED and (wait := limiter.take(key)) > 0:
                raise _limited(limiter, wait) from None
            raise
    wait = limiter.take(key)
    if wait > 0:
        raise _limited(limiter, wait)


__all__ = ["RATE_LIMITER", "RateLimiter", "check_rate"]

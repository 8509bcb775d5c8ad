"""The live status of a deployment, for the console's status page and its live channel.

Everything is read from the database, so every API node shows the same figures whichever
process ingests or projects: events appended and metric points ingested per second (counted
from the log itself, under the projectors' horizon rule, so a late-committing transaction is
counted once, in its place), each read model's lag, parked events, the database's latency,
the artifact store's health, and the last errors.

A sampler takes one snapshot a second while someone watches (the status stream, or a
snapshot request in the last half minute) and stops when nobody has for a while: an idle
server reads nothing. A snapshot is therefore never more than about one tick old.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
import structlog

from evtrack.application._readiness import Readiness
from evtrack.errors import ErrorCode, EvtrackError
from evtrack.eventlog import (
    Conn,
    EventStore,
    LogPosition,
    database_unavailable,
    read_after,
)
from evtrack.events import RunDataLogged
from evtrack.events.arrays import metric_arrays
from evtrack.projector import parked_counts, recent_parked

log = structlog.get_logger("evtrack.status")

TICK_S = 1.0
"""One snapshot a second: the page promises figures at most two seconds old."""
RATE_WINDOW_S = 5.0
"""Rates are averaged over this much of the recent past, so one burst does not flicker."""
IDLE_STOP_S = 30.0
"""The sampler stops this long after the last watcher left or the last snapshot request."""
LAG_COUNT_CAP = 1_000_000
"""Backlogs are counted up to this many events ("at least" beyond): a count per second must
stay cheap however far a stopped projector has fallen behind."""
READ_BUDGET_S = 0.3
"""Time a tick may spend reading the log to count points; past it, the rest is estimated."""
ARTIFACT_PROBE_EVERY_S = 5.0
"""The artifact store is asked less often than once a tick (an S3 request per second per
watched server would be wasteful)."""
RECENT = 10
"""How many recent errors and parked events a snapshot lists."""
MAX_TICKS_WAITED = 5
"""A snapshot request waits this many ticks at most for a snapshot to answer with."""


@dataclass(frozen=True, slots=True)
class RecentError:
    at_ms: int
    source: str  # "request", "database", "status", ...
    message: str
    request_id: str | None = None


class ErrorLog:
    """The last errors this process saw, newest first: what the status page lists.

    Request failures (500s) and database outages are recorded where they happen; the log
    lines stay the full record, this is the short list an operator looks at first.
    """

    def __init__(self, size: int = 50) -> None:
        self._entries: deque[RecentError] = deque(maxlen=size)

    def record(self, source: str, message: str, request_id: str | None = None) -> None:
        self._entries.appendleft(
            RecentError(int(time.time() * 1000), source, message[:500], request_id)
        )

    def recent(self, limit: int = RECENT) -> list[RecentError]:
        return list(self._entries)[:limit]


def _points(event: object) -> int:
    if not isinstance(event, RunDataLogged):
        return 0
    arrays = metric_arrays(event)
    return 0 if arrays is None else len(arrays)


@dataclass(frozen=True, slots=True)
class Throughput:
    events_per_s: float | None  # None until a whole tick has been measured
    points_per_s: float | None
    window_s: float
    estimated: bool  # part of the window was counted from positions, not read
    head: LogPosition | None


class LogMeter:
    """Counts what the log received since it last looked: events, and metric points.

    It follows the log like a projector (same order, same horizon), reading payloads of
    metric events only. A tick that cannot read its whole share within ``READ_BUDGET_S``
    (a huge burst) counts the rest by position and scales the points by what it read.
    """

    def __init__(self) -> None:
        self._cursor: LogPosition | None = None
        self._last_at: float | None = None
        # (end time, seconds covered, events, points, estimated)
        self._samples: deque[tuple[float, float, int, int, bool]] = deque()

    def reset(self) -> None:
        self._cursor, self._last_at = None, None
        self._samples.clear()

    async def tick(self, conn: Conn, head: LogPosition) -> Throughput:
        now = time.monotonic()
        if self._cursor is None or self._last_at is None:
            self._cursor, self._last_at = head, now
            return Throughput(None, None, 0.0, False, head)
        events, points, estimated = await self._count(conn, head)
        self._samples.append((now, now - self._last_at, events, points, estimated))
        self._last_at = now
        # Keep the samples that lie wholly within the window (the newest one always).
        while len(self._samples) > 1 and self._samples[0][0] - self._samples[0][1] < (
            now - RATE_WINDOW_S
        ):
            self._samples.popleft()
        span = sum(s[1] for s in self._samples)
        if span <= 0:
            return Throughput(None, None, 0.0, False, head)
        return Throughput(
            events_per_s=round(sum(s[2] for s in self._samples) / span, 1),
            points_per_s=round(sum(s[3] for s in self._samples) / span, 1),
            window_s=round(span, 2),
            estimated=any(s[4] for s in self._samples),
            head=head,
        )

    async def _count(self, conn: Conn, head: LogPosition) -> tuple[int, int, bool]:
        assert self._cursor is not None
        events = points = 0
        deadline = time.monotonic() + READ_BUDGET_S
        while True:
            page = await read_after(
                conn, self._cursor, 2000, ["RunDataLogged"], max_payload_bytes=16 << 20
            )
            for record in page:
                events += 1
                points += _points(record.event)
                self._cursor = record.position
            if not page or self._cursor >= head:
                return events, points, False
            if time.monotonic() >= deadline:
                break
        # Over budget: the rest up to the head is counted by position (global positions are
        # dense but for rolled-back transactions), its points estimated from what was read.
        rest = max(0, head.global_position - self._cursor.global_position)
        per_event = points / events if events else 0.0
        self._cursor = max(self._cursor, head)
        return events + rest, points + round(rest * per_event), True


ArtifactProbe = Callable[[], Awaitable[dict[str, Any]]]


class StatusBoard:
    """Snapshots of the deployment's health, one per tick while anyone watches."""

    def __init__(
        self,
        store: EventStore,
        readiness: Readiness,
        errors: ErrorLog,
        probe_artifacts: ArtifactProbe,
        *,
        tick_s: float = TICK_S,
    ) -> None:
        self._store = store
        self._readiness = readiness
        self._errors = errors
        self._probe_artifacts = probe_artifacts
        self._tick_s = tick_s
        self._meter = LogMeter()
        self._latest: dict[str, Any] | None = None
        self._ticked = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._watchers = 0
        self._last_demand = 0.0
        self._artifacts: dict[str, Any] | None = None
        self._artifacts_at = 0.0
        self._database_down = False
        self._sequence = 0

    # --- for the API ---------------------------------------------------------------------

    async def snapshot(self, *, measured: bool = True) -> dict[str, Any]:
        """The latest snapshot. ``measured``: with rates measured over at least one tick (on
        an idle server, the first call waits for the sampler's second tick, about a second);
        otherwise the first snapshot will do (its rates are None: not measured yet)."""
        self._last_demand = time.monotonic()
        self._ensure_running()
        for _ in range(MAX_TICKS_WAITED):
            latest = self._latest
            if latest is not None and not (measured and latest["ingest"]["events_per_s"] is None):
                return latest
            if not await self._next_tick():
                self._ensure_running()
        if self._latest is not None:
            return self._latest  # rates not measured (the database is away): they say None
        raise EvtrackError(
            ErrorCode.TEMPORARILY_UNAVAILABLE,
            "No status snapshot could be taken; the server log says why.",
            headers={"Retry-After": "1"},
        )

    async def updates(self) -> AsyncGenerator[dict[str, Any], None]:
        """Every snapshot from now on, one per tick, starting with the latest one."""
        self._watchers += 1
        try:
            self._ensure_running()
            sent = -1
            while True:
                latest = self._latest
                if latest is not None and latest["sequence"] != sent:
                    sent = latest["sequence"]
                    yield latest
                if not await self._next_tick():
                    self._ensure_running()  # the sampler ended (it never should with a watcher)
        finally:
            self._watchers -= 1
            self._last_demand = time.monotonic()

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # --- the sampler ---------------------------------------------------------------------

    def _ensure_running(self) -> None:
        if self._task is None or self._task.done():
            self._meter.reset()
            self._latest = None
            self._task = asyncio.create_task(self._run(), name="status-sampler")

    async def _next_tick(self) -> bool:
        """Wait for the sampler's next snapshot; False if it stopped."""
        ticked = self._ticked
        task = self._task
        if task is None or task.done():
            return False
        waiter = asyncio.ensure_future(ticked.wait())
        try:
            await asyncio.wait({waiter, task}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
        return ticked.is_set()

    def _idle(self) -> bool:
        return self._watchers == 0 and time.monotonic() - self._last_demand > IDLE_STOP_S

    async def _run(self) -> None:
        while True:
            started = time.monotonic()
            try:
                self._latest = await self._sample()
            except Exception as exc:  # never let the status page die with the sampler
                log.exception("status.sample_failed")
                self._errors.record("status", f"{type(exc).__name__}: {exc}")
            ticked, self._ticked = self._ticked, asyncio.Event()
            ticked.set()
            if self._idle():
                return
            await asyncio.sleep(max(0.0, self._tick_s - (time.monotonic() - started)))

    async def _sample(self) -> dict[str, Any]:
        self._sequence += 1
        database: dict[str, Any]
        throughput = Throughput(None, None, 0.0, False, None)
        parked: dict[str, Any] = {"total": None, "by_read_model": {}, "recent": []}
        try:
            async with self._store.pool.acquire() as conn:
                began = time.perf_counter()
                await conn.fetchval("SELECT 1")
                latency_ms = round((time.perf_counter() - began) * 1000, 2)
                head = await self._store.last_visible_position(conn)
                throughput = await self._meter.tick(conn, head)
                parked = await _parked(conn)
            database = {"ok": True, "latency_ms": latency_ms, "error": None}
            if self._database_down:
                self._database_down = False
                self._errors.record("database", "the database is reachable again")
        except Exception as exc:
            if not database_unavailable(exc):
                raise
            self._meter.reset()  # the window would straddle the outage
            database = {"ok": False, "latency_ms": None, "error": type(exc).__name__}
            if not self._database_down:
                self._database_down = True
                self._errors.record("database", f"unreachable: {type(exc).__name__}: {exc}")
        report = await self._readiness.check(count_at_most=LAG_COUNT_CAP)
        lagging = {lag.name for lag in report.lagging}
        stalled = {lag.name: lag.stalled_s for lag in report.lagging}
        read_models = [
            {
                "name": name,
                "behind": behind,
                "at_least": behind >= LAG_COUNT_CAP,
                "stalled_s": stalled.get(name, 0.0),
                "state": "lagging" if name in lagging else ("behind" if behind else "ok"),
            }
            for name, behind in sorted(report.behind.items())
        ]
        return {
            "sequence": self._sequence,
            "generated_at": int(time.time() * 1000),
            "tick_s": self._tick_s,
            "ready": report.ready,
            "ingest": {
                "events_per_s": throughput.events_per_s,
                "points_per_s": throughput.points_per_s,
                "window_s": throughput.window_s,
                "estimated": throughput.estimated,
                "head": None
                if throughput.head is None
                else f"{throughput.head.transaction_id}-{throughput.head.global_position}",
            },
            "read_models": read_models,
            "max_lag": report.max_lag,
            "stall_after_s": report.stall_after_s,
            "parked": parked,
            "database": database,
            "artifacts": await self._artifact_health(),
            "errors": [
                {
                    "at": e.at_ms,
                    "source": e.source,
                    "message": e.message,
                    "request_id": e.request_id,
                }
                for e in self._errors.recent()
            ],
        }

    async def _artifact_health(self) -> dict[str, Any]:
        now = time.monotonic()
        if self._artifacts is None or now - self._artifacts_at >= ARTIFACT_PROBE_EVERY_S:
            try:
                self._artifacts = await asyncio.wait_for(self._probe_artifacts(), 5.0)
            except Exception as exc:
                self._artifacts = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
            self._artifacts_at = now
        return self._artifacts


async def _parked(conn: Conn) -> dict[str, Any]:
    """Parked events by read model, and the newest ones with their errors."""
    try:
        counts = await parked_counts(conn)
        recent = await recent_parked(conn, RECENT)
    except asyncpg.UndefinedTableError:  # no projector has ever run on this database
        return {"total": 0, "by_read_model": {}, "recent": []}
    return {
        "total": sum(counts.values()),
        "by_read_model": counts,
        "recent": [
            {
                "read_model": p.projection,
                "position": f"{p.position.transaction_id}-{p.position.global_position}",
                "stream_id": p.stream_id,
                "event_type": p.event_type,
                "error": p.error,
                "parked_at": None
                if p.first_parked_at is None
                else int(p.first_parked_at.timestamp() * 1000),
                "attempts": p.attempts,
            }
            for p in recent
        ],
    }

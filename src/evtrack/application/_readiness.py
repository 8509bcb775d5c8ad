"""Readiness (invariant 12): is this node fit to serve reads, and if not, what lags.

Liveness (``/health``) only says the process answers. Readiness says the database answers and
every read model is close enough to the head of the event log that reads will not be refused
as stale: within a lag bound (events behind), and not stalled (behind and not moving).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

import structlog

from evtrack.eventlog import LOG_START, EventStore, LogPosition, count_events_after, read_after
from evtrack.projector import read_checkpoints

log = structlog.get_logger("evtrack.readiness")


@dataclass(frozen=True)
class ReadModelLag:
    name: str
    behind: int  # events after its checkpoint in log order
    # Age of the oldest event it has not applied: how long it has been stuck behind it.
    stalled_s: float


@dataclass(frozen=True)
class ReadinessReport:
    database: bool
    max_lag: int
    stall_after_s: float
    lagging: tuple[ReadModelLag, ...] = ()  # read models over the bound or stalled
    error: str | None = None
    behind: dict[str, int] = field(default_factory=dict)  # every read model's lag

    @property
    def ready(self) -> bool:
        return self.database and not self.lagging


class Readiness:
    """Checks the database and every read model's checkpoint against the log head.

    A read model is *lagging* when more than ``max_lag`` events are past its checkpoint, or
    when the oldest event it has not applied was recorded ``stall_after_s`` or more ago (it
    is behind and has not got past that event since: stalled, or too slow for reads to wait
    for it). Both are read from the database, so every API node gives the same answer from
    its first probe on, whichever process runs the projectors.
    """

    def __init__(
        self,
        store: EventStore,
        read_models: Sequence[str],
        *,
        max_lag: int,
        stall_after_s: float,
    ) -> None:
        self._store = store
        self._names = tuple(read_models)
        self._max_lag = max_lag
        self._stall_after_s = stall_after_s

    async def check(self, *, count_at_most: int | None = None) -> ReadinessReport:
        """The report; ``count_at_most`` caps each backlog count (a lag shown as "at least")."""
        try:
            lags = await self._lags(count_at_most)
        except Exception as exc:  # any failure to reach the database means "not ready"
            log.warning("readiness.database_unreachable", error=repr(exc))
            return ReadinessReport(
                database=False,
                max_lag=self._max_lag,
                stall_after_s=self._stall_after_s,
                error=f"database unreachable: {type(exc).__name__}",
            )
        lagging = tuple(
            lag
            for lag in lags
            if lag.behind > self._max_lag or (lag.behind and lag.stalled_s >= self._stall_after_s)
        )
        return ReadinessReport(
            database=True,
            max_lag=self._max_lag,
            stall_after_s=self._stall_after_s,
            lagging=lagging,
            behind={lag.name: lag.behind for lag in lags},
        )

    async def _lags(self, count_at_most: int | None) -> list[ReadModelLag]:
        """Each read model's backlog; those at the same checkpoint share one count."""
        async with self._store.pool.acquire() as conn:
            head = await self._store.last_visible_position()
            checkpoints = await read_checkpoints(conn, self._names)
            now: datetime = await conn.fetchval("SELECT clock_timestamp()")
            seen: dict[LogPosition, tuple[int, float]] = {}
            lags: list[ReadModelLag] = []
            for name in self._names:
                position = checkpoints.get(name, LOG_START)
                if position >= head:
                    lags.append(ReadModelLag(name, 0, 0.0))
                    continue
                if position not in seen:
                    behind = await count_events_after(conn, position, at_most=count_at_most)
                    oldest = await read_after(conn, position, 1, payload_types=[])
                    age = (now - oldest[0].recorded_at).total_seconds() if oldest else 0.0
                    seen[position] = (behind, round(max(age, 0.0), 1))
                behind, age = seen[position]
                lags.append(ReadModelLag(name, behind, age))
            return lags

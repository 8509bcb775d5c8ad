"""Counting points under faults: sent by the test, acknowledged by the server, stored.

"Stored" is read from the event log itself (the points of every ``RunDataLogged`` event of
the runs), not from a read model: a request applied twice would show up there as twice the
points even where a read model might hide it. The metrics read model is counted too, so a
projector that applied a batch twice (or lost one) is caught as well.

Each test's figures go to stdout and to the terminal summary (see ``conftest.py``).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

import asyncpg
from _support.aio import run_sync

from evtrack.events import RunDataLogged, decode_event
from evtrack.events.arrays import metric_arrays

TALLIES: list[Tally] = []
"""Every tally checked in this session, printed at the end (``conftest.py``)."""


@dataclass(frozen=True)
class Stored:
    points: int  # metric points in the runs' RunDataLogged events
    distinct: int  # distinct (run, key, step) among them (the tests never repeat one)
    events: int  # RunDataLogged events


@dataclass(frozen=True)
class Tally:
    scenario: str
    sent: int
    acknowledged: int
    stored: Stored
    read_model: int  # points in the metrics read model (rm_metrics.chunks)

    @property
    def duplicates(self) -> int:
        return self.stored.points - self.stored.distinct

    def line(self) -> str:
        return (
            f"{self.scenario}: sent {self.sent}, acknowledged {self.acknowledged}, "
            f"stored {self.stored.points} (read model {self.read_model}, "
            f"{self.stored.events} events), duplicates {self.duplicates}"
        )

    def check(self, *, everything_acknowledged: bool = True) -> None:
        """acknowledged == stored == read model, no duplicates; and, where the writers
        retried until every request was answered, sent == acknowledged."""
        TALLIES.append(self)
        print(self.line())
        assert self.duplicates == 0, self.line()
        assert self.acknowledged == self.stored.points, self.line()
        assert self.read_model == self.stored.points, self.line()
        if everything_acknowledged:
            assert self.sent == self.acknowledged, self.line()


def stored_points(dsn: str, run_ids: Iterable[str]) -> Stored:
    """Points, distinct points and events of ``run_ids`` in the event log."""
    streams = [f"run-{run_id}" for run_id in run_ids]

    async def query() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(dsn)
        try:
            rows: list[asyncpg.Record] = await conn.fetch(
                """SELECT event_type, schema_version, payload FROM events
                   WHERE stream_id = ANY($1::text[]) AND event_type = 'RunDataLogged'""",
                streams,
            )
            return rows
        finally:
            await conn.close()

    points = 0
    seen: set[tuple[str, str, int]] = set()
    rows = run_sync(query)
    for row in rows:
        event = decode_event(row["event_type"], row["schema_version"], row["payload"])
        assert isinstance(event, RunDataLogged)
        arrays = metric_arrays(event)
        if arrays is None:
            continue
        points += len(arrays)
        keys = [arrays.names[i] for i in arrays.key_index.tolist()]
        seen.update(zip([event.run_id] * len(keys), keys, arrays.steps.tolist(), strict=True))
    return Stored(points=points, distinct=len(seen), events=len(rows))


def read_model_points(dsn: str, run_ids: Iterable[str], expected: int, timeout: float = 30) -> int:
    """Points of ``run_ids`` in the metrics read model, once it holds ``expected`` (or what
    it holds when ``timeout`` runs out: the projector may still be catching up)."""
    ids = list(run_ids)

    async def query() -> int:
        conn = await asyncpg.connect(dsn)
        try:
            return int(
                await conn.fetchval(
                    "SELECT COALESCE(sum(n), 0) FROM rm_metrics.chunks WHERE run_id = ANY($1)",
                    ids,
                )
            )
        finally:
            await conn.close()

    deadline = time.monotonic() + timeout
    while True:
        count = run_sync(query)
        if count == expected or time.monotonic() > deadline:
            return count
        time.sleep(0.2)


def tally(
    scenario: str, dsn: str, run_ids: Iterable[str], *, sent: int, acknowledged: int
) -> Tally:
    ids = list(run_ids)
    stored = stored_points(dsn, ids)
    return Tally(
        scenario=scenario,
        sent=sent,
        acknowledged=acknowledged,
        stored=stored,
        read_model=read_model_points(dsn, ids, stored.points),
    )

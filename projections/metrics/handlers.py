"""Metric history read model: every point of every series, in columnar chunks, plus a
strided overview per series for charts.

Ingest at scale is the point: a projector batch of RunDataLogged events becomes one COPY of a
few chunk rows and one upsert per touched series, whatever the number of points.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from evtrack.eventlog import Conn, RecordedEvent
from evtrack.events import RunDataLogged
from evtrack.projector import Projection, load_schema

projection = Projection("metrics", load_schema("evtrack.projections.metrics"))

OVERVIEW_CAP = 5000
"""Most points kept per series overview: twice the largest chart request (2500)."""

Point = tuple[int, int, float]  # (step, timestamp, value): the order charts sample in


def _order_key(point: Point) -> tuple[int, int, float]:
    step, ts, value = point
    return step, ts, math.inf if math.isnan(value) else value


@dataclass
class _Chunk:
    timestamps: list[int] = field(default_factory=list)
    steps: list[int] = field(default_factory=list)
    vals: list[float] = field(default_factory=list)
    model_ids: list[str | None] | None = None
    dataset_names: list[str | None] | None = None
    dataset_digests: list[str | None] | None = None


def _split_by_key(e: RunDataLogged) -> dict[str, _Chunk]:
    m = e.metrics
    assert m is not None
    keys = m.keys
    if len(set(keys)) == 1:  # the common case: one series per request, no per-point work
        return {
            keys[0]: _Chunk(
                list(m.timestamps),
                list(m.steps),
                list(m.values),
                m.model_ids,
                m.dataset_names,
                m.dataset_digests,
            )
        }
    chunks: dict[str, _Chunk] = defaultdict(_Chunk)
    optional = (m.model_ids, m.dataset_names, m.dataset_digests)
    for i, key in enumerate(keys):
        chunk = chunks[key]
        chunk.timestamps.append(m.timestamps[i])
        chunk.steps.append(m.steps[i])
        chunk.vals.append(m.values[i])
        for column, name in zip(
            optional, ("model_ids", "dataset_names", "dataset_digests"), strict=True
        ):
            if column is not None:
                target = getattr(chunk, name)
                if target is None:
                    target = []
                    setattr(chunk, name, target)
                target.append(column[i])
    return chunks


@projection.on_batch(RunDataLogged)
async def _points(conn: Conn, records: Sequence[RecordedEvent]) -> None:
    rows: list[tuple[Any, ...]] = []
    arrivals: dict[tuple[str, str], list[_Chunk]] = defaultdict(list)
    for rec in records:
        e = rec.event
        assert isinstance(e, RunDataLogged)
        if e.metrics is None or not e.metrics.keys:
            continue
        for key, chunk in _split_by_key(e).items():
            rows.append(
                (
                    e.run_id,
                    key,
                    rec.position.global_position,
                    len(chunk.vals),
                    min(chunk.timestamps),
                    max(chunk.timestamps),
                    min(chunk.steps),
                    max(chunk.steps),
                    chunk.timestamps,
                    chunk.steps,
                    chunk.vals,
                    chunk.model_ids,
                    chunk.dataset_names,
                    chunk.dataset_digests,
                )
            )
            arrivals[(e.run_id, key)].append(chunk)
    if not rows:
        return
    await conn.copy_records_to_table("chunks", records=rows)
    await _update_overviews(conn, arrivals)


async def _update_overviews(conn: Conn, arrivals: dict[tuple[str, str], list[_Chunk]]) -> None:
    runs = [r for r, _ in arrivals]
    keys = [k for _, k in arrivals]
    existing = {
        (r["run_id"], r["key"]): r
        for r in await conn.fetch(
            """SELECT s.* FROM series s
               JOIN unnest($1::text[], $2::text[]) AS t(run_id, key)
                 ON s.run_id = t.run_id AND s.key = t.key""",
            runs,
            keys,
        )
    }
    updates = []
    for series_key, chunks in arrivals.items():
        row = existing.get(series_key)
        overview = _Overview.from_row(row) if row is not None else _Overview()
        for chunk in chunks:
            overview.add(chunk)
        updates.append((*series_key, *overview.as_row()))
    await conn.executemany(
        """INSERT INTO series (run_id, key, total, stride, timestamps, steps, vals,
                               first_ts, first_step, first_val, last_ts, last_step, last_val)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
           ON CONFLICT (run_id, key) DO UPDATE SET
               total = excluded.total, stride = excluded.stride,
               timestamps = excluded.timestamps, steps = excluded.steps, vals = excluded.vals,
               first_ts = excluded.first_ts, first_step = excluded.first_step,
               first_val = excluded.first_val, last_ts = excluded.last_ts,
               last_step = excluded.last_step, last_val = excluded.last_val""",
        updates,
    )


def _extreme(chunk: _Chunk, step: int) -> list[Point]:
    steps = chunk.steps
    if steps.count(step) == 1:  # the usual case, found without a Python-level loop
        i = steps.index(step)
        return [(step, chunk.timestamps[i], chunk.vals[i])]
    return [
        (s, t, v) for s, t, v in zip(steps, chunk.timestamps, chunk.vals, strict=True) if s == step
    ]


def _extremes(chunk: _Chunk) -> tuple[Point, Point]:
    """The chunk's smallest and largest points by (step, timestamp, value)."""
    low = min(_extreme(chunk, min(chunk.steps)), key=_order_key)
    high = max(_extreme(chunk, max(chunk.steps)), key=_order_key)
    return low, high


@dataclass
class _Overview:
    """Every ``stride``-th point received, in arrival order, at most ``OVERVIEW_CAP`` of them.

    Point i (counting from 0 in arrival order) is kept when i % stride == 0. When the subset
    outgrows the cap, every other kept point is dropped and the stride doubles, which keeps
    exactly the points whose index is a multiple of the new stride: the subset stays evenly
    spread over the whole series.
    """

    total: int = 0
    stride: int = 1
    timestamps: list[int] = field(default_factory=list)
    steps: list[int] = field(default_factory=list)
    vals: list[float] = field(default_factory=list)
    first: Point | None = None
    last: Point | None = None

    @classmethod
    def from_row(cls, row: Any) -> _Overview:
        return cls(
            row["total"],
            row["stride"],
            list(row["timestamps"]),
            list(row["steps"]),
            list(row["vals"]),
            (row["first_step"], row["first_ts"], row["first_val"]),
            (row["last_step"], row["last_ts"], row["last_val"]),
        )

    def add(self, chunk: _Chunk) -> None:
        offset = (-self.total) % self.stride
        self.timestamps.extend(chunk.timestamps[offset :: self.stride])
        self.steps.extend(chunk.steps[offset :: self.stride])
        self.vals.extend(chunk.vals[offset :: self.stride])
        self.total += len(chunk.vals)
        while len(self.vals) > OVERVIEW_CAP:
            self.timestamps = self.timestamps[::2]
            self.steps = self.steps[::2]
            self.vals = self.vals[::2]
            self.stride *= 2
        low, high = _extremes(chunk)
        if self.first is None or _order_key(low) < _order_key(self.first):
            self.first = low
        if self.last is None or _order_key(high) > _order_key(self.last):
            self.last = high

    def as_row(self) -> tuple[Any, ...]:
        assert self.first is not None and self.last is not None
        return (
            self.total,
            self.stride,
            self.timestamps,
            self.steps,
            self.vals,
            self.first[1],
            self.first[0],
            self.first[2],
            self.last[1],
            self.last[0],
            self.last[2],
        )

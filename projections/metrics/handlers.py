"""Metric history read model: every point of every series, in columnar chunks, plus a
strided overview per series for charts.

Ingest at scale is the point: a projector batch of RunDataLogged events becomes one binary
COPY of a few chunk rows, one COPY of overview rows and one upsert of the touched series'
counters, whatever the number of points. Points stay in numpy arrays from the event's bytes
to the COPY buffer.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from evtrack.events import RunDataLogged
from evtrack.events.arrays import (
    F64,
    I64,
    SeriesPart,
    lexicographic_extreme,
    metric_arrays,
    nan_as_largest,
)
from evtrack.projector import Conn, Projection, RecordedEvent, binary_copy, load_schema

projection = Projection("metrics", load_schema("evtrack.projections.metrics"))

OVERVIEW_CAP = 5000
"""Most points kept per series overview: twice the largest chart request (2500)."""

OVERVIEW_MAX_ROWS = 32
"""Overview rows a series may have before they are merged into one."""

_CHUNK_COLUMNS = (
    "run_id",
    "key",
    "seq",
    "n",
    "min_ts",
    "max_ts",
    "min_step",
    "max_step",
    "timestamps",
    "steps",
    "vals",
    "model_ids",
    "dataset_names",
    "dataset_digests",
)
_OVERVIEW_COLUMNS = ("run_id", "key", "first_index", "timestamps", "steps", "vals")

SeriesId = tuple[str, str]  # (run_id, key)
Point = tuple[int, int, float]  # (step, timestamp, value): the order charts sample in


@projection.on_batch(RunDataLogged)
async def _points(conn: Conn, records: Sequence[RecordedEvent]) -> None:
    chunks = binary_copy.BinaryRows(_CHUNK_COLUMNS)
    arrivals: dict[SeriesId, list[SeriesPart]] = defaultdict(list)  # in log order
    for rec in records:
        e = rec.event
        assert isinstance(e, RunDataLogged)
        arrays = metric_arrays(e)
        if arrays is None:
            continue
        seq = rec.position.global_position
        for part in arrays.by_key():
            chunks.add(*_chunk_fields(e.run_id, seq, part))
            arrivals[(e.run_id, part.key)].append(part)
    if not arrivals:
        return
    await chunks.copy_to(conn, "chunks")
    await _update_overviews(conn, arrivals)


def _chunk_fields(run_id: str, seq: int, part: SeriesPart) -> tuple[bytes | None, ...]:
    bc = binary_copy
    return (
        bc.text(run_id),
        bc.text(part.key),
        bc.int8(seq),
        bc.int4(len(part)),
        bc.int8(int(part.timestamps.min())),
        bc.int8(int(part.timestamps.max())),
        bc.int8(int(part.steps.min())),
        bc.int8(int(part.steps.max())),
        bc.int8_array(part.timestamps),
        bc.int8_array(part.steps),
        bc.float8_array(part.values),
        None if part.model_ids is None else bc.text_array(part.model_ids),
        None if part.dataset_names is None else bc.text_array(part.dataset_names),
        None if part.dataset_digests is None else bc.text_array(part.dataset_digests),
    )


@dataclass
class _Overview:
    """A series' overview state: every ``stride``-th point received, in arrival order.

    Point i (counting from 0 in arrival order) is kept when i % stride == 0. Kept points are
    appended as new rows; when there are more than ``OVERVIEW_CAP`` of them, every other one
    is dropped and the stride doubles, which keeps exactly the points whose index is a
    multiple of the new stride: the subset stays evenly spread over the whole series.
    """

    total: int = 0
    stride: int = 1
    kept: int = 0
    rows: int = 0
    first: Point | None = None
    last: Point | None = None
    # (arrival index of the first point, timestamps, steps, values)
    new_rows: list[tuple[int, I64, I64, F64]] = field(default_factory=list)

    @classmethod
    def from_row(cls, row: Any) -> _Overview:
        return cls(
            row["total"],
            row["stride"],
            row["kept"],
            row["rows"],
            (row["first_step"], row["first_ts"], row["first_val"]),
            (row["last_step"], row["last_ts"], row["last_val"]),
        )

    @property
    def must_rewrite(self) -> bool:
        """Thin (over the cap) or merge (too many rows) instead of appending rows."""
        return self.kept > OVERVIEW_CAP or self.rows + len(self.new_rows) > OVERVIEW_MAX_ROWS

    def add(self, part: SeriesPart) -> None:
        offset = (-self.total) % self.stride
        picked = slice(offset, None, self.stride)
        ts, steps, vals = part.timestamps[picked], part.steps[picked], part.values[picked]
        if len(vals):
            self.new_rows.append((self.total + offset, ts, steps, vals))
        self.total += len(part)
        self.kept += len(vals)
        low, high = _extremes(part)
        if self.first is None or _order_key(low) < _order_key(self.first):
            self.first = low
        if self.last is None or _order_key(high) > _order_key(self.last):
            self.last = high

    def rewrite(self, stored: list[tuple[int, I64, I64, F64]]) -> tuple[int, I64, I64, F64]:
        """One row holding ``stored`` rows plus the new ones, thinned to fit the cap."""
        rows = stored + self.new_rows
        ts = np.concatenate([r[1] for r in rows])
        steps = np.concatenate([r[2] for r in rows])
        vals = np.concatenate([r[3] for r in rows])
        while len(vals) > OVERVIEW_CAP:
            ts, steps, vals = ts[::2], steps[::2], vals[::2]
            self.stride *= 2
        self.kept = len(vals)
        self.rows = 1
        self.new_rows = []
        return rows[0][0], ts, steps, vals

    def as_row(self) -> tuple[Any, ...]:
        assert self.first is not None and self.last is not None
        return (
            self.total,
            self.stride,
            self.kept,
            self.rows + len(self.new_rows),
            self.first[1],
            self.first[0],
            self.first[2],
            self.last[1],
            self.last[0],
            self.last[2],
        )


def _order_key(point: Point) -> tuple[int, int, float]:
    step, ts, value = point
    return step, ts, float("inf") if value != value else value


def _extremes(part: SeriesPart) -> tuple[Point, Point]:
    """The part's smallest and largest points by (step, timestamp, value), NaN largest."""
    order = (part.steps, part.timestamps, nan_as_largest(part.values))
    low = lexicographic_extreme(order, largest=False)
    high = lexicographic_extreme(order, largest=True)
    return _point(part, low), _point(part, high)


def _point(part: SeriesPart, i: int) -> Point:
    return int(part.steps[i]), int(part.timestamps[i]), float(part.values[i])


async def _update_overviews(conn: Conn, arrivals: dict[SeriesId, list[SeriesPart]]) -> None:
    ids = list(arrivals)
    existing = {
        (r["run_id"], r["key"]): r
        for r in await conn.fetch(
            """SELECT s.* FROM series s
               JOIN unnest($1::text[], $2::text[]) AS t(run_id, key)
                 ON s.run_id = t.run_id AND s.key = t.key""",
            [r for r, _ in ids],
            [k for _, k in ids],
        )
    }
    overviews: dict[SeriesId, _Overview] = {}
    for series_id, parts in arrivals.items():
        row = existing.get(series_id)
        overview = _Overview.from_row(row) if row is not None else _Overview()
        for part in parts:
            overview.add(part)
        overviews[series_id] = overview
    rewritten = [sid for sid, o in overviews.items() if o.must_rewrite]
    stored = await _stored_overviews(conn, rewritten)
    if rewritten:
        await conn.execute(
            """DELETE FROM overview o USING unnest($1::text[], $2::text[]) AS t(run_id, key)
               WHERE o.run_id = t.run_id AND o.key = t.key""",
            [r for r, _ in rewritten],
            [k for _, k in rewritten],
        )
    rows = binary_copy.BinaryRows(_OVERVIEW_COLUMNS)
    for (run_id, key), overview in overviews.items():
        if overview.must_rewrite:
            new_rows = [overview.rewrite(stored.get((run_id, key), []))]
        else:
            new_rows = overview.new_rows
        for first_index, ts, steps, vals in new_rows:
            rows.add(
                binary_copy.text(run_id),
                binary_copy.text(key),
                binary_copy.int8(first_index),
                binary_copy.int8_array(ts),
                binary_copy.int8_array(steps),
                binary_copy.float8_array(vals),
            )
    await rows.copy_to(conn, "overview")
    counters = [(*sid, *o.as_row()) for sid, o in overviews.items()]
    columns = list(zip(*counters, strict=True))
    await conn.execute(
        """INSERT INTO series (run_id, key, total, stride, kept, rows, first_ts, first_step,
                               first_val, last_ts, last_step, last_val)
           SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::int[],
                                $6::int[], $7::bigint[], $8::bigint[], $9::float8[],
                                $10::bigint[], $11::bigint[], $12::float8[])
           ON CONFLICT (run_id, key) DO UPDATE SET
               total = excluded.total, stride = excluded.stride, kept = excluded.kept,
               rows = excluded.rows,
               first_ts = excluded.first_ts, first_step = excluded.first_step,
               first_val = excluded.first_val, last_ts = excluded.last_ts,
               last_step = excluded.last_step, last_val = excluded.last_val""",
        *[list(c) for c in columns],
    )


async def _stored_overviews(
    conn: Conn, series: list[SeriesId]
) -> dict[SeriesId, list[tuple[int, I64, I64, F64]]]:
    """The overview rows already stored for ``series``, in arrival order."""
    out: dict[SeriesId, list[tuple[int, I64, I64, F64]]] = defaultdict(list)
    if not series:
        return out
    for r in await conn.fetch(
        """SELECT o.run_id, o.key, o.first_index, o.timestamps, o.steps, o.vals FROM overview o
           JOIN unnest($1::text[], $2::text[]) AS t(run_id, key)
             ON o.run_id = t.run_id AND o.key = t.key
           ORDER BY o.run_id, o.key, o.first_index""",
        [r for r, _ in series],
        [k for _, k in series],
    ):
        out[(r["run_id"], r["key"])].append(
            (
                r["first_index"],
                np.asarray(r["timestamps"], dtype=np.int64),
                np.asarray(r["steps"], dtype=np.int64),
                np.asarray(r["vals"], dtype=np.float64),
            )
        )
    return out

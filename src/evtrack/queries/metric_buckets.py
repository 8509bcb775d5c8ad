"""A metric series down-sampled for drawing: each bucket of steps keeps its minimum and maximum.

A chart of a million-point series has a thousand pixels across. Sampling every k-th point
(what ``get-history-bulk-interval`` does, as MLflow does) loses a one-point spike; keeping
each pixel column's minimum and maximum draws the same picture as every point would. Once a
zoomed window holds few enough points, the points themselves are returned.

Like the history pages, the arithmetic is numpy's, not SQL's: PostgreSQL sends the chunks'
arrays in their binary form and numpy buckets them. Unnesting a million points into rows and
grouping them in SQL takes about four times longer. Chunks are read in batches of bounded
size, so a series of any length is summarised in bounded memory; chunks outside the window
are never read (their step range is in the chunk row).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from evtrack.queries.metrics import (
    _FLOAT8_ELEMENTS,
    _INT8_ELEMENTS,
    F64,
    I64,
    Executor,
    _column,
)

MAX_BUCKETS = 10_000
MAX_RAW_LIMIT = 100_000
BATCH_POINTS = 1_000_000
"""Points read from the database at once (about 16 MB of steps and values)."""

_SERIES_SQL = """
    SELECT total, first_step, last_step FROM rm_metrics.series WHERE run_id = $1 AND key = $2
"""
_CHUNKS_SQL = """
    SELECT seq, n, min_step, max_step FROM rm_metrics.chunks
    WHERE run_id = $1 AND key = $2 AND max_step >= $3 AND min_step <= $4
    ORDER BY seq
"""
_ARRAYS_SQL = """
    SELECT substr(array_send(steps), 21), substr(array_send(vals), 21)
    FROM rm_metrics.chunks
    WHERE run_id = $1 AND key = $2 AND seq = ANY($3::bigint[])
"""


@dataclass
class _Accumulator:
    """Per-bucket count, step range and value range, filled batch by batch."""

    lo: int
    hi: int
    buckets: int
    raw_limit: int
    count: I64 = field(init=False)
    first: I64 = field(init=False)
    last: I64 = field(init=False)
    low: F64 = field(init=False)
    high: F64 = field(init=False)
    low_step: I64 = field(init=False)  # where the minimum is (its first step)
    high_step: I64 = field(init=False)  # where the maximum is
    raw_steps: list[I64] = field(default_factory=list)
    raw_values: list[F64] = field(default_factory=list)
    total: int = 0

    def __post_init__(self) -> None:
        n = self.buckets
        self.count = np.zeros(n, np.int64)
        self.first = np.full(n, np.iinfo(np.int64).max, np.int64)
        self.last = np.full(n, np.iinfo(np.int64).min, np.int64)
        self.low = np.full(n, np.inf)
        self.high = np.full(n, -np.inf)
        self.low_step = np.full(n, np.iinfo(np.int64).max, np.int64)
        self.high_step = np.full(n, np.iinfo(np.int64).max, np.int64)

    def add(self, steps: I64, values: F64) -> None:
        inside = (steps >= self.lo) & (steps <= self.hi)
        steps, values = steps[inside], values[inside]
        if not len(steps):
            return
        self.total += len(steps)
        if self.total <= self.raw_limit:
            self.raw_steps.append(steps)
            self.raw_values.append(values)
        else:
            self.raw_steps, self.raw_values = [], []
        # Offsets in float: exact for spans below 2**53 steps, and a bucket boundary off by
        # a rounding error elsewhere is invisible at a pixel's width.
        span = float(self.hi) - float(self.lo) + 1.0
        index = ((steps.astype(np.float64) - float(self.lo)) * (self.buckets / span)).astype(
            np.int64
        )
        np.clip(index, 0, self.buckets - 1, out=index)
        self.count += np.bincount(index, minlength=self.buckets)
        np.minimum.at(self.first, index, steps)
        np.maximum.at(self.last, index, steps)
        finite = ~np.isnan(values)  # NaN has no place on a line; the bucket still counts it
        index, steps, values = index[finite], steps[finite], values[finite]
        _extreme(np.minimum, self.low, self.low_step, index, steps, values)
        _extreme(np.maximum, self.high, self.high_step, index, steps, values)


def _extreme(better: np.ufunc, best: F64, where: I64, index: I64, steps: I64, values: F64) -> None:
    """Fold a batch into each bucket's extreme value and the first step that holds it."""
    before = best.copy()
    better.at(best, index, values)
    where[best != before] = np.iinfo(np.int64).max  # a new extreme: forget the old place
    hit = values == best[index]
    np.minimum.at(where, index[hit], steps[hit])


def _step(step: np.int64, value: np.float64) -> int | None:
    return None if math.isinf(value) else int(step)


def _number(value: float) -> float | None:
    return None if math.isinf(value) or math.isnan(value) else float(value)


async def metric_buckets(
    db: Executor,
    run_id: str,
    key: str,
    *,
    start_step: int | None,
    end_step: int | None,
    buckets: int,
    raw_limit: int,
) -> dict[str, Any]:
    """Series ``key`` of ``run_id`` between two steps (inclusive; default: all of it).

    The answer has ``mode`` ``"raw"`` with the points (ordered by step, then as logged)
    when the window holds at most ``raw_limit`` of them, else ``"buckets"``: for each
    non-empty bucket of ``buckets`` equal step ranges, the first and last step it holds,
    how many points, and their minimum and maximum value with the first step holding each
    (None if all were NaN).
    """
    series = await db.fetchrow(_SERIES_SQL, run_id, key)
    answer: dict[str, Any] = {
        "run_id": run_id,
        "key": key,
        "series": None,
        "window": None,
        "mode": "raw",
        "points": {"steps": [], "values": []},
    }
    if series is None:
        return answer
    answer["series"] = {
        "points": series["total"],
        "first_step": series["first_step"],
        "last_step": series["last_step"],
    }
    lo = series["first_step"] if start_step is None else start_step
    hi = series["last_step"] if end_step is None else end_step
    acc = _Accumulator(lo, hi, buckets, raw_limit)
    chunks = await db.fetch(_CHUNKS_SQL, run_id, key, lo, hi)
    batch: list[int] = []
    loaded = 0
    for index, chunk in enumerate(chunks):
        batch.append(chunk["seq"])
        loaded += chunk["n"]
        if loaded >= BATCH_POINTS or index == len(chunks) - 1:
            rows = await db.fetch(_ARRAYS_SQL, run_id, key, batch)
            if rows:
                acc.add(
                    _column([r[0] for r in rows], _INT8_ELEMENTS, np.int64),
                    _column([r[1] for r in rows], _FLOAT8_ELEMENTS, np.float64),
                )
            batch, loaded = [], 0
    answer["window"] = {"start_step": lo, "end_step": hi, "points": acc.total}
    if acc.total <= raw_limit:
        steps = np.concatenate(acc.raw_steps) if acc.raw_steps else np.zeros(0, np.int64)
        values = np.concatenate(acc.raw_values) if acc.raw_values else np.zeros(0)
        order = np.argsort(steps, kind="stable")
        answer["points"] = {
            "steps": steps[order].tolist(),
            "values": [_number(v) for v in values[order].tolist()],
        }
        return answer
    kept = np.nonzero(acc.count)[0]
    answer["mode"] = "buckets"
    del answer["points"]
    answer["buckets"] = {
        "first_step": acc.first[kept].tolist(),
        "last_step": acc.last[kept].tolist(),
        "count": acc.count[kept].tolist(),
        "min": [_number(v) for v in acc.low[kept].tolist()],
        "max": [_number(v) for v in acc.high[kept].tolist()],
        "min_step": [_step(acc.low_step[i], acc.low[i]) for i in kept.tolist()],
        "max_step": [_step(acc.high_step[i], acc.high[i]) for i in kept.tolist()],
    }
    return answer


async def run_series(db: Executor, run_id: str) -> list[dict[str, Any]]:
    """The metric series of a run: key, points and step range, for picking one to explore."""
    rows = await db.fetch(
        """SELECT key, total, first_step, last_step FROM rm_metrics.series
           WHERE run_id = $1 ORDER BY key""",
        run_id,
    )
    return [
        {
            "key": r["key"],
            "points": r["total"],
            "first_step": r["first_step"],
            "last_step": r["last_step"],
        }
        for r in rows
    ]

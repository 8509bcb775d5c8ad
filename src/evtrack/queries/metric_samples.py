"""Down-sampled metric series for charts (``get-history-bulk-interval``).

Short series are sampled exactly, as MLflow does; long ones from the per-series overview the
projector keeps, so a chart of a million-point series never reads every point.
"""

from __future__ import annotations

import math
from typing import Any

from evtrack.queries.metrics import Executor, _metric
from evtrack.wire import mlflow as wire

EXACT_SAMPLING_LIMIT = 25_000
"""Series up to this many points are sampled exactly; longer ones from their overview."""


async def metric_history_sampled(
    db: Executor,
    run_ids: list[str],
    key: str,
    *,
    max_results: int,
    start_step: int | None,
    end_step: int | None,
) -> list[wire.Metric]:
    """Up to ``max_results`` points per run, for charts, in the runs' request order.

    Points are ordered by (step, timestamp, value) and split into ``max_results`` buckets of
    near-equal size; the first point of each bucket is kept, and the last point always is
    (replacing the last sample when the answer is full), as MLflow does. A series longer than
    ``EXACT_SAMPLING_LIMIT`` points is sampled from its overview (an evenly strided subset
    kept by the projector, with both end points), so the answer never reads every point.
    """
    out: list[wire.Metric] = []
    for run_id in run_ids:
        points = await _points_for_sampling(db, run_id, key, start_step, end_step)
        out.extend(
            _metric(key, ts, step, v, run_id) for step, ts, v in sample_rows(points, max_results)
        )
    return out


Point = tuple[int, int, float]  # (step, timestamp, value)


def _sort_key(p: Point) -> tuple[int, int, float]:
    return p[0], p[1], math.inf if math.isnan(p[2]) else p[2]


async def _points_for_sampling(
    db: Executor, run_id: str, key: str, start_step: int | None, end_step: int | None
) -> list[Point]:
    series = await db.fetchrow(
        "SELECT * FROM rm_metrics.series WHERE run_id = $1 AND key = $2", run_id, key
    )
    if series is None:
        return []
    in_range = await db.fetchval(
        """SELECT COALESCE(sum(n), 0) FROM rm_metrics.chunks
           WHERE run_id = $1 AND key = $2
             AND ($3::bigint IS NULL OR (max_step >= $3 AND min_step <= $4))""",
        run_id,
        key,
        start_step,
        end_step,
    )
    if in_range <= EXACT_SAMPLING_LIMIT:
        rows = await db.fetch(
            """SELECT DISTINCT u.step, u.ts, u.v
               FROM rm_metrics.chunks c, unnest(c.steps, c.timestamps, c.vals) AS u(step, ts, v)
               WHERE c.run_id = $1 AND c.key = $2
                 AND ($3::bigint IS NULL OR (c.max_step >= $3 AND c.min_step <= $4))
                 AND ($3::bigint IS NULL OR u.step BETWEEN $3 AND $4)""",
            run_id,
            key,
            start_step,
            end_step,
        )
        return sorted(((r["step"], r["ts"], r["v"]) for r in rows), key=_sort_key)
    overview: list[Point] = []
    for row in await db.fetch(
        """SELECT steps, timestamps, vals FROM rm_metrics.overview
           WHERE run_id = $1 AND key = $2 ORDER BY first_index""",
        run_id,
        key,
    ):
        overview.extend(zip(row["steps"], row["timestamps"], row["vals"], strict=True))
    ends = [
        (series["first_step"], series["first_ts"], series["first_val"]),
        (series["last_step"], series["last_ts"], series["last_val"]),
    ]
    points = {
        p for p in [*overview, *ends] if start_step is None or start_step <= p[0] <= (end_step or 0)
    }
    return sorted(points, key=_sort_key)


def bucket_starts(total: int, buckets: int) -> list[int]:
    """Index of the first row of each of ``buckets`` near-equal buckets (SQL's NTILE)."""
    if total <= buckets:
        return list(range(total))
    size, extra = divmod(total, buckets)
    return [
        b * (size + 1) if b < extra else extra * (size + 1) + (b - extra) * size
        for b in range(buckets)
    ]


def sample_rows(rows: list[Any], max_results: int) -> list[Any]:
    if not rows:
        return []
    if max_results <= 1:
        return [rows[-1]]
    picked = [rows[i] for i in bucket_starts(len(rows), max_results)]
    if picked[-1] is not rows[-1]:
        if len(picked) >= max_results:
            picked[-1] = rows[-1]
        else:
            picked.append(rows[-1])
    return picked

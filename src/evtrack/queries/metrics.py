"""Reads of the metric history read model."""

from __future__ import annotations

from typing import Any, TypeAlias

import asyncpg

from evtrack.eventlog import Conn
from evtrack.wire import mlflow as wire

Executor: TypeAlias = "Conn | asyncpg.Pool[Any]"


def _point(row: Any, *, with_run: bool = False) -> wire.Metric:
    return wire.Metric(
        key=row["key"],
        value="NaN" if row["is_nan"] else wire.json_double(row["value"]),
        timestamp=row["timestamp"],
        step=row["step"],
        run_id=row["run_id"] if with_run else None,
    )


async def metric_history_page(
    db: Executor, run_id: str, key: str, *, offset: int, limit: int | None
) -> tuple[list[wire.Metric], bool]:
    """One page of a metric's history in MLflow's order (timestamp, step, value).

    Returns the points and whether more follow.
    """
    fetch = None if limit is None else limit + 1
    rows = await db.fetch(
        """SELECT key, value, timestamp, step, is_nan, run_id FROM rm_metrics.points
           WHERE run_id = $1 AND key = $2
           ORDER BY timestamp, step, value, is_nan
           OFFSET $3 LIMIT $4""",
        run_id,
        key,
        offset,
        fetch,
    )
    more = limit is not None and len(rows) > limit
    return [_point(r) for r in rows[:limit] if True], more


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
    (replacing the last sample when the answer is full), as MLflow does.
    """
    out: list[wire.Metric] = []
    for run_id in run_ids:
        rows = await db.fetch(
            """SELECT key, value, timestamp, step, is_nan, run_id FROM rm_metrics.points
               WHERE run_id = $1 AND key = $2
                 AND ($3::bigint IS NULL OR step BETWEEN $3 AND $4)
               ORDER BY step, timestamp, value, is_nan""",
            run_id,
            key,
            start_step,
            end_step,
        )
        out.extend(_point(r, with_run=True) for r in sample_rows(rows, max_results))
    return out


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

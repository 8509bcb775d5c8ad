"""Reads of the experiments read model."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeAlias

import asyncpg

from evtrack.eventlog import Conn
from evtrack.wire import mlflow as wire

Executor: TypeAlias = "Conn | asyncpg.Pool[Any]"


async def get_experiments(db: Executor, ids: Sequence[int]) -> list[wire.Experiment]:
    """Experiments with their tags, in the order of ``ids``; missing ids are skipped."""
    if not ids:
        return []
    rows = await db.fetch(
        """SELECT e.*, COALESCE(
                  (SELECT array_agg(ARRAY[t.key, t.value] ORDER BY t.key)
                   FROM rm_experiments.experiment_tags t
                   WHERE t.experiment_id = e.experiment_id), '{}') AS tags
           FROM rm_experiments.experiments e
           WHERE e.experiment_id = ANY($1::bigint[])""",
        list(ids),
    )
    by_id = {r["experiment_id"]: _render(r) for r in rows}
    return [by_id[i] for i in ids if i in by_id]


async def get_experiment_id_by_name(db: Executor, name: str) -> int | None:
    value: int | None = await db.fetchval(
        "SELECT experiment_id FROM rm_experiments.experiments WHERE name = $1", name
    )
    return value


def _render(row: Any) -> wire.Experiment:
    tags = row["tags"]
    return wire.Experiment(
        experiment_id=str(row["experiment_id"]),
        name=row["name"],
        artifact_location=row["artifact_location"],
        lifecycle_stage=row["lifecycle_stage"],
        last_update_time=row["last_update_time"],
        creation_time=row["creation_time"],
        tags=[wire.KeyValue(k, v) for k, v in tags] if tags else [],
    )

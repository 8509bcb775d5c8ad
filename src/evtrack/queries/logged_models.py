"""Reads of the logged models read model: whole models as get and search return them."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any, TypeAlias

import asyncpg

from evtrack.eventlog import Conn
from evtrack.wire import mlflow as wire

Executor: TypeAlias = "Conn | asyncpg.Pool[Any]"


async def get_logged_models(
    db: Executor, model_ids: Sequence[str], *, allow_deleted: bool = False
) -> list[wire.LoggedModel]:
    """Full models in the order of ``model_ids``; unknown (and, unless allowed, deleted)
    ids are skipped, so a search page renders in its own order with one query per table."""
    if not model_ids:
        return []
    ids = list(model_ids)
    rows = await db.fetch(
        """SELECT * FROM rm_logged_models.logged_models
           WHERE model_id = ANY($1::text[]) AND (NOT deleted OR $2)""",
        ids,
        allow_deleted,
    )
    if not rows:
        return []
    found = [r["model_id"] for r in rows]
    params = await _pairs(db, "logged_model_params", found)
    tags = await _pairs(db, "logged_model_tags", found)
    metrics: dict[str, list[wire.Metric]] = defaultdict(list)
    for m in await db.fetch(
        """SELECT * FROM rm_logged_models.logged_model_metrics
           WHERE model_id = ANY($1::text[])
           ORDER BY model_id, key, step, timestamp, run_id, value""",
        found,
    ):
        metrics[m["model_id"]].append(
            wire.Metric(
                key=m["key"],
                value="NaN" if m["is_nan"] else wire.json_double(m["value"]),
                timestamp=m["timestamp"],
                step=m["step"],
                run_id=m["run_id"],
                model_id=m["model_id"],
                dataset_name=m["dataset_name"],
                dataset_digest=m["dataset_digest"],
            )
        )
    by_id = {
        r["model_id"]: wire.LoggedModel(
            info=_info(r, tags.get(r["model_id"], [])),
            data=wire.LoggedModelData(
                params=params.get(r["model_id"], []), metrics=metrics.get(r["model_id"], [])
            ),
        )
        for r in rows
    }
    return [by_id[i] for i in ids if i in by_id]


async def get_logged_model(
    db: Executor, model_id: str, *, allow_deleted: bool = False
) -> wire.LoggedModel | None:
    found = await get_logged_models(db, [model_id], allow_deleted=allow_deleted)
    return found[0] if found else None


async def get_artifact_location(db: Executor, model_id: str) -> str | None:
    """Where a live model's files are, for the artifact routes (no need to render it)."""
    location: str | None = await db.fetchval(
        """SELECT artifact_location FROM rm_logged_models.logged_models
           WHERE model_id = $1 AND NOT deleted""",
        model_id,
    )
    return location


async def _pairs(db: Executor, table: str, ids: list[str]) -> dict[str, list[wire.KeyValue]]:
    out: dict[str, list[wire.KeyValue]] = defaultdict(list)
    for row in await db.fetch(
        f"""SELECT model_id, key, value FROM rm_logged_models.{table}
            WHERE model_id = ANY($1::text[]) ORDER BY model_id, key""",
        ids,
    ):
        out[row["model_id"]].append(wire.KeyValue(row["key"], row["value"]))
    return out


def _info(row: Any, tags: list[wire.KeyValue]) -> wire.LoggedModelInfo:
    return wire.LoggedModelInfo(
        model_id=row["model_id"],
        experiment_id=str(row["experiment_id"]),
        name=row["name"],
        creation_timestamp_ms=row["creation_timestamp_ms"],
        last_updated_timestamp_ms=row["last_updated_timestamp_ms"],
        artifact_uri=row["artifact_location"],
        status=row["status"],
        model_type=row["model_type"] or "",
        source_run_id=row["source_run_id"] or "",
        status_message=row["status_message"],
        tags=tags,
    )

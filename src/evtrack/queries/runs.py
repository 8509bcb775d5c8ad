"""Reads of the runs read model: whole runs as runs/get and runs/search return them."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any, TypeAlias

import asyncpg
import msgspec

from evtrack.eventlog import Conn
from evtrack.wire import mlflow as wire

Executor: TypeAlias = "Conn | asyncpg.Pool[Any]"


async def get_runs(db: Executor, run_ids: Sequence[str]) -> list[wire.Run]:
    """Full runs in the order of ``run_ids``; ids without a run are skipped."""
    if not run_ids:
        return []
    ids = list(run_ids)
    rows = await db.fetch("SELECT * FROM rm_runs.runs WHERE run_id = ANY($1::text[])", ids)
    if not rows:
        return []
    params = await _pairs(db, "params", ids)
    tags = await _pairs(db, "tags", ids)
    metrics: dict[str, list[wire.Metric]] = defaultdict(list)
    for m in await db.fetch(
        """SELECT run_id, key, value, timestamp, step, is_nan FROM rm_runs.latest_metrics
           WHERE run_id = ANY($1::text[]) ORDER BY run_id, key""",
        ids,
    ):
        metrics[m["run_id"]].append(
            wire.Metric(
                key=m["key"],
                value="NaN" if m["is_nan"] else wire.json_double(m["value"]),
                timestamp=m["timestamp"],
                step=m["step"],
            )
        )
    datasets: dict[str, list[wire.DatasetInput]] = defaultdict(list)
    for d in await db.fetch(
        """SELECT * FROM rm_runs.dataset_inputs WHERE run_id = ANY($1::text[])
           ORDER BY run_id, name, digest""",
        ids,
    ):
        datasets[d["run_id"]].append(
            wire.DatasetInput(
                dataset=wire.Dataset(
                    name=d["name"],
                    digest=d["digest"],
                    source_type=d["source_type"],
                    source=d["source"],
                    schema=d["schema"],
                    profile=d["profile"],
                ),
                tags=msgspec.json.decode(d["tags"], type=list[wire.KeyValue]),
            )
        )
    model_inputs: dict[str, list[wire.ModelInput]] = defaultdict(list)
    for mi in await db.fetch(
        "SELECT run_id, model_id FROM rm_runs.model_inputs WHERE run_id = ANY($1::text[])", ids
    ):
        model_inputs[mi["run_id"]].append(wire.ModelInput(mi["model_id"]))
    outputs: dict[str, list[wire.ModelOutput]] = defaultdict(list)
    for mo in await db.fetch(
        "SELECT run_id, model_id, step FROM rm_runs.model_outputs WHERE run_id = ANY($1::text[])",
        ids,
    ):
        outputs[mo["run_id"]].append(wire.ModelOutput(mo["model_id"], mo["step"]))
    by_id = {
        r["run_id"]: wire.Run(
            info=_info(r),
            data=wire.RunData(
                metrics=metrics.get(r["run_id"], []),
                params=params.get(r["run_id"], []),
                tags=tags.get(r["run_id"], []),
            ),
            inputs=wire.RunInputs(
                dataset_inputs=datasets.get(r["run_id"], []),
                model_inputs=model_inputs.get(r["run_id"], []),
            ),
            outputs=wire.RunOutputs(model_outputs=outputs.get(r["run_id"], [])),
        )
        for r in rows
    }
    return [by_id[i] for i in ids if i in by_id]


async def get_run_info(db: Executor, run_id: str) -> wire.RunInfo | None:
    row = await db.fetchrow("SELECT * FROM rm_runs.runs WHERE run_id = $1", run_id)
    return None if row is None else _info(row)


async def _pairs(db: Executor, table: str, ids: list[str]) -> dict[str, list[wire.KeyValue]]:
    out: dict[str, list[wire.KeyValue]] = defaultdict(list)
    for row in await db.fetch(
        f"""SELECT run_id, key, value FROM rm_runs.{table}
            WHERE run_id = ANY($1::text[]) ORDER BY run_id, key""",
        ids,
    ):
        out[row["run_id"]].append(wire.KeyValue(row["key"], row["value"]))
    return out


def _info(row: Any) -> wire.RunInfo:
    return wire.RunInfo(
        run_id=row["run_id"],
        run_uuid=row["run_id"],
        run_name=row["run_name"],
        experiment_id=str(row["experiment_id"]),
        user_id=row["user_id"],
        status=row["status"],
        artifact_uri=row["artifact_uri"],
        lifecycle_stage=row["lifecycle_stage"],
        start_time=row["start_time"],
        end_time=row["end_time"],
    )

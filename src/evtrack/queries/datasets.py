"""Dataset summaries of experiments: which datasets their runs used, and in which context.

MLflow's UI lists them in the runs table's Datasets filter (``experiments/search-datasets``).
They come from the dataset inputs that runs record (``runs/log-inputs``); a dataset belongs to
the experiment of the runs that used it. As in MLflow, a deleted run's datasets stay listed
(its inputs are not deleted with it), and one summary is given per distinct
(experiment, name, digest, context).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeAlias

import asyncpg
import msgspec

from evtrack.eventlog import Conn

Executor: TypeAlias = "Conn | asyncpg.Pool[Any]"

MAX_DATASET_SUMMARIES = 1000
"""At most this many summaries in one answer (MLflow's limit)."""


class DatasetSummary(msgspec.Struct, omit_defaults=True):
    experiment_id: str
    name: str
    digest: str
    context: str | None = None  # the ``mlflow.data.context`` input tag, e.g. "training"


async def dataset_summaries(
    db: Executor, experiment_ids: Sequence[int], *, limit: int = MAX_DATASET_SUMMARIES
) -> list[DatasetSummary]:
    """The distinct datasets the runs of ``experiment_ids`` used, at most ``limit``."""
    if not experiment_ids:
        return []
    rows = await db.fetch(
        """SELECT DISTINCT r.experiment_id, d.name, d.digest, d.context
           FROM rm_runs.dataset_inputs d
           JOIN rm_runs.runs r ON r.run_id = d.run_id
           WHERE r.experiment_id = ANY($1::bigint[])
           ORDER BY r.experiment_id, d.name, d.digest, d.context NULLS FIRST
           LIMIT $2""",
        list(experiment_ids),
        limit,
    )
    return [
        DatasetSummary(
            experiment_id=str(row["experiment_id"]),
            name=row["name"],
            digest=row["digest"],
            context=row["context"],
        )
        for row in rows
    ]

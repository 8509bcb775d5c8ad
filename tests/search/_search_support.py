"""Sample data for the search tests, kept out of ``conftest.py`` so test modules can import
its types (``conftest`` is not a unique module name in this suite).

The data is created *through MLflow* (its run ids, its latest-metric rule, its timestamps) in
MLflow's own SQLite store, then copied row by row into the ``rm_runs`` / ``rm_experiments`` tables,
so the Postgres tests can compare evtrack's results with MLflow's on identical data.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg


@dataclass
class SearchDb:
    """The test database: an open connection, and whether its default collation is ICU."""

    conn: asyncpg.Connection
    icu_collation: bool


@dataclass
class RunSpec:
    name: str
    start_time: int
    status: str = "RUNNING"
    end_time: int | None = None
    user: str = "alice"
    metrics: dict[str, list[float]] = field(default_factory=dict)  # logged in step order
    params: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    datasets: list[tuple[str, str, str | None]] = field(default_factory=list)
    deleted: bool = False
    experiment: str = "A"


NAN = float("nan")

# Ties on start_time (1000 x3, 3000 x2) exercise the run_id tiebreaker; acc covers NaN, a real
# 0.0 (NaN is stored as 0), ties, negatives and a missing metric; strings vary only in case.
RUN_SPECS: list[RunSpec] = [
    RunSpec(
        "alpha",
        1000,
        "FINISHED",
        1500,
        "alice",
        {"acc": [0.2, 0.9], "loss": [0.1]},
        {"lr": "Abc"},
        {"team": "Vision"},
        [("train_ds", "d1", "training")],
    ),
    RunSpec(
        "Beta",
        1000,
        "FINISHED",
        1600,
        "bob",
        {"acc": [0.9]},
        {"lr": "abc"},
        {"team": "vision"},
        [("Eval_DS", "d2", "eval"), ("train_ds", "d1", "training")],
    ),
    RunSpec(
        "gamma",
        2000,
        "RUNNING",
        None,
        "alice",
        {"acc": [0.3, NAN]},
        {"lr": "0.1"},
        {"team": "nlp"},
        [("other", "d3", None)],
    ),
    RunSpec("delta", 3000, "FAILED", 3100, "Carol", {"acc": [0.5], "loss": [NAN]}),
    RunSpec("eps", 3000, "FINISHED", 3200, "alice", {"loss": [0.7]}, {"lr": "xyz"}, {"team": ""}),
    RunSpec(
        "zeta",
        500,
        "KILLED",
        600,
        "bob",
        {"acc": [-1.5], "loss": [2.0]},
        {"lr": "10"},
        {"team": "Vision"},
        [("train_ds", "d9", "training")],
    ),
    RunSpec("eta", 1000, "RUNNING", None, "bob", {"acc": [100.0]}, {"lr": "a_c"}),
    RunSpec(
        "theta", 4000, "FINISHED", 4100, "alice", {"acc": [0.0]}, {"lr": "ABC"}, {"team": "NLP"}
    ),
    RunSpec(
        "iota",
        2500,
        "FINISHED",
        2600,
        "bob",
        {"acc": [0.7]},
        {"lr": "abc"},
        {"team": "vision"},
        deleted=True,
    ),
    RunSpec(
        "kappa",
        5000,
        "FINISHED",
        5100,
        "alice",
        {"acc": [0.95]},
        {"lr": "abc"},
        {"team": "vision"},
        experiment="B",
    ),
]

# name -> (creation_time, last_update_time, tags, deleted); "A"/"B" hold the runs above.
EXPERIMENT_SPECS: dict[str, tuple[int, int, dict[str, str], bool]] = {
    "A": (1000, 7000, {"k": "v"}, False),
    "B": (3000, 3000, {}, False),
    "Beta": (1000, 1000, {"k": "v"}, False),
    "alpha": (1000, 2000, {"k": "V"}, False),
    "Gamma": (500, 500, {"mlflow.experiment.isGateway": "true"}, False),
    "delta": (2000, 2000, {"other": "1"}, True),
}


@dataclass
class Reference:
    """The MLflow store plus the ids it assigned."""

    client: Any  # mlflow.MlflowClient
    experiment_ids: dict[str, int]
    run_ids: dict[str, str]  # run name -> run id

    def run_names(self, runs: list[Any]) -> list[str]:
        by_id = {v: k for k, v in self.run_ids.items()}
        return [by_id[r.info.run_id] for r in runs]


def build_reference(tmp: Path) -> Reference:
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    from mlflow import MlflowClient
    from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, RunStatus
    from mlflow.store.tracking.dbmodels.models import SqlExperiment

    client = MlflowClient(f"sqlite:///{tmp / 'reference.db'}")
    store = client._tracking_client.store
    experiment_ids: dict[str, int] = {}
    for name, (_, _, tags, _) in EXPERIMENT_SPECS.items():
        experiment_ids[name] = int(client.create_experiment(name, tags=tags or None))

    run_ids: dict[str, str] = {}
    for spec in RUN_SPECS:
        run = store.create_run(
            str(experiment_ids[spec.experiment]), spec.user, spec.start_time, [], spec.name
        )
        run_id = run.info.run_id
        run_ids[spec.name] = run_id
        for key, values in spec.metrics.items():
            for step, value in enumerate(values):
                client.log_batch(run_id, metrics=[Metric(key, value, 10 + step, step)])
        for key, value in spec.params.items():
            client.log_param(run_id, key, value)
        for key, value in spec.tags.items():
            client.set_tag(run_id, key, value)
        if spec.datasets:
            inputs = [
                DatasetInput(
                    Dataset(name, digest, "local", f"file:///{name}"),
                    [InputTag("mlflow.data.context", ctx)] if ctx is not None else [],
                )
                for name, digest, ctx in spec.datasets
            ]
            client.log_inputs(run_id, datasets=inputs)
        if spec.status != "RUNNING" or spec.end_time is not None:
            store.update_run_info(
                run_id, RunStatus.from_string(spec.status), spec.end_time, spec.name
            )
        if spec.deleted:
            client.delete_run(run_id)

    for name, (_, _, _, deleted) in EXPERIMENT_SPECS.items():
        if deleted:
            client.delete_experiment(str(experiment_ids[name]))
    with store.ManagedSessionMaker() as session:
        times = {0: (1000, 1000)} | {
            experiment_ids[n]: (c, u) for n, (c, u, _, _) in EXPERIMENT_SPECS.items()
        }
        for exp_id, (created, updated) in times.items():
            session.query(SqlExperiment).filter(SqlExperiment.experiment_id == exp_id).update(
                {"creation_time": created, "last_update_time": updated}
            )
    experiment_ids["Default"] = 0
    return Reference(client, experiment_ids, run_ids)


async def mirror(conn: asyncpg.Connection, ref: Reference) -> None:
    """Copy the reference store's runs and experiments into the read-model tables."""
    from mlflow.entities import ViewType

    client = ref.client
    for exp in client.search_experiments(ViewType.ALL, max_results=1000):
        await conn.execute(
            "INSERT INTO rm_experiments.experiments VALUES ($1, $2, $3, $4, $5, $6)",
            int(exp.experiment_id),
            exp.name,
            exp.artifact_location,
            exp.lifecycle_stage,
            exp.creation_time,
            exp.last_update_time,
        )
        for key, value in exp.tags.items():
            await conn.execute(
                "INSERT INTO rm_experiments.experiment_tags VALUES ($1, $2, $3)",
                int(exp.experiment_id),
                key,
                value,
            )
    for run_id in ref.run_ids.values():
        run = client.get_run(run_id)
        info = run.info
        await conn.execute(
            "INSERT INTO rm_runs.runs VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            info.run_id,
            int(info.experiment_id),
            info.run_name,
            info.user_id,
            info.status,
            info.start_time,
            info.end_time,
            info.artifact_uri,
            info.lifecycle_stage,
            None,
        )
        for key, value in run.data.params.items():
            await conn.execute("INSERT INTO rm_runs.params VALUES ($1, $2, $3)", run_id, key, value)
        for key, value in run.data.tags.items():
            await conn.execute("INSERT INTO rm_runs.tags VALUES ($1, $2, $3)", run_id, key, value)
        for key, value in run.data.metrics.items():
            is_nan = math.isnan(value)
            await conn.execute(
                "INSERT INTO rm_runs.latest_metrics VALUES ($1, $2, $3, $4, $5, $6)",
                run_id,
                key,
                0.0 if is_nan else value,
                0,
                0,
                is_nan,
            )
        for ds_input in run.inputs.dataset_inputs:
            ds = ds_input.dataset
            context = next((t.value for t in ds_input.tags if t.key == "mlflow.data.context"), None)
            await conn.execute(
                "INSERT INTO rm_runs.dataset_inputs (run_id, name, digest, source_type, source,"
                " schema, profile, context) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                run_id,
                ds.name,
                ds.digest,
                ds.source_type,
                ds.source,
                ds.schema,
                ds.profile,
                context,
            )

"""Sample registry and logged-model data for the search tests.

As in ``_search_support.py``, the data is created *through MLflow* in its own SQLite store
(tracking and registry in one file), timestamps are then pinned with SQL so that ties are
deliberate, and everything is copied row by row into the ``rm_registry`` / ``rm_logged_models``
read models, so the Postgres tests can compare evtrack's results with MLflow's.
"""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

PROMPT = "mlflow.prompt.is_prompt"


def model_key(name: str) -> str:
    """Stable keys whose order differs from the names' (so sorting by key would show)."""
    return "rm-" + hashlib.sha256(name.encode()).hexdigest()[:10]


@dataclass
class VersionSpec:
    created: int
    updated: int
    source: str
    run_id: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    deleted: bool = False


@dataclass
class RegisteredModelSpec:
    created: int
    updated: int
    tags: dict[str, str] = field(default_factory=dict)
    versions: list[VersionSpec] = field(default_factory=list)


# Names differ in case and contain LIKE wildcards; last_updated ties (5000 x2, 7000 x2); the
# three prompt-tag spellings; versions with and without run ids and tags, and deleted ones.
REGISTERED_MODEL_SPECS: dict[str, RegisteredModelSpec] = {
    "alpha": RegisteredModelSpec(
        1000,
        5000,
        {"team": "vision", "stage": "prod"},
        [
            VersionSpec(1100, 1100, "runs:/r1/model", "r1", {"validated": "yes"}),
            VersionSpec(1200, 4000, "mlflow-artifacts:/1/m-1", "r2", {"validated": "no"}),
            VersionSpec(1300, 1300, "s3://bucket/alpha/3", "r3", {"validated": "yes"}, True),
        ],
    ),
    "Beta": RegisteredModelSpec(
        2000,
        5000,
        {"team": "Vision"},
        [
            VersionSpec(2100, 4000, "s3://bucket/Beta/1", "r1"),
            VersionSpec(2200, 2200, "s3://bucket/beta/2", None, {"validated": "Yes"}),
        ],
    ),
    "gamma": RegisteredModelSpec(
        3000, 3000, {"team": "nlp"}, [VersionSpec(3100, 4000, "runs:/r9/m", "r9")]
    ),
    "delta": RegisteredModelSpec(4000, 6000),
    "a_c": RegisteredModelSpec(
        500, 7000, {"team": ""}, [VersionSpec(600, 600, "file:///tmp/a_c", "r2")]
    ),
    "eps%": RegisteredModelSpec(600, 7000, {"other": "1"}),
    "prompt-1": RegisteredModelSpec(
        800,
        800,
        {PROMPT: "true", "team": "vision"},
        [
            VersionSpec(810, 810, "prompt-src", None, {PROMPT: "true"}),
            VersionSpec(820, 820, "prompt-src-2"),
        ],
    ),
    "not-a-prompt": RegisteredModelSpec(
        900, 900, {PROMPT: "false"}, [VersionSpec(910, 910, "s3://np", "r1", {PROMPT: "false"})]
    ),
    "shouty": RegisteredModelSpec(
        950, 950, {PROMPT: "TRUE"}, [VersionSpec(960, 960, "s3://shouty", "r1", {PROMPT: "TRUE"})]
    ),
}


@dataclass
class MetricSpec:
    key: str
    value: float
    timestamp: int
    step: int
    run: str = "r1"
    dataset: tuple[str, str] | None = None  # (name, digest)


@dataclass
class LoggedModelSpec:
    experiment: str
    created: int
    updated: int
    status: str = "READY"  # PENDING / READY / FAILED
    model_type: str | None = None
    source_run: str | None = "r1"
    params: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    metrics: list[MetricSpec] = field(default_factory=list)
    deleted: bool = False


TRAIN = ("train", "d1")
TRAIN_V2 = ("train", "d2")
EVAL = ("eval", "e1")

# Ties on creation time (1000 x3, 2000 x2) exercise the model_id tiebreaker. Metric points are
# chosen so "any point" and "latest point" give different answers, the latest point is decided
# by timestamp then step, and datasets select different points. The same model name ("model")
# appears several times, as when log_model runs in several runs.
LOGGED_MODEL_SPECS: dict[str, LoggedModelSpec] = {
    "m_a": LoggedModelSpec(
        "E1",
        1000,
        1500,
        "READY",
        "sklearn",
        "r1",
        {"lr": "0.1", "depth": "3"},
        {"team": "vision"},
        [
            MetricSpec("acc", 0.9, 10, 0, dataset=TRAIN),
            MetricSpec("acc", 0.5, 20, 1, dataset=TRAIN),  # latest on train
            MetricSpec("acc", 0.7, 15, 0, dataset=EVAL),
            MetricSpec("loss", 0.3, 10, 0),
        ],
    ),
    "m_b": LoggedModelSpec(
        "E1",
        1000,
        1000,
        "PENDING",
        None,
        "r2",
        {"lr": "0.01"},
        {"team": "Vision"},
        [
            MetricSpec("acc", 0.6, 30, 0, dataset=TRAIN_V2),
            MetricSpec("acc", 0.8, 30, 2, run="r2", dataset=TRAIN_V2),  # same ts, later step
            MetricSpec("loss", 0.1, 5, 0, dataset=EVAL),
        ],
    ),
    "m_c": LoggedModelSpec(
        "E1",
        1000,
        3000,
        "READY",
        "pytorch",
        "r1",
        {"lr": "abc"},
        {"team": "nlp", "flag": ""},
        [MetricSpec("acc", 0.95, 5, 0, dataset=EVAL), MetricSpec("acc", -1.0, 50, 3)],
    ),
    "m_d": LoggedModelSpec(
        "E1",
        2000,
        2500,
        "FAILED",
        "sklearn",
        None,
        {"lr": "ABC"},
        {},
        [MetricSpec("loss", 2.0, 40, 0, dataset=TRAIN)],
    ),
    "m_e": LoggedModelSpec("E1", 2000, 2000, "READY", "Sklearn", "r2", {}, {"team": "vision"}),
    "m_f": LoggedModelSpec(
        "E1",
        500,
        4000,
        "READY",
        "agent",
        "r1",
        {"lr": "a_c"},
        {"team": "x"},
        [MetricSpec("acc", 100.0, 1, 0, dataset=TRAIN)],
    ),
    "m_deleted": LoggedModelSpec(
        "E1",
        3000,
        3000,
        "READY",
        "sklearn",
        "r1",
        {"lr": "0.1"},
        {"team": "vision"},
        [MetricSpec("acc", 0.99, 10, 0, dataset=TRAIN)],
        deleted=True,
    ),
    "m_other_exp": LoggedModelSpec(
        "E2",
        1500,
        1500,
        "READY",
        "sklearn",
        "r3",
        {"lr": "0.1"},
        {"team": "vision"},
        [MetricSpec("acc", 0.75, 10, 0, run="r3", dataset=TRAIN)],
    ),
}
# Model name per spec: three share the name "model".
LOGGED_MODEL_NAMES: dict[str, str] = {
    "m_a": "model",
    "m_b": "model",
    "m_c": "Model",
    "m_d": "model",
    "m_e": "clf",
    "m_f": "a_c",
    "m_deleted": "model",
    "m_other_exp": "model",
}
STATUS_NAMES = {
    "PENDING": "LOGGED_MODEL_PENDING",
    "READY": "LOGGED_MODEL_READY",
    "FAILED": "LOGGED_MODEL_UPLOAD_FAILED",
}


@dataclass
class RegistryReference:
    """MLflow's stores plus the ids they assigned."""

    client: Any  # mlflow.MlflowClient
    registry: Any  # mlflow.store.model_registry.sqlalchemy_store.SqlAlchemyStore
    tracking: Any  # mlflow.store.tracking.sqlalchemy_store.SqlAlchemyStore
    experiment_ids: dict[str, str]
    run_ids: dict[str, str]
    model_ids: dict[str, str]  # spec name -> m-...

    def spec_names(self, model_ids: list[str]) -> list[str]:
        by_id = {v: k for k, v in self.model_ids.items()}
        return [by_id.get(m, m) for m in model_ids]


def _pin_registry_times(registry: Any) -> None:
    from mlflow.store.model_registry.dbmodels.models import SqlModelVersion, SqlRegisteredModel

    with registry.ManagedSessionMaker() as session:
        for name, spec in REGISTERED_MODEL_SPECS.items():
            session.query(SqlRegisteredModel).filter(SqlRegisteredModel.name == name).update(
                {"creation_time": spec.created, "last_updated_time": spec.updated}
            )
            for number, version in enumerate(spec.versions, start=1):
                session.query(SqlModelVersion).filter(
                    SqlModelVersion.name == name, SqlModelVersion.version == number
                ).update({"creation_time": version.created, "last_updated_time": version.updated})


def _build_registry(registry: Any) -> None:
    from mlflow.entities.model_registry import ModelVersionTag, RegisteredModelTag

    for name, spec in REGISTERED_MODEL_SPECS.items():
        registry.create_registered_model(
            name, tags=[RegisteredModelTag(k, v) for k, v in spec.tags.items()]
        )
        for version in spec.versions:
            registry.create_model_version(
                name,
                version.source,
                run_id=version.run_id,
                tags=[ModelVersionTag(k, v) for k, v in version.tags.items()],
            )
    for name, spec in REGISTERED_MODEL_SPECS.items():
        for number, version in enumerate(spec.versions, start=1):
            if version.deleted:
                registry.delete_model_version(name, str(number))
    _pin_registry_times(registry)


def _build_logged_models(
    client: Any, tracking: Any
) -> tuple[dict[str, str], dict[str, str], dict[str, str]]:
    """Experiment ids, run ids and model ids by spec name."""
    from mlflow.entities import LoggedModelStatus, Metric
    from mlflow.store.tracking.dbmodels.models import SqlLoggedModel

    experiment_ids = {name: client.create_experiment(name) for name in ("E1", "E2")}
    run_ids: dict[str, str] = {}
    for run, experiment in (("r1", "E1"), ("r2", "E1"), ("r3", "E2")):
        run_ids[run] = client.create_run(experiment_ids[experiment], run_name=run).info.run_id

    model_ids: dict[str, str] = {}
    for spec_name, spec in LOGGED_MODEL_SPECS.items():
        model = client.create_logged_model(
            experiment_ids[spec.experiment],
            name=LOGGED_MODEL_NAMES[spec_name],
            source_run_id=run_ids[spec.source_run] if spec.source_run else None,
            tags=spec.tags or None,
            params=spec.params or None,
            model_type=spec.model_type,
        )
        model_id = model.model_id
        model_ids[spec_name] = model_id
        if spec.status != "PENDING":
            client.finalize_logged_model(model_id, LoggedModelStatus(spec.status))
        for m in spec.metrics:
            dataset_name, dataset_digest = m.dataset or (None, None)
            metric = Metric(
                m.key,
                m.value,
                m.timestamp,
                m.step,
                model_id=model_id,
                dataset_name=dataset_name,
                dataset_digest=dataset_digest,
            )
            client.log_batch(run_ids[m.run], metrics=[metric])
        if spec.deleted:
            client.delete_logged_model(model_id)
    with tracking.ManagedSessionMaker() as session:
        for spec_name, spec in LOGGED_MODEL_SPECS.items():
            session.query(SqlLoggedModel).filter(
                SqlLoggedModel.model_id == model_ids[spec_name]
            ).update(
                {"creation_timestamp_ms": spec.created, "last_updated_timestamp_ms": spec.updated}
            )
    return experiment_ids, run_ids, model_ids


def build_registry_reference(tmp: Path) -> RegistryReference:
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp / 'registry-reference.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    registry = client._get_registry_client().store
    tracking = client._tracking_client.store
    _build_registry(registry)
    experiment_ids, run_ids, model_ids = _build_logged_models(client, tracking)
    return RegistryReference(client, registry, tracking, experiment_ids, run_ids, model_ids)


async def mirror_registry(conn: asyncpg.Connection, ref: RegistryReference) -> None:
    """Copy MLflow's registry rows (deleted versions included) into ``rm_registry``."""
    from mlflow.store.model_registry.dbmodels.models import (
        SqlModelVersion,
        SqlModelVersionTag,
        SqlRegisteredModel,
        SqlRegisteredModelTag,
    )

    with ref.registry.ManagedSessionMaker() as session:
        models = [
            (m.name, m.creation_time, m.last_updated_time, m.description)
            for m in session.query(SqlRegisteredModel).all()
        ]
        model_tags = [(t.name, t.key, t.value) for t in session.query(SqlRegisteredModelTag)]
        versions = [
            (
                v.name,
                v.version,
                v.creation_time,
                v.last_updated_time,
                v.user_id,
                v.current_stage,
                v.description,
                v.source,
                v.storage_location,
                v.run_id,
                v.run_link,
                v.status,
                v.status_message,
            )
            for v in session.query(SqlModelVersion).all()
        ]
        version_tags = [
            (t.name, t.version, t.key, t.value) for t in session.query(SqlModelVersionTag)
        ]
    for name, created, updated, description in models:
        await conn.execute(
            "INSERT INTO rm_registry.registered_models VALUES ($1, $2, $3, $4, $5, NULL)",
            model_key(name),
            name,
            created,
            updated,
            description,
        )
    for name, key, value in model_tags:
        await conn.execute(
            "INSERT INTO rm_registry.registered_model_tags VALUES ($1, $2, $3)",
            model_key(name),
            key,
            value,
        )
    for row in versions:
        name, version, *rest = row
        stage = rest[3]
        deleted = stage == "Deleted_Internal"
        await conn.execute(
            "INSERT INTO rm_registry.model_versions (model_key, name, version, "
            "creation_timestamp, last_updated_timestamp, user_id, current_stage, description, "
            "source, storage_location, run_id, run_link, status, status_message, model_id, "
            "deleted) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, "
            "NULL, $15)",
            model_key(name),
            name,
            version,
            rest[0],
            rest[1],
            rest[2],
            "None" if deleted else stage,
            rest[4],
            rest[5],
            rest[6] or rest[5],
            rest[7],
            rest[8],
            rest[9],
            rest[10],
            deleted,
        )
    for name, version, key, value in version_tags:
        await conn.execute(
            "INSERT INTO rm_registry.model_version_tags VALUES ($1, $2, $3, $4)",
            model_key(name),
            version,
            key,
            value,
        )


async def mirror_logged_models(conn: asyncpg.Connection, ref: RegistryReference) -> None:
    """Copy MLflow's logged models (deleted ones included) into ``rm_logged_models``."""
    from mlflow.entities import LifecycleStage, LoggedModelStatus
    from mlflow.store.tracking.dbmodels.models import (
        SqlLoggedModel,
        SqlLoggedModelMetric,
        SqlLoggedModelParam,
        SqlLoggedModelTag,
    )

    with ref.tracking.ManagedSessionMaker() as session:
        models = [
            (
                m.model_id,
                m.experiment_id,
                m.name,
                m.artifact_location,
                m.creation_timestamp_ms,
                m.last_updated_timestamp_ms,
                STATUS_NAMES[str(LoggedModelStatus.from_int(m.status))],
                m.status_message,
                m.model_type,
                m.source_run_id,
                m.lifecycle_stage == LifecycleStage.DELETED,
            )
            for m in session.query(SqlLoggedModel).all()
        ]
        params = [
            (p.model_id, p.param_key, p.param_value) for p in session.query(SqlLoggedModelParam)
        ]
        tags = [(t.model_id, t.tag_key, t.tag_value) for t in session.query(SqlLoggedModelTag)]
        metrics = [
            (
                m.model_id,
                m.metric_name,
                m.metric_value,
                m.metric_timestamp_ms,
                m.metric_step,
                m.run_id,
                m.dataset_name,
                m.dataset_digest,
            )
            for m in session.query(SqlLoggedModelMetric)
        ]
    for row in models:
        await conn.execute(
            "INSERT INTO rm_logged_models.logged_models VALUES "
            "($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            *row,
        )
    for table, rows in (("logged_model_params", params), ("logged_model_tags", tags)):
        for row in rows:
            await conn.execute(f"INSERT INTO rm_logged_models.{table} VALUES ($1, $2, $3)", *row)
    for model_id, key, value, timestamp, step, run_id, ds_name, ds_digest in metrics:
        is_nan = value is None or math.isnan(value)
        await conn.execute(
            "INSERT INTO rm_logged_models.logged_model_metrics VALUES "
            "($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            model_id,
            key,
            0.0 if is_nan else value,
            is_nan,
            timestamp,
            step,
            run_id,
            ds_name,
            ds_digest,
        )

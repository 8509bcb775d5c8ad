"""A small but complete tracking dataset, written and read back through the official client.

``seed(url)`` writes it to any MLflow-compatible server; ``snapshot(url)`` reads back
everything a user can see through ``MlflowClient`` (experiments, runs, full metric
histories, search answers, artifact bytes, the registry) as plain values, so two servers
compare with one ``==``. Floats are compared by their ``repr`` so NaN equals NaN.
"""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path
from typing import Any

HISTORY_POINTS = 2000
SPECIAL_VALUES = [math.nan, math.inf, -math.inf, 0.0, -0.0, 1e-300, 1.5]


def _client(url: str) -> Any:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=url, registry_uri=url)


def seed(url: str) -> dict[str, str]:
    """Write the dataset; answers the ids of a few runs the tests name."""
    from mlflow.entities import Metric, Param, RunTag

    c = _client(url)
    base = 1_700_000_000_000
    ids: dict[str, str] = {}
    a = c.create_experiment("imp-alpha", tags={"team": "vision", "note": "é ✓"})
    b = c.create_experiment("imp-beta")
    gone = c.create_experiment("imp-gone", tags={"why": "obsolete"})
    c.rename_experiment(b, "imp-beta-renamed")
    c.set_experiment_tag(a, "stage", "prod")

    parent = c.create_run(a, run_name="parent", start_time=base, tags={"kind": "sweep"})
    pid = parent.info.run_id
    ids["parent"] = pid
    steps = range(HISTORY_POINTS)
    losses = [Metric("loss", 1.0 / (i + 1), base + i * 10, i) for i in steps]
    accs = [Metric("acc", i / HISTORY_POINTS, base + i * 10 + 5, i) for i in steps[::2]]
    special = [Metric("edge", v, base + i, i) for i, v in enumerate(SPECIAL_VALUES)]
    special.append(Metric("edge", 7.0, base + 100, 3))  # two points on one step
    points = losses + accs + special
    for start in range(0, len(points), 1000):
        c.log_batch(pid, metrics=points[start : start + 1000])
    c.log_batch(
        pid,
        params=[Param("lr", "0.01"), Param("layers", "4"), Param("long", "x" * 600)],
        tags=[RunTag("owner", "ana"), RunTag("mlflow.note.content", "the *parent*")],
    )
    c.log_text(pid, "hello\n", "notes/readme.txt")
    c.log_dict(pid, {"a": [1, 2, 3]}, "config/params.json")
    binary = os.urandom(150_000) + bytes(range(256))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "weights.bin"
        path.write_bytes(binary)
        c.log_artifact(pid, str(path), "model")
        (Path(tmp) / "MLmodel").write_text("flavors: {}\n")
        c.log_artifact(pid, str(Path(tmp) / "MLmodel"), "model")
    c.set_terminated(pid, "FINISHED", end_time=base + 50_000)

    for i, status in enumerate(["FINISHED", "FAILED", "KILLED", "RUNNING"]):
        child = c.create_run(
            a,
            run_name=f"child-{i}",
            start_time=base + 1000 * (i + 1),
            tags={"mlflow.parentRunId": pid},
        )
        cid = child.info.run_id
        ids[f"child-{i}"] = cid
        c.log_batch(
            cid,
            metrics=[Metric("loss", 0.5 - i / 10 + j / 1000, base + j, j) for j in range(300)],
            params=[Param("lr", str(0.01 * (i + 1))), Param("seed", str(i))],
        )
        if status != "RUNNING":
            c.set_terminated(cid, status, end_time=base + 9000 + i)

    doomed = c.create_run(a, run_name="doomed", start_time=base + 42)
    c.log_metric(doomed.info.run_id, "loss", 3.0, timestamp=base, step=0)
    c.delete_run(doomed.info.run_id)
    ids["doomed"] = doomed.info.run_id

    plain = c.create_run(b, run_name="plain")
    c.log_param(plain.info.run_id, "only", "param")
    c.set_terminated(plain.info.run_id)

    old = c.create_run(gone, run_name="old", start_time=base)
    c.log_metric(old.info.run_id, "loss", 9.0, timestamp=base, step=1)
    c.set_terminated(old.info.run_id, end_time=base + 1)
    c.delete_experiment(gone)

    default_run = c.create_run("0", run_name="in-default")
    c.log_metric(default_run.info.run_id, "x", 1.0, timestamp=base, step=0)

    c.create_registered_model("imp-churn", tags={"domain": "retention"}, description="churn")
    source = f"{parent.info.artifact_uri}/model"
    for i in range(3):
        c.create_model_version(
            "imp-churn",
            source,
            run_id=pid,
            tags={"v": str(i + 1)},
            description=f"version {i + 1}",
        )
    c.transition_model_version_stage("imp-churn", "1", "Archived")
    c.transition_model_version_stage("imp-churn", "2", "Production")
    c.transition_model_version_stage("imp-churn", "3", "Staging")
    c.set_registered_model_alias("imp-churn", "champion", "2")
    c.set_registered_model_alias("imp-churn", "challenger", "3")
    c.set_model_version_tag("imp-churn", "2", "validated", "yes")
    c.update_model_version("imp-churn", "1", description="retired")
    c.create_registered_model("imp-empty")
    c.update_registered_model("imp-empty", description="no versions yet")
    return ids


def _f(value: float) -> str:
    return repr(float(value))


def _run(run: Any) -> dict[str, Any]:
    i = run.info
    return {
        "info": (
            i.run_id,
            i.run_name,
            i.experiment_id,
            i.user_id,
            i.status,
            i.start_time,
            i.end_time,
            i.artifact_uri,
            i.lifecycle_stage,
        ),
        "params": dict(run.data.params),
        "tags": dict(run.data.tags),
        "metrics": {k: _f(v) for k, v in run.data.metrics.items()},
    }


def _artifacts(c: Any, run_id: str, path: str | None = None) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for f in c.list_artifacts(run_id, path):
        if f.is_dir:
            found.update(_artifacts(c, run_id, f.path))
        else:
            with tempfile.TemporaryDirectory() as tmp:
                local = c.download_artifacts(run_id, f.path, tmp)
                found[f.path] = (f.file_size, Path(local).read_bytes())
    return found


def snapshot(url: str, *, prefix: str = "imp-") -> dict[str, Any]:
    """Everything the client reads back, as comparable values."""
    from mlflow.entities import ViewType

    c = _client(url)
    out: dict[str, Any] = {}
    experiments = sorted(
        c.search_experiments(view_type=ViewType.ALL), key=lambda e: int(e.experiment_id)
    )
    out["experiments"] = [
        (
            e.experiment_id,
            e.name,
            e.artifact_location,
            e.lifecycle_stage,
            e.creation_time,
            e.last_update_time,
            dict(e.tags),
        )
        for e in experiments
    ]
    ids = [e.experiment_id for e in experiments]
    out["experiment_search"] = [
        e.name for e in c.search_experiments(filter_string=f"name LIKE '{prefix}%'")
    ]
    runs = c.search_runs(ids, run_view_type=ViewType.ALL, max_results=1000)
    out["runs"] = {r.info.run_id: _run(r) for r in runs}
    out["histories"] = {
        (r.info.run_id, key): [
            (m.step, m.timestamp, _f(m.value)) for m in c.get_metric_history(r.info.run_id, key)
        ]
        for r in runs
        for key in r.data.metrics
    }
    searches = {
        "loss": ("metrics.loss < 0.45", None),
        "lr": ("params.lr = '0.01'", None),
        "children": ("tags.mlflow.parentRunId != ''", ["attributes.start_time DESC"]),
        "failed": ("attributes.status = 'FAILED'", None),
        "ordered": ("", ["metrics.loss ASC", "attributes.run_name DESC"]),
    }
    out["searches"] = {
        name: [
            r.info.run_id
            for r in c.search_runs(ids, filter_string=flt, order_by=order, max_results=100)
        ]
        for name, (flt, order) in searches.items()
    }
    out["deleted_only"] = sorted(
        r.info.run_id for r in c.search_runs(ids, run_view_type=ViewType.DELETED_ONLY)
    )
    out["artifacts"] = {r.info.run_id: _artifacts(c, r.info.run_id) for r in runs}
    models = sorted(c.search_registered_models(), key=lambda m: m.name)
    out["models"] = [
        (
            m.name,
            m.description,
            m.creation_timestamp,
            m.last_updated_timestamp,
            dict(m.tags),
            dict(m.aliases),
        )
        for m in models
    ]
    out["versions"] = {
        m.name: sorted(
            (
                v.version,
                v.current_stage,
                v.description,
                v.source,
                v.run_id,
                v.status,
                v.creation_timestamp,
                v.last_updated_timestamp,
                dict(v.tags),
                # search answers carry no aliases on the reference server; get does
                sorted(c.get_model_version(m.name, v.version).aliases),
            )
            for v in c.search_model_versions(f"name='{m.name}'")
        )
        for m in models
    }
    out["latest"] = {
        m.name: sorted((v.version, v.current_stage) for v in c.get_latest_versions(m.name))
        for m in models
    }
    out["by_alias"] = {
        (m.name, alias): c.get_model_version_by_alias(m.name, alias).version
        for m in models
        for alias in m.aliases
    }
    return out

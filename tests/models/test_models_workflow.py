"""MLflow's Models and Projects parts through the official client against evtrack: models
logged and registered, promoted, loaded by stage and alias, served, and MLprojects run."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import requests
from _support.server import EvtrackServer

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")

import mlflow
from mlflow import MlflowClient
from sklearn.linear_model import LogisticRegression

X = np.array([[0.0, 1.0], [1.0, 0.0], [0.2, 0.9], [0.9, 0.1], [0.4, 0.6], [0.7, 0.2]])
Y = np.array([0, 1, 0, 1, 0, 1])


@pytest.fixture(scope="module")
def registered(
    shared_server: EvtrackServer,
) -> Iterator[tuple[EvtrackServer, str, list[LogisticRegression]]]:
    """A model registered twice through log_model, v1 in Archived and v2 in Production."""
    mlflow.set_tracking_uri(shared_server.url)
    mlflow.set_registry_uri(shared_server.url)
    name = f"clf-{uuid.uuid4().hex[:8]}"
    mlflow.set_experiment(f"models-{name}")
    models = []
    for c in (1.0, 0.01):
        model = LogisticRegression(C=c).fit(X, Y)
        with mlflow.start_run():
            mlflow.log_metric("acc", float(model.score(X, Y)))
            mlflow.sklearn.log_model(
                model, name="model", registered_model_name=name, input_example=X[:2]
            )
        models.append(model)
    client = MlflowClient()
    client.transition_model_version_stage(name, "1", "Staging")
    client.transition_model_version_stage(name, "1", "Production")
    client.transition_model_version_stage(name, "2", "Production", archive_existing_versions=True)
    client.set_registered_model_alias(name, "champion", "2")
    client.set_registered_model_alias(name, "previous", "1")
    yield shared_server, name, models
    mlflow.set_tracking_uri("")


def test_versions_stages_and_latest(
    registered: tuple[EvtrackServer, str, list[LogisticRegression]],
) -> None:
    _, name, _ = registered
    client = MlflowClient()
    versions = sorted(
        client.search_model_versions(f"name = '{name}'"), key=lambda v: int(v.version)
    )
    assert [(v.version, v.current_stage) for v in versions] == [
        ("1", "Archived"),
        ("2", "Production"),
    ]
    assert [v.version for v in client.get_latest_versions(name, stages=["Production"])] == ["2"]
    assert all(v.source.startswith("models:/m-") for v in versions)
    # The server recorded the registrations on the logged models too.
    logged = client.get_logged_model(versions[1].source.removeprefix("models:/"))
    assert f'"name": "{name}"' in logged.tags["mlflow.modelVersions"].replace('":"', '": "')


def test_load_by_stage_and_alias_predicts_like_the_trained_model(
    registered: tuple[EvtrackServer, str, list[LogisticRegression]],
) -> None:
    _, name, (first, second) = registered
    by_stage = mlflow.pyfunc.load_model(f"models:/{name}/Production")
    assert by_stage.predict(X).tolist() == second.predict(X).tolist()
    assert (
        mlflow.pyfunc.load_model(f"models:/{name}@champion").predict(X).tolist()
        == second.predict(X).tolist()
    )
    assert (
        mlflow.pyfunc.load_model(f"models:/{name}@previous").predict(X).tolist()
        == first.predict(X).tolist()
    )
    assert (
        mlflow.pyfunc.load_model(f"models:/{name}/1").predict(X).tolist()
        == first.predict(X).tolist()
    )


def test_registry_search_with_filters_and_order(
    registered: tuple[EvtrackServer, str, list[LogisticRegression]],
) -> None:
    _, name, _ = registered
    client = MlflowClient()
    found = client.search_registered_models(
        filter_string=f"name LIKE '{name[:8]}%'", order_by=["name DESC"]
    )
    assert name in [m.name for m in found]
    desc = client.search_model_versions(f"name = '{name}'", order_by=["version_number DESC"])
    assert [v.version for v in desc] == ["2", "1"]


def test_deleting_a_version(
    registered: tuple[EvtrackServer, str, list[LogisticRegression]],
) -> None:
    _, name, (first, _) = registered
    client = MlflowClient()
    with mlflow.start_run():
        mlflow.sklearn.log_model(first, name="model", registered_model_name=name)
    client.delete_model_version(name, "3")
    assert [v.version for v in client.search_model_versions(f"name = '{name}'")] in (
        ["2", "1"],
        ["1", "2"],
    )


def _child_env(tracking_uri: str) -> dict[str, str]:
    """The environment for an `mlflow` CLI child: this interpreter's bin first on PATH (the
    CLI starts `uvicorn` and `python` from PATH), and none of this process's active-run state."""
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    for inherited in ("MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_RUN_ID"):
        env.pop(inherited, None)
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_models_serve_answers_invocations(
    registered: tuple[EvtrackServer, str, list[LogisticRegression]], tmp_path: Path
) -> None:
    server, name, (_, second) = registered
    port = _free_port()
    env = _child_env(server.url)
    log = open(tmp_path / "serve.log", "wb")  # noqa: SIM115
    serve = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "models",
            "serve",
            "-m",
            f"models:/{name}/Production",
            "--env-manager",
            "local",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=tmp_path,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 180
        while True:
            assert serve.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            try:
                if requests.get(f"http://127.0.0.1:{port}/ping", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline, (tmp_path / "serve.log").read_text()[-3000:]
            time.sleep(0.5)
        resp = requests.post(
            f"http://127.0.0.1:{port}/invocations", json={"inputs": X.tolist()}, timeout=30
        )
        assert resp.status_code == 200, resp.text
        assert resp.json()["predictions"] == second.predict(X).tolist()
    finally:
        os.killpg(serve.pid, 15)
        serve.wait(30)
        log.close()


def test_mlflow_run_records_its_run(shared_server: EvtrackServer, tmp_path: Path) -> None:
    experiment = f"project-{uuid.uuid4().hex[:8]}"
    env = _child_env(shared_server.url)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "mlflow",
            "run",
            str(Path(__file__).parent / "project"),
            "-P",
            "alpha=0.3",
            "-P",
            "epochs=4",
            "--env-manager",
            "local",
            "--experiment-name",
            experiment,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    client = MlflowClient(shared_server.url)
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None
    (run,) = client.search_runs([exp.experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.params == {"alpha": "0.3", "epochs": "4"}
    history = [m.value for m in client.get_metric_history(run.info.run_id, "loss")]
    assert history == [0.3 / (epoch + 1) for epoch in range(4)]
    assert run.data.tags["mlflow.project.entryPoint"] == "main"

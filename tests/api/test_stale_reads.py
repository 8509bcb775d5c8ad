"""Invariant 12: a read whose read models cannot catch up is a 503, never stale data; /ready
says so, and both recover once a projector runs again."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import requests
from _support.server import EvtrackServer

READ_WAIT_S = 1.0
EVENTUAL = {"X-Evtrack-Consistency": "eventual"}


def _stalled_server(factory: Any) -> EvtrackServer:
    """An API node without projectors and no worker: nothing keeps the read models."""
    server: EvtrackServer = factory(
        extra_args=[
            "--no-projectors",
            "--read-wait-timeout",
            str(READ_WAIT_S),
            "--ready-stall-after",
            "1",
        ]
    )
    return server


def _create_experiment(url: str) -> str:
    exp = requests.post(
        f"{url}/api/2.0/mlflow/experiments/create", json={"name": f"s-{uuid.uuid4().hex}"}
    )
    assert exp.status_code == 200, exp.text
    return str(exp.json()["experiment_id"])


def _create_run(url: str, experiment_id: str) -> requests.Response:
    return requests.post(
        f"{url}/api/2.0/mlflow/runs/create",
        json={"experiment_id": experiment_id, "start_time": 1234, "run_name": "r"},
        timeout=30,
    )


def _stop(worker: subprocess.Popen[bytes], tmp_path: Path) -> None:
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(20) == 0, (tmp_path / "worker.log").read_text()[-3000:]


def _start_worker(dsn: str, tmp_path: Path) -> subprocess.Popen[bytes]:
    with open(tmp_path / "worker.log", "wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "evtrack", "projections", "run", "--database-url", dsn],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
        )


def _until(check: Any, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(0.2)


def test_stalled_read_models_give_503_then_recover(
    evtrack_server_factory: Any, fresh_database_dsn: str, tmp_path: Path
) -> None:
    server = _stalled_server(evtrack_server_factory)
    base = f"{server.url}/api/2.0/mlflow"
    worker = _start_worker(fresh_database_dsn, tmp_path)
    try:
        experiment_id = _create_experiment(server.url)
        created = _create_run(server.url, experiment_id)
        assert created.status_code == 200, created.text
        run_id = created.json()["run"]["info"]["run_id"]
    finally:
        _stop(worker, tmp_path)

    # The projectors are gone; a write is still accepted ...
    tagged = requests.post(
        f"{base}/runs/set-tag", json={"run_id": run_id, "key": "k", "value": "v"}
    )
    assert tagged.status_code == 200, tagged.text

    # ... but reading it back is refused within the bound, never answered stale.
    started = time.monotonic()
    stale = requests.get(f"{base}/runs/get", params={"run_id": run_id}, timeout=30)
    took = time.monotonic() - started
    assert stale.status_code == 503, stale.text
    assert stale.json()["error_code"] == "TEMPORARILY_UNAVAILABLE"
    assert "runs" in stale.json()["message"]
    assert 1 <= int(stale.headers["Retry-After"]) <= 5
    assert READ_WAIT_S * 0.9 <= took < READ_WAIT_S + 5, took
    # Reads through the route table's wrapper refuse too (here: a search).
    searched = requests.post(
        f"{base}/runs/search", json={"experiment_ids": [experiment_id]}, timeout=30
    )
    assert searched.status_code == 503, searched.text
    assert "Retry-After" in searched.headers

    # A caller that accepts stale data is answered at once, and gets the stale run.
    started = time.monotonic()
    eventual = requests.get(f"{base}/runs/get", params={"run_id": run_id}, headers=EVENTUAL)
    assert time.monotonic() - started < READ_WAIT_S
    assert eventual.status_code == 200, eventual.text
    assert "k" not in {t["key"] for t in eventual.json()["run"]["data"].get("tags", [])}

    # A create that answers with what it created is refused before it writes: a 503 after
    # the write would have the client's retry create a second run.
    refused = _create_run(server.url, experiment_id)
    assert refused.status_code == 503, refused.text
    assert "Retry-After" in refused.headers

    # Readiness is red and names the lagging read models; liveness is unaffected.
    time.sleep(1.2)  # past --ready-stall-after since the set-tag
    ready = requests.get(f"{server.url}/ready")
    assert ready.status_code == 503, ready.text
    body = ready.json()
    assert body["status"] == "not_ready"
    assert body["database"] == "ok"
    lagging = {lag["name"]: lag for lag in body["lagging"]}
    assert "runs" in lagging, body
    assert lagging["runs"]["events_behind"] > 0
    assert lagging["runs"]["stalled_seconds"] >= 1
    assert requests.get(f"{server.url}/health").status_code == 200

    # A worker keeps the read models again: the same read answers 200, readiness is green.
    worker = _start_worker(fresh_database_dsn, tmp_path)
    try:
        fresh = _until(
            lambda: (
                r if (r := requests.get(f"{base}/runs/get", params={"run_id": run_id})).ok else None
            )
        )
        assert fresh is not None
        assert {"key": "k", "value": "v"} in fresh.json()["run"]["data"]["tags"]
        retried = _create_run(server.url, experiment_id)
        assert retried.status_code == 200, retried.text
        runs = requests.post(f"{base}/runs/search", json={"experiment_ids": [experiment_id]})
        assert len(runs.json()["runs"]) == 2, runs.text  # the refused create wrote nothing
        ready = _until(lambda: r if (r := requests.get(f"{server.url}/ready")).ok else None)
        assert ready is not None, requests.get(f"{server.url}/ready").text
        assert ready.json()["status"] == "ready"
        assert ready.json()["lagging"] == []
        # Given a moment the worker is level with the log on every read model.
        level = _until(
            lambda: all(
                n == 0 for n in requests.get(f"{server.url}/ready").json()["read_models"].values()
            )
        )
        assert level, requests.get(f"{server.url}/ready").text
    finally:
        _stop(worker, tmp_path)


def test_ready_reports_lag_over_the_bound(evtrack_server_factory: Any) -> None:
    """The event bound alone turns readiness red, before any stall is long enough."""
    server: EvtrackServer = evtrack_server_factory(
        extra_args=["--no-projectors", "--ready-max-lag", "0", "--ready-stall-after", "3600"]
    )
    _create_experiment(server.url)
    ready = requests.get(f"{server.url}/ready")
    assert ready.status_code == 503, ready.text
    assert all(lag["stalled_seconds"] < 3600 for lag in ready.json()["lagging"])
    assert "experiments" in {lag["name"] for lag in ready.json()["lagging"]}


def test_ready_is_green_on_a_server_with_projectors(shared_server: EvtrackServer) -> None:
    _create_experiment(shared_server.url)
    ready = _until(lambda: r if (r := requests.get(f"{shared_server.url}/ready")).ok else None)
    assert ready is not None
    assert ready.json()["status"] == "ready"
    assert ready.json()["database"] == "ok"


def test_mlflow_client_raises_rather_than_reading_stale_data(
    evtrack_server_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    monkeypatch.setitem(os.environ, "MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    server = _stalled_server(evtrack_server_factory)
    experiment_id = _create_experiment(server.url)
    client = MlflowClient(tracking_uri=server.url)
    with pytest.raises(MlflowException) as raised:
        client.get_experiment(experiment_id)
    assert "503" in str(raised.value) or "TEMPORARILY_UNAVAILABLE" in str(raised.value)

"""Invariant 7 (read your writes) across process layouts, and graceful shutdown."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import requests
from _support.server import EvtrackServer


def _setup(url: str) -> str:
    base = f"{url}/api/2.0/mlflow"
    exp = requests.post(
        f"{base}/experiments/create", json={"name": f"ryw-{uuid.uuid4().hex}"}
    ).json()
    run = requests.post(f"{base}/runs/create", json={"experiment_id": exp["experiment_id"]}).json()
    return str(run["run"]["info"]["run_id"])


def _check_reads_see_writes(url: str, rounds: int = 40) -> None:
    base = f"{url}/api/2.0/mlflow"
    run_id = _setup(url)
    for i in range(rounds):
        logged = requests.post(
            f"{base}/runs/log-metric",
            json={
                "run_id": run_id,
                "key": "loss",
                "value": float(i),
                "timestamp": 1000 + i,
                "step": i,
            },
        )
        assert logged.status_code == 200, logged.text
        history = requests.get(
            f"{base}/metrics/get-history", params={"run_id": run_id, "metric_key": "loss"}
        )
        assert len(history.json()["metrics"]) == i + 1
        requests.post(
            f"{base}/runs/set-tag", json={"run_id": run_id, "key": "round", "value": str(i)}
        )
        tags = {
            t["key"]: t["value"]
            for t in requests.get(f"{base}/runs/get", params={"run_id": run_id}).json()["run"][
                "data"
            ]["tags"]
        }
        assert tags["round"] == str(i)


def test_reads_see_the_callers_writes(shared_server: EvtrackServer) -> None:
    _check_reads_see_writes(shared_server.url)


def test_reads_see_writes_with_projectors_in_a_separate_worker(
    evtrack_server_factory: Any, fresh_database_dsn: str, tmp_path: Path
) -> None:
    """API nodes without projectors, read models kept by `evtrack projections run`."""
    worker_log = open(tmp_path / "worker.log", "wb")  # noqa: SIM115
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "evtrack",
            "projections",
            "run",
            "--database-url",
            fresh_database_dsn,
        ],
        stdout=worker_log,
        stderr=subprocess.STDOUT,
        cwd=tmp_path,
    )
    try:
        server = evtrack_server_factory(extra_args=["--no-projectors"])
        _check_reads_see_writes(server.url, rounds=15)
    finally:
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(20) == 0, (tmp_path / "worker.log").read_text()[-3000:]
        worker_log.close()


def test_shutdown_drains_in_flight_requests(evtrack_server_factory: Any, tmp_path: Path) -> None:
    server: EvtrackServer = evtrack_server_factory()
    blob = os.urandom(64 * 1024 * 1024)
    url = f"{server.url}/api/2.0/mlflow-artifacts/artifacts/0/big.bin"
    assert requests.put(url, data=blob).status_code == 200
    with requests.get(url, stream=True, timeout=60) as download:
        assert download.status_code == 200
        chunks = download.iter_content(1024 * 1024)
        received = [next(chunks)]
        server.stopped_on_purpose = True
        server.process.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        # A new connection is refused while the in-flight download goes on to the end.
        try:
            refused = requests.get(f"{server.url}/health", timeout=2).status_code != 200
        except requests.ConnectionError:
            refused = True
        received.extend(chunks)
    assert refused
    assert b"".join(received) == blob
    assert server.process.wait(30) == 0

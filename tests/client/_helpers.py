"""Helpers for the client tests: ground truth is read from the server's event log.

Counting points in ``RunDataLogged`` events (not in the points read model, which stores
identical points once) is what proves "no duplicates": a batch applied twice would show up
as twice the points in the log even if the read model hid it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import requests
from _support.aio import run_sync

from evtrack.events import RunDataLogged, decode_event

REPO = Path(__file__).resolve().parents[2]


def logged_points(dsn: str, run_id: str) -> tuple[int, int]:
    """(metric points, RunDataLogged events) the log holds for ``run_id``."""

    async def query() -> tuple[int, int]:
        conn = await asyncpg.connect(dsn)
        try:
            rows = await conn.fetch(
                """SELECT event_type, schema_version, payload FROM events
                   WHERE stream_id = $1 AND event_type = 'RunDataLogged'""",
                f"run-{run_id}",
            )
        finally:
            await conn.close()
        points = 0
        for row in rows:
            event = decode_event(row["event_type"], row["schema_version"], row["payload"])
            assert isinstance(event, RunDataLogged)
            if event.metrics is not None:
                points += len(event.metrics.keys)
        return points, len(rows)

    return run_sync(query)


def history(url: str, run_id: str, key: str) -> list[dict[str, Any]]:
    response = requests.get(
        f"{url}/api/2.0/mlflow/metrics/get-history",
        params={"run_id": run_id, "metric_key": key, "max_results": "1000000"},
        timeout=60,
    )
    response.raise_for_status()
    return list(response.json().get("metrics", []))


def get_run(url: str, run_id: str) -> dict[str, Any]:
    response = requests.get(f"{url}/api/2.0/mlflow/runs/get", params={"run_id": run_id}, timeout=60)
    response.raise_for_status()
    run: dict[str, Any] = response.json()["run"]
    return run


def create_experiment(url: str) -> str:
    """A fresh experiment, created over the MLflow API (see test_start_creates_experiment
    for why the client's get-or-create by name is not used here)."""
    response = requests.post(
        f"{url}/api/2.0/mlflow/experiments/create",
        json={"name": f"client-{uuid.uuid4().hex[:12]}"},
        timeout=30,
    )
    response.raise_for_status()
    return str(response.json()["experiment_id"])


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.1)


def python_script(body: str) -> list[str]:
    return [sys.executable, "-c", textwrap.dedent(body)]


def child_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def evtrack_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "evtrack", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=child_env(),
    )

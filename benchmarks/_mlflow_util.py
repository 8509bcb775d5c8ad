"""Helpers around the official mlflow client and the MLflow REST API, shared by workloads."""

from __future__ import annotations

import os
import time
import uuid
from typing import Any

# Fail fast instead of retrying behind our back: a retried call would hide errors and
# distort latencies. Set before mlflow is imported; spawned workers inherit the environment.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "300")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


def client(url: str) -> Any:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=url)


def new_experiment(url: str, prefix: str) -> str:
    return str(client(url).create_experiment(f"{prefix}-{uuid.uuid4().hex[:8]}"))


def new_runs(url: str, experiment_id: str, count: int, prefix: str) -> list[str]:
    c = client(url)
    return [
        c.create_run(experiment_id, run_name=f"{prefix}-{i}").info.run_id for i in range(count)
    ]


def now_ms() -> int:
    return int(time.time() * 1000)

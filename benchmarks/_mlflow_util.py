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
    return [c.create_run(experiment_id, run_name=f"{prefix}-{i}").info.run_id for i in range(count)]


def now_ms() -> int:
    return int(time.time() * 1000)


def history_count_paged(url: str, run_id: str, key: str, page: int = 25_000) -> int:
    """Points of one metric through the REST API, following ``next_page_token``."""
    import msgspec
    import requests

    session = requests.Session()
    count, token = 0, None
    while True:
        params: dict[str, Any] = {"run_id": run_id, "metric_key": key, "max_results": page}
        if token:
            params["page_token"] = token
        r = session.get(url + "/api/2.0/mlflow/metrics/get-history", params=params, timeout=600)
        if r.status_code != 200:
            raise RuntimeError(f"get-history failed: {r.status_code} {r.text[:300]}")
        body = msgspec.json.decode(r.content)
        count += len(body.get("metrics", ()))
        token = body.get("next_page_token")
        if not token:
            return count


def history_count_single(url: str, run_id: str, key: str) -> int:
    """Points of one metric through one unpaginated REST request (no max_results)."""
    import msgspec
    import requests

    r = requests.get(
        url + "/api/2.0/mlflow/metrics/get-history",
        params={"run_id": run_id, "metric_key": key},
        timeout=600,
    )
    if r.status_code != 200:
        raise RuntimeError(f"get-history failed: {r.status_code} {r.text[:300]}")
    return len(msgspec.json.decode(r.content).get("metrics", ()))

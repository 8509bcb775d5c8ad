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


def history_count_single(url: str, run_id: str, key: str, timeout: float = 600) -> int:
    """Points of one metric through one unpaginated REST request (no max_results)."""
    import msgspec
    import requests

    r = requests.get(
        url + "/api/2.0/mlflow/metrics/get-history",
        params={"run_id": run_id, "metric_key": key},
        timeout=timeout,
    )
    if r.status_code != 200:
        raise RuntimeError(f"get-history failed: {r.status_code} {r.text[:300]}")
    return len(msgspec.json.decode(r.content).get("metrics", ()))


def read_back(url: str, run_id: str, key: str, expected: int, timeout: float = 300) -> str | None:
    """Check one series end to end through the API (one unpaginated request, so a slow
    paging path cannot stall the harness; paging is timed in (d)). None if it holds
    ``expected`` points, else what went wrong."""
    try:
        got = history_count_single(url, run_id, key, timeout)
    except Exception as exc:
        return f"read-back of {key} failed: {exc!r}"[:300]
    return None if got == expected else f"read-back of {key}: {got:,} points, expected {expected:,}"


def probe_pages(url: str, run_id: str, key: str, pages: int = 2, timeout: float = 120) -> str:
    """Time the first ``pages`` pages of 25,000 (what MlflowClient.get_metric_history
    does), each bounded by ``timeout``; a short description for the notes."""
    import msgspec
    import requests

    took, token = [], None
    for _ in range(pages):
        params: dict[str, Any] = {"run_id": run_id, "metric_key": key, "max_results": 25_000}
        if token:
            params["page_token"] = token
        t = time.perf_counter()
        try:
            r = requests.get(
                url + "/api/2.0/mlflow/metrics/get-history", params=params, timeout=timeout
            )
        except requests.Timeout:
            took.append(f"no answer within {timeout:.0f}s")
            break
        took.append(f"{time.perf_counter() - t:.2f}s")
        token = msgspec.json.decode(r.content).get("next_page_token") if r.ok else None
        if not token:
            break
    return ", ".join(f"page {i + 1} {t}" for i, t in enumerate(took))

"""Invariant 8: bad input gets MLflow's error JSON with a 4xx, and changes nothing."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import asyncpg
import pytest
import requests
from _support.server import EvtrackServer


def _event_count(dsn: str) -> int:
    import asyncio

    async def count() -> int:
        conn = await asyncpg.connect(dsn)
        try:
            return int(await conn.fetchval("SELECT count(*) FROM events"))
        finally:
            await conn.close()

    return asyncio.run(count())


@pytest.fixture
def evtrack_server(shared_server: EvtrackServer) -> EvtrackServer:
    return shared_server


@pytest.fixture
def api(evtrack_server: EvtrackServer) -> Iterator[tuple[str, str, str]]:
    base = evtrack_server.url + "/api/2.0/mlflow"
    name = f"bad-input-{uuid.uuid4().hex}"
    exp = requests.post(f"{base}/experiments/create", json={"name": name}).json()["experiment_id"]
    run = requests.post(f"{base}/runs/create", json={"experiment_id": exp, "start_time": 1}).json()
    yield base, exp, run["run"]["info"]["run_id"]


def _assert_error(resp: requests.Response, status: int, code: str) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    assert resp.headers["Content-Type"].startswith("application/json")
    body: dict[str, Any] = resp.json()
    assert body["error_code"] == code
    assert body["message"]
    return body


def _metric(i: int) -> dict[str, Any]:
    return {"key": "m", "value": float(i), "timestamp": 1, "step": i}


BAD_BATCHES: list[tuple[str, dict[str, Any]]] = [
    ("too many metrics", {"metrics": [_metric(i) for i in range(1001)]}),
    ("too many params", {"params": [{"key": f"p{i}", "value": "v"} for i in range(101)]}),
    ("too many tags", {"tags": [{"key": f"t{i}", "value": "v"} for i in range(101)]}),
    (
        "too many entities",
        {
            "metrics": [_metric(i) for i in range(900)],
            "params": [{"key": f"p{i}", "value": "v"} for i in range(100)],
            "tags": [{"key": "t", "value": "v"}],
        },
    ),
    ("missing timestamp", {"metrics": [{"key": "m", "value": 1.0}]}),
    ("string value", {"metrics": [{"key": "m", "value": "high", "timestamp": 1}]}),
    ("negative timestamp", {"metrics": [{"key": "m", "value": 1.0, "timestamp": -1}]}),
    ("bad key characters", {"metrics": [{"key": "a$b", "value": 1.0, "timestamp": 1}]}),
    ("key escapes", {"params": [{"key": "../x", "value": "v"}]}),
    ("key too long", {"params": [{"key": "k" * 251, "value": "v"}]}),
    ("duplicate params", {"params": [{"key": "p", "value": "1"}, {"key": "p", "value": "2"}]}),
    (
        "one bad point spoils the batch",
        {"metrics": [_metric(0), {"key": "m", "value": None, "timestamp": 1}]},
    ),
]


@pytest.mark.parametrize(("case", "body"), BAD_BATCHES, ids=[c for c, _ in BAD_BATCHES])
def test_bad_batches_are_rejected_whole(
    api: tuple[str, str, str], evtrack_server: EvtrackServer, case: str, body: dict[str, Any]
) -> None:
    base, _, run_id = api
    before = _event_count(evtrack_server.dsn)
    resp = requests.post(f"{base}/runs/log-batch", json={"run_id": run_id, **body})
    _assert_error(resp, 400, "INVALID_PARAMETER_VALUE")
    assert _event_count(evtrack_server.dsn) == before


def test_oversize_body_is_rejected(
    api: tuple[str, str, str], evtrack_server: EvtrackServer
) -> None:
    base, _, run_id = api
    before = _event_count(evtrack_server.dsn)
    tags = [{"key": f"t{i}", "value": "x" * 6_000} for i in range(100)]
    params = [{"key": f"p{i}", "value": "y" * 6_000} for i in range(100)]
    payload = json.dumps({"run_id": run_id, "tags": tags, "params": params})
    assert 1_000_000 < len(payload) < 1_500_000  # within MLflow's limits per field
    resp = requests.post(
        f"{base}/runs/log-batch", data=payload, headers={"Content-Type": "application/json"}
    )
    body = _assert_error(resp, 400, "INVALID_PARAMETER_VALUE")
    assert "at most 1000000 bytes" in body["message"]
    assert _event_count(evtrack_server.dsn) == before


@pytest.mark.parametrize(
    ("path", "data", "content_type"),
    [
        ("runs/log-metric", "{not json", "application/json"),
        (
            "runs/log-metric",
            '{"run_id": 5, "key": "m", "value": 1, "timestamp": 1}',
            "application/json",
        ),
        ("runs/log-parameter", '{"key": "p", "value": "v"}', "application/json"),
        ("runs/log-metric", '{"key": "m", "value": 1, "timestamp": 1}', "text/plain"),
        ("experiments/create", '{"name": ""}', "application/json"),
        ("experiments/create", '{"name": 12}', "application/json"),
        ("runs/set-tag", '{"run_id": "RUN", "key": "", "value": "v"}', "application/json"),
        ("runs/create", '{"experiment_id": "not-a-number"}', "application/json"),
        (
            "runs/log-metric",
            '{"run_id": "RUN", "key": "m", "value": true, "timestamp": 1}',
            "application/json",
        ),
    ],
)
def test_malformed_requests_get_400_and_change_nothing(
    api: tuple[str, str, str],
    evtrack_server: EvtrackServer,
    path: str,
    data: str,
    content_type: str,
) -> None:
    base, _, run_id = api
    before = _event_count(evtrack_server.dsn)
    resp = requests.post(
        f"{base}/{path}", data=data.replace("RUN", run_id), headers={"Content-Type": content_type}
    )
    _assert_error(resp, 400, "INVALID_PARAMETER_VALUE")
    assert _event_count(evtrack_server.dsn) == before


def test_unknown_routes_are_endpoint_not_found(evtrack_server: EvtrackServer) -> None:
    for url in (
        "/api/2.0/mlflow/nope",
        "/ajax-api/2.0/mlflow/runs/nope",
        "/api/2.0/mlflow/traces/x",
    ):
        _assert_error(requests.get(evtrack_server.url + url), 404, "ENDPOINT_NOT_FOUND")


def test_missing_resources_are_resource_does_not_exist(api: tuple[str, str, str]) -> None:
    base, _, _ = api
    _assert_error(
        requests.get(f"{base}/runs/get", params={"run_id": "f" * 32}),
        404,
        "RESOURCE_DOES_NOT_EXIST",
    )
    _assert_error(
        requests.get(f"{base}/experiments/get", params={"experiment_id": "999"}),
        404,
        "RESOURCE_DOES_NOT_EXIST",
    )
    resp = requests.post(
        f"{base}/runs/log-metric", json={"run_id": "f" * 32, "key": "m", "value": 1, "timestamp": 1}
    )
    _assert_error(resp, 404, "RESOURCE_DOES_NOT_EXIST")


TRAVERSAL = [
    "../escape.txt",
    "a/../../escape.txt",
    "%2e%2e/escape.txt",
    "%252e%252e/escape.txt",
    "..%2fescape.txt",
    "a\\..\\escape.txt",
    "/etc/passwd",
    "file:///etc/passwd",
    "a%23b",
]


@pytest.mark.parametrize("path", TRAVERSAL)
def test_artifact_traversal_is_rejected(evtrack_server: EvtrackServer, path: str) -> None:
    base = evtrack_server.url + "/api/2.0/mlflow-artifacts/artifacts"
    root = evtrack_server.artifacts_root
    outside = root.parent / "escape.txt"
    put = requests.put(f"{base}/{path}", data=b"x")
    assert put.status_code in (400, 404), put.text
    assert not outside.exists()
    got = requests.get(f"{base}/{path}")
    assert got.status_code in (400, 404)
    listed = requests.get(base, params={"path": path})
    assert listed.status_code == 400, listed.text
    assert listed.json()["error_code"] == "INVALID_PARAMETER_VALUE"


def test_run_artifact_list_rejects_traversal(api: tuple[str, str, str]) -> None:
    base, _, run_id = api
    for path in ("../..", "%2e%2e", "/abs", "a/../../.."):
        resp = requests.get(f"{base}/artifacts/list", params={"run_id": run_id, "path": path})
        _assert_error(resp, 400, "INVALID_PARAMETER_VALUE")


# --- out-of-range integers: a clear 400, nothing appended, and every read stays fresh ------

POISON = [
    ("runs/log-metric", {"key": "m", "value": 1.0, "timestamp": 1, "step": 10**30}),
    ("runs/log-metric", {"key": "m", "value": 1.0, "timestamp": 2**63, "step": 0}),
    ("runs/log-metric", {"key": "m", "value": 1.0, "timestamp": 1, "step": -(2**63) - 1}),
    ("runs/log-batch", {"metrics": [{"key": "m", "value": 1.0, "timestamp": 2**63}]}),
    ("runs/log-batch", {"metrics": [{"key": "m", "value": 1.0, "timestamp": 1, "step": 1e30}]}),
    ("runs/update", {"end_time": 2**63, "status": "FINISHED"}),
    ("runs/log-parameter", {"key": "p", "value": "a\u0000b"}),
    ("runs/set-tag", {"key": "t", "value": "a\u0000b"}),
]


@pytest.mark.parametrize(
    ("route", "fields"), POISON, ids=[f"{r}-{i}" for i, (r, _) in enumerate(POISON)]
)
def test_values_no_read_model_can_hold_are_refused_and_reads_stay_fresh(
    api: tuple[str, str, str], evtrack_server: EvtrackServer, route: str, fields: dict[str, Any]
) -> None:
    """The issue's poisoned request: accepted once, it stopped every projector. Now it is a
    400 in MLflow's shape, the log is unchanged, and the next write is read back at once."""
    base, _, run_id = api
    before = _event_count(evtrack_server.dsn)
    resp = requests.post(f"{base}/{route}", json={"run_id": run_id, **fields})
    _assert_error(resp, 400, "INVALID_PARAMETER_VALUE")
    assert _event_count(evtrack_server.dsn) == before
    requests.post(
        f"{base}/runs/log-metric",
        json={"run_id": run_id, "key": "after", "value": 2.0, "timestamp": 5, "step": 1},
    ).raise_for_status()
    got = requests.get(f"{base}/runs/get", params={"run_id": run_id}, timeout=5)
    assert got.elapsed.total_seconds() < 2.0
    assert {m["key"]: m["value"] for m in got.json()["run"]["data"]["metrics"]}["after"] == 2.0


def test_create_with_an_out_of_range_start_time_is_refused(
    api: tuple[str, str, str], evtrack_server: EvtrackServer
) -> None:
    base, experiment_id, _ = api
    before = _event_count(evtrack_server.dsn)
    resp = requests.post(
        f"{base}/runs/create", json={"experiment_id": experiment_id, "start_time": 2**64}
    )
    _assert_error(resp, 400, "INVALID_PARAMETER_VALUE")
    assert _event_count(evtrack_server.dsn) == before

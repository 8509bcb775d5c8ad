"""The native ingestion route: formats, validation, idempotent retries and back-pressure."""

from __future__ import annotations

import asyncio
import gzip
import json
import threading
import uuid
from typing import Any

import asyncpg
import msgspec
import numpy as np
import pytest
import requests
from _support.server import EvtrackServer

URL = "/api/2.0/evtrack/ingest"
MSGPACK = {"Content-Type": "application/msgpack"}


def _events(dsn: str, event_type: str = "RunDataLogged") -> int:
    async def count() -> int:
        conn = await asyncpg.connect(dsn)
        try:
            return int(
                await conn.fetchval("SELECT count(*) FROM events WHERE event_type = $1", event_type)
            )
        finally:
            await conn.close()

    return asyncio.run(count())


def _run_record(
    run_id: str, n: int, key: str = "loss", start: bool = True, **extra: Any
) -> dict[str, Any]:
    record: dict[str, Any] = {
        "run_id": run_id,
        "metrics": {
            "keys": [key] * n,
            "values": [float(i) for i in range(n)],
            "timestamps": [1000 + i for i in range(n)],
            "steps": list(range(n)),
        },
        **extra,
    }
    if start:
        record["start"] = {"experiment_name": "ingest-tests", "run_name": f"r-{run_id[:6]}"}
    return record


def _packed(
    names: list[str],
    key_index: list[int],
    values: list[float],
    timestamps: list[int],
    steps: list[int],
    cut: str | None = None,
) -> dict[str, Any]:
    """A record's ``packed`` field; ``cut`` drops one byte from that column."""
    columns = {
        "key_index": np.asarray(key_index, dtype="<u4").tobytes(),
        "values": np.asarray(values, dtype="<f8").tobytes(),
        "timestamps": np.asarray(timestamps, dtype="<i8").tobytes(),
        "steps": np.asarray(steps, dtype="<i8").tobytes(),
    }
    if cut is not None:
        columns[cut] = columns[cut][:-1]
    return {"packed": {"names": names, **columns}}


def _history(server: EvtrackServer, run_id: str, key: str = "loss") -> list[dict[str, Any]]:
    points: list[dict[str, Any]] = []
    token = None
    while True:
        params = {"run_id": run_id, "metric_key": key, "max_results": 25000}
        if token:
            params["page_token"] = token
        body = requests.get(
            f"{server.url}/api/2.0/mlflow/metrics/get-history", params=params
        ).json()
        points.extend(body.get("metrics", []))
        token = body.get("next_page_token")
        if not token:
            return points


def test_many_runs_in_one_msgpack_request(shared_server: EvtrackServer) -> None:
    runs = [uuid.uuid4().hex for _ in range(5)]
    body = msgspec.msgpack.encode(
        {"records": [_run_record(r, 2000, params=[{"key": "lr", "value": "0.1"}]) for r in runs]}
    )
    before = _events(shared_server.dsn)
    resp = requests.post(shared_server.url + URL, data=body, headers=MSGPACK)
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"runs": 5, "points": 10_000, "params": 5, "tags": 0}
    assert _events(shared_server.dsn) == before + 5  # one event per run, not per point
    for run_id in runs:
        assert [p["step"] for p in _history(shared_server, run_id)] == list(range(2000))
        run = requests.get(
            f"{shared_server.url}/api/2.0/mlflow/runs/get", params={"run_id": run_id}
        ).json()["run"]
        assert run["info"]["status"] == "RUNNING"
        assert run["data"]["params"] == [{"key": "lr", "value": "0.1"}]


def test_ndjson_gzip_and_non_finite_values(shared_server: EvtrackServer) -> None:
    run_id = uuid.uuid4().hex
    lines = [
        {
            "run_id": run_id,
            "start": {"experiment_name": "ingest-tests"},
            "metrics": {
                "keys": ["a", "a", "a"],
                "values": [1.5, "NaN", "Infinity"],
                "timestamps": [1, 2, 3],
                "steps": [0, 1, 2],
            },
        },
        {
            "run_id": run_id,
            "tags": [{"key": "phase", "value": "warmup"}],
            "end": {"status": "FINISHED", "end_time": 99},
        },
    ]
    data = gzip.compress("\n".join(json.dumps(x) for x in lines).encode())
    resp = requests.post(
        shared_server.url + URL,
        data=data,
        headers={"Content-Type": "application/x-ndjson", "Content-Encoding": "gzip"},
    )
    assert resp.status_code == 200, resp.text
    values = [p["value"] for p in _history(shared_server, run_id, "a")]
    assert values == [1.5, "NaN", 1.7976931348623157e308]
    run = requests.get(
        f"{shared_server.url}/api/2.0/mlflow/runs/get", params={"run_id": run_id}
    ).json()["run"]
    assert (run["info"]["status"], run["info"]["end_time"]) == ("FINISHED", 99)
    assert {"key": "phase", "value": "warmup"} in run["data"]["tags"]


def test_packed_columns_with_list_columns_in_one_request(shared_server: EvtrackServer) -> None:
    """Packed arrays and list columns of one run merge into one event, in record order."""
    run_id = uuid.uuid4().hex
    n = 30_000
    steps = np.arange(n)
    records = [
        {
            "run_id": run_id,
            "start": {"experiment_name": "ingest-tests"},
            # names no point uses are dropped; keys interleave; NaN kept, inf clamped
            **_packed(
                ["unused", "a", "b"],
                (1 + steps % 2).tolist(),
                np.where(steps == 7, np.nan, np.where(steps == 9, -np.inf, steps * 0.5)).tolist(),
                (1000 + steps).tolist(),
                steps.tolist(),
            ),
        },
        _run_record(run_id, 3, key="a", start=False),
    ]
    before = _events(shared_server.dsn)
    resp = requests.post(
        shared_server.url + URL, data=msgspec.msgpack.encode(records), headers=MSGPACK
    )
    assert resp.status_code == 200, resp.text
    assert resp.json()["points"] == n + 3
    assert _events(shared_server.dsn) == before + 1
    a = _history(shared_server, run_id, "a")  # even steps, plus the list record's points
    b = _history(shared_server, run_id, "b")  # odd steps
    # the list record's (1000, 0, 0.0) is identical to a packed point, so it appears once
    assert len(a) == n // 2 + 2 and len(b) == n // 2
    assert [p["step"] for p in b] == list(range(1, n, 2))
    odd = {p["step"]: p["value"] for p in b}
    assert odd[7] == "NaN" and odd[9] == -1.7976931348623157e308 and odd[11] == 5.5
    assert {(p["timestamp"], p["step"], p["value"]) for p in a} >= {(1001, 1, 1.0), (1002, 2, 1.0)}
    run = requests.get(
        f"{shared_server.url}/api/2.0/mlflow/runs/get", params={"run_id": run_id}
    ).json()["run"]
    latest = {m["key"]: (m["step"], m["value"]) for m in run["data"]["metrics"]}
    assert latest == {"a": (n - 2, (n - 2) * 0.5), "b": (n - 1, (n - 1) * 0.5)}
    assert "unused" not in latest


def test_retry_with_the_same_key_appends_nothing(shared_server: EvtrackServer) -> None:
    run_id = uuid.uuid4().hex
    body = msgspec.msgpack.encode([_run_record(run_id, 500)])
    headers = {**MSGPACK, "Idempotency-Key": f"batch-{uuid.uuid4().hex}"}
    first = requests.post(shared_server.url + URL, data=body, headers=headers)
    before = _events(shared_server.dsn)
    again = [requests.post(shared_server.url + URL, data=body, headers=headers) for _ in range(3)]
    assert [r.json() for r in again] == [first.json()] * 3
    assert _events(shared_server.dsn) == before
    assert len(_history(shared_server, run_id)) == 500


BAD = [
    (
        "ragged columns",
        {
            "run_id": "a" * 32,
            "metrics": {"keys": ["k", "k"], "values": [1.0], "timestamps": [1, 2], "steps": [0, 1]},
        },
    ),
    (
        "bad key",
        {
            "run_id": "a" * 32,
            "metrics": {"keys": ["bad$key"], "values": [1.0], "timestamps": [1], "steps": [0]},
        },
    ),
    (
        "negative timestamp",
        {
            "run_id": "a" * 32,
            "metrics": {"keys": ["k"], "values": [1.0], "timestamps": [-1], "steps": [0]},
        },
    ),
    (
        "wrong type",
        {
            "run_id": "a" * 32,
            "metrics": {"keys": ["k"], "values": ["high"], "timestamps": [1], "steps": [0]},
        },
    ),
    (
        "packed lengths disagree",
        {"run_id": "a" * 32, **_packed(["k"], [0, 0], [1.0, 2.0], [1, 2], [0, 1], cut="steps")},
    ),
    (
        "packed values not whole float64s",
        {"run_id": "a" * 32, **_packed(["k"], [0], [1.0], [1], [0], cut="values")},
    ),
    (
        "packed key index past names",
        {"run_id": "a" * 32, **_packed(["k"], [0, 1], [1.0, 2.0], [1, 2], [0, 1])},
    ),
    (
        "packed negative timestamp",
        {"run_id": "a" * 32, **_packed(["k"], [0], [1.0], [-5], [0])},
    ),
    (
        "packed bad key",
        {"run_id": "a" * 32, **_packed(["ok", "bad$key"], [0, 1], [1.0, 2.0], [1, 2], [0, 1])},
    ),
    ("bad run id", {"run_id": "../x", "params": [{"key": "a", "value": "b"}]}),
    ("start without experiment", {"run_id": "a" * 32, "start": {"run_name": "x"}}),
    ("unknown run", {"run_id": "f" * 32, "params": [{"key": "a", "value": "b"}]}),
]


@pytest.mark.parametrize(("case", "bad"), BAD, ids=[c for c, _ in BAD])
def test_bad_records_reject_the_whole_request(
    shared_server: EvtrackServer, case: str, bad: dict[str, Any]
) -> None:
    good = _run_record(uuid.uuid4().hex, 10)
    before = _events(shared_server.dsn)
    resp = requests.post(
        shared_server.url + URL, data=msgspec.msgpack.encode([good, bad]), headers=MSGPACK
    )
    assert resp.status_code in (400, 404), resp.text
    assert resp.json()["error_code"] in ("INVALID_PARAMETER_VALUE", "RESOURCE_DOES_NOT_EXIST")
    assert _events(shared_server.dsn) == before
    assert _history(shared_server, good["run_id"]) == []


def test_malformed_bodies_and_content_types(shared_server: EvtrackServer) -> None:
    for data, headers in [
        (b"\xc1\xc1", MSGPACK),
        (b"{not json", {"Content-Type": "application/x-ndjson"}),
        (b"{}", {"Content-Type": "application/json"}),
        (b"not gzip", {**MSGPACK, "Content-Encoding": "gzip"}),
    ]:
        resp = requests.post(shared_server.url + URL, data=data, headers=headers)
        assert resp.status_code == 400, (data, resp.text)
        assert resp.json()["error_code"] == "INVALID_PARAMETER_VALUE"


def test_back_pressure_answers_429_with_retry_after(evtrack_server_factory: Any) -> None:
    server: EvtrackServer = evtrack_server_factory(
        extra_args=["--ingest-max-in-flight", "1", "--ingest-queue-wait", "0.01"]
    )
    records = [_run_record(uuid.uuid4().hex, 50_000) for _ in range(4)]
    bodies = [msgspec.msgpack.encode([r]) for r in records]
    results: list[requests.Response] = []
    lock = threading.Lock()

    def send(body: bytes) -> None:
        resp = requests.post(server.url + URL, data=body, headers=MSGPACK)
        with lock:
            results.append(resp)

    threads = [threading.Thread(target=send, args=(b,)) for b in bodies * 2]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    throttled = [r for r in results if r.status_code == 429]
    assert throttled, [r.status_code for r in results]
    assert all(r.headers.get("Retry-After") == "1" for r in throttled)
    assert all(r.json()["error_code"] == "REQUEST_LIMIT_EXCEEDED" for r in throttled)
    assert all(r.status_code in (200, 429) for r in results)

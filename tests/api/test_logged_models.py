"""MLflow 3 logged models over HTTP: every route, its errors, metrics logged for a model, the
legacy ``runs/log-model``, the official client's ``log_model``/``load_model`` round trip, and a
rebuild of the read model.

Expected shapes and messages were taken from the reference ``mlflow server`` 3.17.2 (sqlite,
``--serve-artifacts``); where evtrack deliberately differs, the test says so.
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import Iterator
from typing import Any

import asyncpg
import numpy as np
import pytest
import requests
from _support.server import EvtrackServer

from evtrack.domain._logged_model_state import decode_logged_model, fold_logged_model
from evtrack.eventlog import EventStore
from evtrack.projections.registry import projection_named
from evtrack.projector import rebuild

MODEL_ID = re.compile(r"^m-[0-9a-f]{32}$")
NOT_FOUND = "RESOURCE_DOES_NOT_EXIST"
INVALID = "INVALID_PARAMETER_VALUE"


@pytest.fixture
def server(shared_server: EvtrackServer) -> EvtrackServer:
    return shared_server


@pytest.fixture
def base(server: EvtrackServer) -> str:
    return server.url + "/api/2.0/mlflow"


@pytest.fixture
def exp(base: str) -> str:
    resp = requests.post(f"{base}/experiments/create", json={"name": f"lm-{uuid.uuid4().hex}"})
    assert resp.status_code == 200, resp.text
    return str(resp.json()["experiment_id"])


def _error(resp: requests.Response, status: int, code: str, message: str | None = None) -> str:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert body["error_code"] == code, body
    if message is not None:
        assert body["message"] == message
    return str(body["message"])


def _create(base: str, exp: str, **fields: Any) -> dict[str, Any]:
    resp = requests.post(f"{base}/logged-models", json={"experiment_id": exp, **fields})
    assert resp.status_code == 200, resp.text
    model: dict[str, Any] = resp.json()["model"]
    return model


def _get(base: str, model_id: str, **params: Any) -> requests.Response:
    return requests.get(f"{base}/logged-models/{model_id}", params=params or None)


def _model(base: str, model_id: str) -> dict[str, Any]:
    resp = _get(base, model_id)
    assert resp.status_code == 200, resp.text
    model: dict[str, Any] = resp.json()["model"]
    return model


def _run(base: str, exp: str) -> str:
    resp = requests.post(f"{base}/runs/create", json={"experiment_id": exp, "start_time": 1})
    assert resp.status_code == 200, resp.text
    return str(resp.json()["run"]["info"]["run_id"])


# --- create and get ------------------------------------------------------------------------


def test_create_with_defaults_matches_the_reference_shape(base: str, exp: str) -> None:
    model = _create(base, exp)
    info = model["info"]
    assert MODEL_ID.match(info["model_id"])
    assert info["experiment_id"] == exp
    assert info["name"]  # a random readable name, as runs get
    assert info["artifact_uri"] == f"mlflow-artifacts:/{exp}/models/{info['model_id']}/artifacts"
    assert info["status"] == "LOGGED_MODEL_PENDING"
    # The reference stores the request's empty strings, so both are always present.
    assert info["model_type"] == ""
    assert info["source_run_id"] == ""
    assert isinstance(info["creation_timestamp_ms"], int)
    assert info["last_updated_timestamp_ms"] == info["creation_timestamp_ms"]
    assert "tags" not in info and "status_message" not in info
    assert model["data"] == {}
    assert _model(base, info["model_id"]) == model
    # The UI reads through the ajax prefix.
    ajax = requests.get(
        base.replace("/api/", "/ajax-api/") + f"/logged-models/{info['model_id']}"
    ).json()
    assert ajax["model"] == model


def test_create_with_every_field(base: str, exp: str) -> None:
    model = _create(
        base,
        exp,
        name="clf",
        model_type="sklearn",
        source_run_id="a" * 32,
        params=[{"key": "C", "value": "1.0"}, {"key": "empty"}],
        tags=[{"key": "t", "value": "1"}, {"key": "t", "value": "2"}, {"key": "u", "value": "x"}],
    )
    info = model["info"]
    assert (info["name"], info["model_type"], info["source_run_id"]) == ("clf", "sklearn", "a" * 32)
    assert info["tags"] == [{"key": "t", "value": "2"}, {"key": "u", "value": "x"}]
    assert model["data"] == {
        "params": [{"key": "C", "value": "1.0"}, {"key": "empty", "value": ""}]
    }
    assert _model(base, info["model_id"]) == model


def test_create_rejects_bad_input(base: str, exp: str) -> None:
    url = f"{base}/logged-models"
    _error(
        requests.post(url, json={}),
        400,
        INVALID,
        "Missing value for required parameter 'experiment_id'. See the API docs for more "
        "information about request parameters.",
    )
    _error(
        requests.post(url, json={"experiment_id": "abc"}),
        400,
        INVALID,
        "Invalid experiment ID 'abc'. Experiment ID must be a valid integer.",
    )
    _error(
        requests.post(url, json={"experiment_id": "987654321"}),
        404,
        NOT_FOUND,
        "No Experiment with id=987654321 exists",
    )
    _error(
        requests.post(url, json={"experiment_id": exp, "name": "a/b"}),
        400,
        INVALID,
        "Invalid model name ('a/b') provided. Model name must be a non-empty string and cannot "
        """contain the following characters: ('/', ':', '.', '%', '"', "'")""",
    )
    _error(
        requests.post(url, json={"experiment_id": exp, "tags": [{"value": "v"}]}),
        400,
        INVALID,
        "Missing value for required parameter 'tags[0].key'. See the API docs for more "
        "information about request parameters.",
    )
    _error(
        requests.post(url, json={"experiment_id": exp, "tags": [{"key": "../x", "value": "v"}]}),
        400,
        INVALID,
    )
    dupes = [{"key": "p", "value": "1"}, {"key": "p", "value": "2"}]
    assert "Duplicate parameter keys" in _error(
        requests.post(url, json={"experiment_id": exp, "params": dupes}), 400, INVALID
    )
    deleted = requests.post(f"{base}/experiments/create", json={"name": uuid.uuid4().hex}).json()
    requests.post(f"{base}/experiments/delete", json=deleted)
    _error(
        requests.post(url, json=deleted),
        400,
        INVALID,
        f"The experiment {deleted['experiment_id']} must be in the 'active' state. "
        "Current state is deleted.",
    )


def test_get_unknown_model(base: str) -> None:
    _error(_get(base, "m-nope"), 404, NOT_FOUND, "Logged model with ID 'm-nope' not found.")


# --- finalize, tags, params, delete ----------------------------------------------------------


def test_finalize(base: str, exp: str) -> None:
    created = _create(base, exp)["info"]
    model_id = created["model_id"]
    url = f"{base}/logged-models/{model_id}"
    resp = requests.patch(url, json={"model_id": model_id, "status": "LOGGED_MODEL_READY"})
    assert resp.status_code == 200, resp.text
    info = resp.json()["model"]["info"]
    assert info["status"] == "LOGGED_MODEL_READY"
    assert info["last_updated_timestamp_ms"] >= created["last_updated_timestamp_ms"]
    assert info["creation_timestamp_ms"] == created["creation_timestamp_ms"]
    # Proto JSON also accepts the enum's number.
    resp = requests.patch(url, json={"model_id": model_id, "status": 3})
    assert resp.json()["model"]["info"]["status"] == "LOGGED_MODEL_UPLOAD_FAILED"
    assert _model(base, model_id)["info"]["status"] == "LOGGED_MODEL_UPLOAD_FAILED"

    _error(
        requests.patch(url, json={"status": "LOGGED_MODEL_READY"}),
        400,
        INVALID,
        "Missing value for required parameter 'model_id'. See the API docs for more "
        "information about request parameters.",
    )
    _error(
        requests.patch(url, json={"model_id": model_id}),
        400,
        INVALID,
        "Missing value for required parameter 'status'. See the API docs for more "
        "information about request parameters.",
    )
    # Stricter than the reference, which stores any status, even PENDING or garbage.
    for status in ("LOGGED_MODEL_PENDING", "BOGUS", 0):
        _error(requests.patch(url, json={"model_id": model_id, "status": status}), 400, INVALID)
    _error(
        requests.patch(url, json={"model_id": "m-other", "status": 2}), 400, INVALID
    )  # the reference would finalize m-other instead
    _error(
        requests.patch(f"{base}/logged-models/m-nope", json={"model_id": "m-nope", "status": 2}),
        404,
        NOT_FOUND,
        "Logged model with ID 'm-nope' not found.",
    )


def test_set_and_delete_tags(base: str, exp: str) -> None:
    model_id = _create(base, exp, tags=[{"key": "keep", "value": "1"}])["info"]["model_id"]
    url = f"{base}/logged-models/{model_id}/tags"
    body = {"tags": [{"key": "a", "value": "1"}, {"key": "a", "value": "2"}, {"key": "s/t"}]}
    resp = requests.patch(url, json=body)
    assert (resp.status_code, resp.json()) == (200, {})
    assert _model(base, model_id)["info"]["tags"] == [
        {"key": "a", "value": "2"},
        {"key": "keep", "value": "1"},
        {"key": "s/t", "value": ""},
    ]
    assert requests.patch(url, json={"tags": [{"key": "a", "value": "3"}]}).status_code == 200
    assert requests.patch(url, json={}).json() == {}
    # Keys may contain slashes, so the key is the rest of the path.
    for key in ("a", "s/t"):
        resp = requests.delete(f"{url}/{key}")
        assert (resp.status_code, resp.json()) == (200, {})
    assert _model(base, model_id)["info"]["tags"] == [{"key": "keep", "value": "1"}]
    _error(
        requests.delete(f"{url}/a"),
        404,
        NOT_FOUND,
        f"No tag with key 'a' found for model with ID '{model_id}'.",
    )
    _error(requests.patch(url, json={"tags": [{"key": "bad$key", "value": "1"}]}), 400, INVALID)
    missing = f"{base}/logged-models/m-nope/tags"
    _error(requests.patch(missing, json={"tags": [{"key": "a", "value": "1"}]}), 404, NOT_FOUND)
    _error(requests.delete(f"{missing}/a"), 404, NOT_FOUND)


def test_log_params(base: str, exp: str) -> None:
    model_id = _create(base, exp, params=[{"key": "p0", "value": "0"}])["info"]["model_id"]
    url = f"{base}/logged-models/{model_id}/params"
    params = [{"key": f"p{i}", "value": str(i)} for i in range(1, 101)]
    resp = requests.post(url, json={"model_id": model_id, "params": params})
    assert (resp.status_code, resp.json()) == (200, {})
    # The same values again are a no-op (the reference fails on any repeated key).
    assert requests.post(url, json={"model_id": model_id, "params": params}).status_code == 200
    logged = _model(base, model_id)["data"]["params"]
    assert {p["key"]: p["value"] for p in logged} == {f"p{i}": str(i) for i in range(101)}
    assert _error(
        requests.post(url, json={"model_id": model_id, "params": [{"key": "p1", "value": "x"}]}),
        400,
        INVALID,
    ).startswith("Changing param values is not allowed. Param with key='p1'")
    _error(
        requests.post(url, json={"params": [{"key": "q", "value": "1"}]}),
        400,
        INVALID,
        "Missing value for required parameter 'model_id'. See the API docs for more "
        "information about request parameters.",
    )
    _error(
        requests.post(
            f"{base}/logged-models/m-nope/params",
            json={"model_id": "m-nope", "params": [{"key": "q", "value": "1"}]},
        ),
        404,
        NOT_FOUND,
    )


def test_delete(base: str, exp: str) -> None:
    model_id = _create(base, exp, name="doomed")["info"]["model_id"]
    url = f"{base}/logged-models/{model_id}"
    resp = requests.delete(url, json={"model_id": model_id})
    assert (resp.status_code, resp.json()) == (200, {})
    _error(_get(base, model_id), 404, NOT_FOUND, f"Logged model with ID '{model_id}' not found.")
    info = _get(base, model_id, allow_deleted="true").json()["model"]["info"]
    assert info["model_id"] == model_id
    assert info["last_updated_timestamp_ms"] >= info["creation_timestamp_ms"]
    assert requests.delete(url).json() == {}  # deleting again succeeds, as in the reference
    # Unlike the reference, a deleted model takes no more writes.
    _error(requests.patch(url, json={"model_id": model_id, "status": 2}), 404, NOT_FOUND)
    _error(requests.patch(f"{url}/tags", json={"tags": [{"key": "a"}]}), 404, NOT_FOUND)
    found = requests.post(
        f"{base}/logged-models/search", json={"experiment_ids": [exp], "filter": "name = 'doomed'"}
    ).json()
    assert found == {}
    _error(requests.delete(f"{base}/logged-models/m-nope"), 404, NOT_FOUND)


# --- metrics logged for a model --------------------------------------------------------------


def test_metrics_logged_with_a_model_id_show_in_the_model(base: str, exp: str) -> None:
    run_id = _run(base, exp)
    model_id = _create(base, exp, source_run_id=run_id)["info"]["model_id"]
    other = _create(base, exp)["info"]["model_id"]
    single = {"run_id": run_id, "key": "acc", "value": 0.5, "timestamp": 10, "step": 1}
    assert requests.post(f"{base}/runs/log-metric", json={**single, "model_id": model_id}).ok
    batch = [
        {"key": "acc", "value": 0.75, "timestamp": 20, "step": 2, "model_id": model_id},
        {
            "key": "loss",
            "value": "NaN",
            "timestamp": 20,
            "step": 2,
            "model_id": model_id,
            "dataset_name": "eval",
            "dataset_digest": "abc123",
        },
        {"key": "loss", "value": 0.1, "timestamp": 20, "step": 2, "model_id": other},
        {"key": "plain", "value": 1.0, "timestamp": 20, "step": 2},
    ]
    resp = requests.post(f"{base}/runs/log-batch", json={"run_id": run_id, "metrics": batch})
    assert resp.status_code == 200, resp.text
    # A retry of the same points changes nothing.
    requests.post(f"{base}/runs/log-metric", json={**single, "model_id": model_id})

    common = {"model_id": model_id, "run_id": run_id}
    assert _model(base, model_id)["data"]["metrics"] == [
        {"key": "acc", "value": 0.5, "timestamp": 10, "step": 1, **common},
        {"key": "acc", "value": 0.75, "timestamp": 20, "step": 2, **common},
        {
            "key": "loss",
            "value": "NaN",
            "timestamp": 20,
            "step": 2,
            "dataset_name": "eval",
            "dataset_digest": "abc123",
            **common,
        },
    ]
    assert [m["key"] for m in _model(base, other)["data"]["metrics"]] == ["loss"]
    # The run sees the points as ordinary metrics.
    run = requests.get(f"{base}/runs/get", params={"run_id": run_id}).json()["run"]
    assert {m["key"] for m in run["data"]["metrics"]} == {"acc", "loss", "plain"}


def test_metrics_for_an_unknown_model_are_rejected_whole(base: str, exp: str) -> None:
    run_id = _run(base, exp)
    bad = {"run_id": run_id, "key": "m", "value": 1, "timestamp": 1, "model_id": "m-bogus"}
    _error(
        requests.post(f"{base}/runs/log-metric", json=bad),
        404,
        NOT_FOUND,
        "Logged model with ID 'm-bogus' not found.",
    )
    run = requests.get(f"{base}/runs/get", params={"run_id": run_id}).json()["run"]
    assert "metrics" not in run["data"]


# --- search --------------------------------------------------------------------------------


def test_search(base: str, exp: str) -> None:
    ids = [_create(base, exp, name=f"s{i}")["info"]["model_id"] for i in range(3)]
    url = f"{base}/logged-models/search"
    by_name = requests.post(url, json={"experiment_ids": [exp], "filter": "name = 's1'"}).json()
    assert [m["info"]["model_id"] for m in by_name["models"]] == [ids[1]]
    assert by_name["models"][0] == _model(base, ids[1])

    seen: list[str] = []
    token = None
    while True:
        body: dict[str, Any] = {"experiment_ids": [exp], "max_results": 2}
        if token:
            body["page_token"] = token
        page = requests.post(url, json=body).json()
        seen.extend(m["info"]["model_id"] for m in page["models"])
        token = page.get("next_page_token")
        if not token:
            break
    assert seen == ids[::-1]  # newest first

    ordered = requests.post(
        url,
        json={"experiment_ids": [exp], "order_by": [{"field_name": "name", "ascending": True}]},
    ).json()
    assert [m["info"]["name"] for m in ordered["models"]] == ["s0", "s1", "s2"]
    ajax = requests.post(
        base.replace("/api/", "/ajax-api/") + "/logged-models/search",
        json={"experiment_ids": [exp], "filter": f"attributes.model_id IN ('{ids[0]}')"},
    ).json()
    assert [m["info"]["model_id"] for m in ajax["models"]] == [ids[0]]
    assert requests.post(url, json={"experiment_ids": []}).json() == {}
    _error(
        requests.post(url, json={}),
        400,
        INVALID,
        "Missing value for required parameter 'experiment_ids'. See the API docs for more "
        "information about request parameters.",
    )
    _error(requests.post(url, json={"experiment_ids": [exp], "page_token": "abc"}), 400, INVALID)
    _error(requests.post(url, json={"experiment_ids": [exp], "filter": "nope ~ 1"}), 400, INVALID)


# --- artifacts -----------------------------------------------------------------------------


def test_artifact_listing_and_download(server: EvtrackServer, base: str, exp: str) -> None:
    model_id = _create(base, exp)["info"]["model_id"]
    root = f"{exp}/models/{model_id}/artifacts"
    proxy = server.url + "/api/2.0/mlflow-artifacts/artifacts"
    for path, data in (("MLmodel", b"flavors: {}\n"), ("sub/model.pkl", b"\x00\x01\x02")):
        assert requests.put(f"{proxy}/{root}/{path}", data=data).status_code == 200

    url = f"{base}/logged-models/{model_id}/artifacts/directories"
    listed = requests.get(url).json()
    assert listed == {
        "root_uri": f"mlflow-artifacts:/{root}",
        "files": [
            {"path": "MLmodel", "is_dir": False, "file_size": 12},
            {"path": "sub", "is_dir": True},
        ],
    }
    sub = requests.get(url, params={"artifact_directory_path": "sub"}).json()
    assert sub["files"] == [{"path": "sub/model.pkl", "is_dir": False, "file_size": 3}]
    for nothing in ("nope", "MLmodel"):
        assert requests.get(url, params={"artifact_directory_path": nothing}).json() == {
            "root_uri": f"mlflow-artifacts:/{root}"
        }
    _error(
        requests.get(url, params={"artifact_directory_path": "../x"}), 400, INVALID, "Invalid path"
    )
    _error(requests.get(f"{base}/logged-models/m-nope/artifacts/directories"), 404, NOT_FOUND)

    files = server.url + f"/ajax-api/2.0/mlflow/logged-models/{model_id}/artifacts/files"
    got = requests.get(files, params={"artifact_file_path": "MLmodel"})
    assert got.status_code == 200
    assert got.content == b"flavors: {}\n"
    assert got.headers["Content-Type"].startswith("text/plain")
    assert got.headers["Content-Disposition"] == "attachment; filename=MLmodel"
    got = requests.get(files, params={"artifact_file_path": "sub/model.pkl"})
    assert got.content == b"\x00\x01\x02"
    _error(
        requests.get(files),
        400,
        "BAD_REQUEST",
        'Request must include the "artifact_file_path" query parameter.',
    )
    _error(requests.get(files, params={"artifact_file_path": "nope"}), 404, NOT_FOUND)
    _error(requests.get(files, params={"artifact_file_path": "../../x"}), 400, INVALID)
    # Only the UI's ajax prefix serves raw files, as in the reference.
    api_files = f"{base}/logged-models/{model_id}/artifacts/files"
    resp = requests.get(api_files, params={"artifact_file_path": "MLmodel"})
    _error(resp, 404, "ENDPOINT_NOT_FOUND")


# --- legacy runs/log-model -----------------------------------------------------------------


def test_legacy_log_model_appends_to_the_run_history_tag(base: str, exp: str) -> None:
    run_id = _run(base, exp)
    url = f"{base}/runs/log-model"
    first = {
        "artifact_path": "model",
        "flavors": {"spark": {"pyspark_version": "3.5", "config": {"big": 1}}},
        "utc_time_created": "2024-01-01 00:00:00.000000",
        "run_id": run_id,
        "extra": "dropped",
    }
    second = {**first, "artifact_path": "model2", "model_uuid": "u2"}
    for model in (first, second):
        resp = requests.post(url, json={"run_id": run_id, "model_json": json.dumps(model)})
        assert (resp.status_code, resp.json()) == (200, {})
    run = requests.get(f"{base}/runs/get", params={"run_id": run_id}).json()["run"]
    tags = {t["key"]: t["value"] for t in run["data"]["tags"]}
    entry = {
        "run_id": run_id,
        "artifact_path": "model",
        "utc_time_created": "2024-01-01 00:00:00.000000",
        "model_uuid": None,
        "flavors": {"spark": {"pyspark_version": "3.5"}},
    }
    # Byte-for-byte what the reference writes (json.dumps with its default separators).
    assert tags["mlflow.log-model.history"] == json.dumps(
        [entry, {**entry, "artifact_path": "model2", "model_uuid": "u2"}]
    )

    _error(
        requests.post(url, json={"run_id": run_id, "model_json": "not json"}),
        400,
        INVALID,
        "Malformed model info. \n not json \n is not a valid JSON.",
    )
    assert "Model json is missing mandatory fields" in _error(
        requests.post(url, json={"run_id": run_id, "model_json": "{}"}), 400, INVALID
    )
    _error(requests.post(url, json={"run_id": run_id}), 400, INVALID)
    _error(
        requests.post(url, json={"run_id": "f" * 32, "model_json": json.dumps(first)}),
        404,
        NOT_FOUND,
        f"Run with id={'f' * 32} not found",
    )


def test_only_the_legacy_log_model_takes_an_identical_request_for_a_retry(
    base: str, exp: str
) -> None:
    """``runs/log-model`` bodies carry the model's creation time, so a resent one is a retry
    and is appended once; tag upserts are not retries (a=1, a=2, a=1 must end at 1)."""
    run_id = _run(base, exp)
    model = {
        "artifact_path": "model",
        "flavors": {},
        "utc_time_created": "2024-01-01 00:00:00.000000",
        "run_id": run_id,
    }
    body = {"run_id": run_id, "model_json": json.dumps(model)}
    for _ in range(2):
        resp = requests.post(f"{base}/runs/log-model", json=body)
        assert (resp.status_code, resp.json()) == (200, {})
    run = requests.get(f"{base}/runs/get", params={"run_id": run_id}).json()["run"]
    tags = {t["key"]: t["value"] for t in run["data"]["tags"]}
    assert len(json.loads(tags["mlflow.log-model.history"])) == 1

    model_id = _create(base, exp)["info"]["model_id"]
    for value in ("1", "2", "1"):
        resp = requests.patch(
            f"{base}/logged-models/{model_id}/tags", json={"tags": [{"key": "a", "value": value}]}
        )
        assert resp.status_code == 200, resp.text
    assert {"key": "a", "value": "1"} in _model(base, model_id)["info"]["tags"]


# --- the official client -------------------------------------------------------------------


@pytest.fixture
def mlflow_at(server: EvtrackServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.url)
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(server.url)
    try:
        yield mlflow
    finally:
        if mlflow.active_run() is not None:
            mlflow.end_run()
        mlflow.set_tracking_uri(previous)


def test_sklearn_log_model_and_load_model_with_the_official_client(mlflow_at: Any) -> None:
    from sklearn.linear_model import LogisticRegression

    mlflow = mlflow_at
    x = np.array([[0.0, 1.0], [1.0, 0.0], [0.2, 0.8], [0.9, 0.2], [0.1, 0.7], [0.8, 0.1]])
    y = np.array([0, 1, 0, 1, 0, 1])
    trained = LogisticRegression().fit(x, y)
    mlflow.set_experiment(f"sklearn-{uuid.uuid4().hex}")
    with mlflow.start_run() as run:
        mlflow.log_param("C", 1.0)
        mlflow.log_metric("acc", 0.9)
        info = mlflow.sklearn.log_model(trained, name="model", input_example=x[:2])
    assert MODEL_ID.match(info.model_id)

    client = mlflow.MlflowClient()
    model = client.get_logged_model(info.model_id)
    assert model.status.to_proto() == 2  # LOGGED_MODEL_READY
    assert model.source_run_id == run.info.run_id
    assert model.name == "model"
    assert model.params == {"C": "1.0"}
    assert {m.key: m.value for m in model.metrics} == {"acc": 0.9}  # re-logged by log_model
    assert model.tags["mlflow.user"]

    expected = trained.predict(x)
    by_id = mlflow.pyfunc.load_model(f"models:/{info.model_id}")
    assert list(by_id.predict(x)) == list(expected)
    by_run = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/model")
    assert list(by_run.predict(x)) == list(expected)
    listed = {f.path for f in client.list_logged_model_artifacts(info.model_id)}
    assert {"MLmodel", "requirements.txt"} <= listed


# --- rebuild -------------------------------------------------------------------------------


def test_read_model_survives_a_rebuild(server: EvtrackServer, base: str, exp: str) -> None:
    """Invariant 1: replaying the log into a fresh schema gives the same tables; and the
    write model's snapshots are folds of their streams."""
    model_id = _create(base, exp, params=[{"key": "p", "value": "1"}])["info"]["model_id"]
    requests.patch(f"{base}/logged-models/{model_id}/tags", json={"tags": [{"key": "t"}]})
    point = {"key": "m", "value": "NaN", "timestamp": 1, "model_id": model_id}
    requests.post(f"{base}/runs/log-metric", json={"run_id": _run(base, exp), **point})
    requests.delete(f"{base}/logged-models/{_create(base, exp)['info']['model_id']}")
    _model(base, model_id)  # a read waits until the projection has caught up

    async def tables() -> dict[str, list[tuple[Any, ...]]]:
        conn = await asyncpg.connect(server.dsn)
        try:
            out = {}
            for table in (
                "logged_models",
                "logged_model_params",
                "logged_model_tags",
                "logged_model_metrics",
            ):
                rows = await conn.fetch(f"SELECT * FROM rm_logged_models.{table}")
                out[table] = sorted(tuple(r.values()) for r in rows)
            return out
        finally:
            await conn.close()

    async def rebuild_model() -> None:
        conn = await asyncpg.connect(server.dsn)
        try:
            await rebuild(conn, projection_named("logged_models"), batch_size=17)
        finally:
            await conn.close()

    async def snapshots_are_folds() -> None:
        pool = await asyncpg.create_pool(server.dsn, min_size=1, max_size=2)
        try:
            store = EventStore(pool)
            for row in await pool.fetch(
                "SELECT stream_id, state FROM streams WHERE stream_id LIKE 'logged_model-%'"
            ):
                stream = await store.read_stream(row["stream_id"])
                assert decode_logged_model(row["state"]) == fold_logged_model(
                    r.event for r in stream if r.event is not None
                )
        finally:
            await pool.close()

    asyncio.run(snapshots_are_folds())
    before = asyncio.run(tables())
    assert before["logged_models"] and before["logged_model_metrics"]
    asyncio.run(rebuild_model())
    assert asyncio.run(tables()) == before
    # The live projector carries on from the rebuilt model.
    later = _create(base, exp)["info"]["model_id"]
    assert _model(base, later)["info"]["model_id"] == later

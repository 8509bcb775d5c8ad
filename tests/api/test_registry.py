"""The model registry over HTTP: MLflow's routes with the official client, source validation,
promotion approval, audit history, time travel and the live event stream."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from typing import Any

import pytest
import requests
from _support.server import EvtrackServer

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException


@pytest.fixture
def server(shared_server: EvtrackServer) -> EvtrackServer:
    return shared_server


@pytest.fixture
def client(server: EvtrackServer) -> MlflowClient:
    return MlflowClient(tracking_uri=server.url, registry_uri=server.url)


def _name(prefix: str = "model") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def _run(client: MlflowClient) -> str:
    exp = client.create_experiment(_name("exp"))
    return str(client.create_run(exp).info.run_id)


def _api(
    server: EvtrackServer,
    method: str,
    path: str,
    body: dict[str, Any] | None = None,
    user: str | None = None,
    **params: Any,
) -> requests.Response:
    """Sends ``user`` as a claimed name (with authentication off it is an unverified note) and,
    on a server with authentication on, as Basic credentials (password ``<user>-pw``)."""
    headers = {"X-Evtrack-User": user} if user else {}
    auth = (user, f"{user}-pw") if user else None
    if auth is None and os.environ.get("MLFLOW_TRACKING_USERNAME"):
        auth = (os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"])
    return requests.request(
        method,
        f"{server.url}/api/2.0/{path}",
        json=body,
        params=params or None,
        headers=headers,
        auth=auth,
    )


def test_versions_stages_aliases_with_the_official_client(client: MlflowClient) -> None:
    name = _name()
    client.create_registered_model(name, tags={"team": "ml"}, description="first")
    run_id = _run(client)
    v1 = client.create_model_version(name, f"runs:/{run_id}/model", run_id=run_id)
    v2 = client.create_model_version(name, f"runs:/{run_id}/model", run_id=run_id, tags={"k": "v"})
    assert (v1.version, v2.version) == ("1", "2")
    assert v2.tags == {"k": "v"}

    client.transition_model_version_stage(name, "1", "Staging")
    client.transition_model_version_stage(name, "1", "production")
    client.transition_model_version_stage(name, "2", "Production", archive_existing_versions=True)
    assert client.get_model_version(name, "1").current_stage == "Archived"
    assert client.get_model_version(name, "2").current_stage == "Production"
    latest = client.get_latest_versions(name, stages=["Production"])
    assert [v.version for v in latest] == ["2"]
    assert {v.current_stage: v.version for v in client.get_latest_versions(name)} == {
        "Archived": "1",
        "Production": "2",
    }

    client.set_registered_model_alias(name, "champion", "2")
    assert client.get_model_version_by_alias(name, "champion").version == "2"
    assert client.get_registered_model(name).aliases == {"champion": "2"}
    assert client.get_model_version_download_uri(name, "2") == f"runs:/{run_id}/model"

    client.delete_model_version(name, "2")
    with pytest.raises(MlflowException, match="not found") as err:
        client.get_model_version(name, "2")
    assert err.value.error_code == "RESOURCE_DOES_NOT_EXIST"
    assert client.get_registered_model(name).aliases == {}
    v3 = client.create_model_version(name, f"runs:/{run_id}/model", run_id=run_id)
    assert v3.version == "3"  # numbers are never reused


def test_registered_model_lifecycle(client: MlflowClient) -> None:
    name, renamed = _name(), _name("renamed")
    client.create_registered_model(name)
    with pytest.raises(MlflowException) as err:
        client.create_registered_model(name)
    assert err.value.error_code == "RESOURCE_ALREADY_EXISTS"
    client.update_registered_model(name, description="described")
    client.set_registered_model_tag(name, "a", "1")
    client.delete_registered_model_tag(name, "a")
    client.rename_registered_model(name, renamed)
    model = client.get_registered_model(renamed)
    assert (model.name, model.description, model.tags) == (renamed, "described", {})
    with pytest.raises(MlflowException) as err:
        client.get_registered_model(name)
    assert err.value.error_code == "RESOURCE_DOES_NOT_EXIST"
    client.delete_registered_model(renamed)
    client.create_registered_model(renamed)  # the name is free again


SOURCES_REJECTED = [
    "/etc/passwd",
    "file:///etc/passwd",
    "../../etc/passwd",
    "mlflow-artifacts:/1/../../secret",
    "mlflow-artifacts:/1/%2e%2e/%2e%2e/secret",
    "mlflow-artifacts:/1/%252e%252e/secret",
    "s3://bucket/path/../../other",
    "http://169.254.169.254/latest/meta-data",
    "runs:/someone-else/model",
    "models:/m-0123456789abcdef0123456789abcdef",
]


def test_repeated_registry_writes_are_not_taken_for_retries(client: MlflowClient) -> None:
    """No registry write derives an idempotency key from its content: moving an alias or a
    tag away and back must land every time."""
    name = _name()
    client.create_registered_model(name)
    run_id = _run(client)
    for _ in range(2):
        client.create_model_version(name, f"runs:/{run_id}/model", run_id)
    for version, value in (("1", "x"), ("2", "y"), ("1", "x")):
        client.set_registered_model_alias(name, "champion", version)
        client.set_registered_model_tag(name, "t", value)
    assert client.get_model_version_by_alias(name, "champion").version == "1"
    assert client.get_registered_model(name).tags["t"] == "x"


@pytest.mark.parametrize("source", SOURCES_REJECTED)
def test_unsafe_model_version_sources_are_rejected(
    server: EvtrackServer, client: MlflowClient, source: str
) -> None:
    name = _name()
    client.create_registered_model(name)
    run_id = _run(client)
    resp = _api(
        server,
        "POST",
        "mlflow/model-versions/create",
        {"name": name, "source": source, "run_id": run_id},
    )
    assert resp.status_code == 400, resp.text
    assert resp.json()["error_code"] == "INVALID_PARAMETER_VALUE"
    assert client.search_model_versions(f"name = '{name}'") == []


def test_artifact_source_inside_the_run_is_accepted(
    server: EvtrackServer, client: MlflowClient
) -> None:
    name = _name()
    client.create_registered_model(name)
    run_id = _run(client)
    run = client.get_run(run_id)
    source = f"{run.info.artifact_uri}/model"
    version = client.create_model_version(name, source, run_id=run_id)
    assert client.get_model_version_download_uri(name, version.version) == source
    elsewhere = _api(
        server,
        "POST",
        "mlflow/model-versions/create",
        {"name": name, "source": source, "run_id": _run(client)},
    )
    assert elsewhere.status_code == 400


def _history(server: EvtrackServer, name: str) -> list[dict[str, Any]]:
    resp = _api(server, "GET", "evtrack/audit/registered-models/history", name=name)
    assert resp.status_code == 200, resp.text
    events: list[dict[str, Any]] = resp.json()["events"]
    return events


def test_audit_history_and_as_of(server: EvtrackServer, client: MlflowClient) -> None:
    name = _name()
    _api(server, "POST", "mlflow/registered-models/create", {"name": name}, user="alice")
    run_id = _run(client)
    for _ in range(3):
        _api(
            server,
            "POST",
            "mlflow/model-versions/create",
            {"name": name, "source": f"runs:/{run_id}/m", "run_id": run_id},
            user="alice",
        )
    instants = []

    def promote(version: str, user: str) -> None:
        resp = _api(
            server,
            "POST",
            "mlflow/model-versions/transition-stage",
            {
                "name": name,
                "version": version,
                "stage": "Production",
                "archive_existing_versions": True,
            },
            user=user,
        )
        assert resp.status_code == 200, resp.text
        time.sleep(0.05)
        instants.append(int(time.time() * 1000))
        time.sleep(0.05)

    time.sleep(0.05)
    before_first = int(time.time() * 1000)
    time.sleep(0.05)
    promote("1", "bob")
    promote("2", "carol")
    promote("3", "dave")
    history = _history(server, name)
    # Authentication is off: every write is the local user's, and the name each request
    # claimed is kept as an unverified note.
    stage_changes = [
        (
            e["actor"],
            e.get("claimed_actor"),
            e["change"]["version"],
            e["change"]["to_stage"],
            e["change"]["reason"],
        )
        for e in history
        if e["type"] == "ModelVersionStageChanged"
    ]
    assert stage_changes == [
        ("local", "bob", 1, "Production", "transition"),
        ("local", "carol", 1, "Archived", "archived"),
        ("local", "carol", 2, "Production", "transition"),
        ("local", "dave", 2, "Archived", "archived"),
        ("local", "dave", 3, "Production", "transition"),
    ]
    assert [e["type"] for e in history[:4]] == [
        "RegisteredModelCreated",
        *["ModelVersionCreated"] * 3,
    ]
    assert all(e["request_id"] for e in history)
    for instant, expected in zip(instants, ["1", "2", "3"], strict=True):
        resp = _api(
            server, "GET", "evtrack/audit/registered-models/as-of", name=name, at=str(instant)
        )
        assert resp.status_code == 200, resp.text
        assert resp.json()["stages"]["Production"] == [expected]
    before = _api(
        server, "GET", "evtrack/audit/registered-models/as-of", name=name, at=str(before_first)
    )
    assert "Production" not in before.json()["stages"]


ADMIN_PASSWORD = "approval-admin-pw"


@pytest.fixture
def approval_server(evtrack_server_factory: Any) -> EvtrackServer:
    """Four-eyes approval needs identities: authentication on, with users alice and bob who
    may manage every registered model."""
    server: EvtrackServer = evtrack_server_factory(
        extra_args=["--require-approval", "Production", "--auth", "--default-permission", "MANAGE"],
        env={"EVTRACK_ADMIN_PASSWORD": ADMIN_PASSWORD},
    )
    for user in ("alice", "bob"):
        resp = requests.post(
            f"{server.url}/api/2.0/mlflow/users/create",
            json={"username": user, "password": f"{user}-pw"},
            auth=("admin", ADMIN_PASSWORD),
            timeout=10,
        )
        assert resp.status_code == 200, resp.text
    return server


def test_promotion_to_production_needs_an_approved_request(
    approval_server: EvtrackServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = approval_server
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", ADMIN_PASSWORD)
    client = MlflowClient(tracking_uri=server.url, registry_uri=server.url)
    name = _name()
    client.create_registered_model(name)
    run_id = _run(client)
    client.create_model_version(name, f"runs:/{run_id}/m", run_id=run_id)
    client.transition_model_version_stage(name, "1", "Staging")  # not gated
    with pytest.raises(MlflowException) as err:
        client.transition_model_version_stage(name, "1", "Production")
    assert err.value.error_code == "PERMISSION_DENIED"

    created = _api(
        server,
        "POST",
        "evtrack/registry/transition-requests/create",
        {"name": name, "version": "1", "stage": "production", "comment": "ship it"},
        user="alice",
    )
    assert created.status_code == 200, created.text
    request_id = created.json()["transition_request"]["request_id"]
    self_approval = _api(
        server,
        "POST",
        "evtrack/registry/transition-requests/approve",
        {"name": name, "request_id": request_id},
        user="alice",
    )
    assert self_approval.status_code == 403
    assert client.get_model_version(name, "1").current_stage == "Staging"
    approved = _api(
        server,
        "POST",
        "evtrack/registry/transition-requests/approve",
        {"name": name, "request_id": request_id, "comment": "lgtm"},
        user="bob",
    )
    assert approved.status_code == 200, approved.text
    assert approved.json()["transition_request"]["status"] == "APPROVED"
    assert client.get_model_version(name, "1").current_stage == "Production"
    again = _api(
        server,
        "POST",
        "evtrack/registry/transition-requests/approve",
        {"name": name, "request_id": request_id},
        user="bob",
    )
    assert again.status_code == 400

    second = _api(
        server,
        "POST",
        "evtrack/registry/transition-requests/create",
        {"name": name, "version": "1", "stage": "Archived"},
        user="alice",
    ).json()
    rejected = _api(
        server,
        "POST",
        "evtrack/registry/transition-requests/reject",
        {"name": name, "request_id": second["transition_request"]["request_id"], "comment": "no"},
        user="bob",
    )
    assert rejected.json()["transition_request"]["status"] == "REJECTED"
    listed = _api(server, "GET", "evtrack/registry/transition-requests/list", name=name).json()[
        "transition_requests"
    ]
    assert [(r["status"], r["requested_by"], r.get("decided_by")) for r in listed] == [
        ("APPROVED", "alice", "bob"),
        ("REJECTED", "alice", "bob"),
    ]
    kinds = [e["type"] for e in _history(server, name)]
    assert (
        kinds.count("TransitionRequested") == 2
        and "TransitionApproved" in kinds
        and "TransitionRejected" in kinds
    )


def _subscribe(
    server: EvtrackServer,
    received: list[dict[str, Any]],
    ready: threading.Event,
    stop: threading.Event,
    last_id: str | None = None,
    count: int = 1,
) -> None:
    headers = {"Last-Event-ID": last_id} if last_id else {}
    with requests.get(
        f"{server.url}/api/2.0/evtrack/events/stream",
        params={"types": "ModelVersionStageChanged"},
        headers=headers,
        stream=True,
        timeout=30,
    ) as resp:
        assert resp.status_code == 200
        event: dict[str, Any] = {}
        for raw in resp.iter_lines(decode_unicode=True):
            if raw.startswith(":"):
                ready.set()
                continue
            if not raw:
                if event:
                    received.append(event)
                    event = {}
                    if len(received) >= count or stop.is_set():
                        return
                continue
            field, _, value = raw.partition(": ")
            event[field] = value


def test_event_stream_delivers_promotions_and_resumes(
    server: EvtrackServer, client: MlflowClient
) -> None:
    name = _name()
    client.create_registered_model(name)
    run_id = _run(client)
    for _ in range(3):
        client.create_model_version(name, f"runs:/{run_id}/m", run_id=run_id)
    received: list[dict[str, Any]] = []
    ready, stop = threading.Event(), threading.Event()
    listener = threading.Thread(target=_subscribe, args=(server, received, ready, stop))
    listener.start()
    assert ready.wait(10)
    client.transition_model_version_stage(name, "1", "Staging")
    listener.join(20)
    assert not listener.is_alive()
    first = json.loads(received[0]["data"])
    assert received[0]["event"] == "ModelVersionStageChanged"
    assert (first["change"]["version"], first["change"]["to_stage"]) == (1, "Staging")

    # While nobody listens, two more promotions happen; a reconnect resumes without loss.
    client.transition_model_version_stage(name, "2", "Staging")
    client.transition_model_version_stage(name, "3", "Production")
    resumed: list[dict[str, Any]] = []
    ready2 = threading.Event()
    listener = threading.Thread(
        target=_subscribe, args=(server, resumed, ready2, stop, received[0]["id"], 2)
    )
    listener.start()
    listener.join(20)
    assert not listener.is_alive()
    mine = [json.loads(e["data"])["change"] for e in resumed]
    assert [(c["version"], c["to_stage"]) for c in mine] == [(2, "Staging"), (3, "Production")]


def test_rebuilding_the_registry_read_model_gives_the_same_answers(
    server: EvtrackServer, client: MlflowClient
) -> None:
    name = _name()
    client.create_registered_model(name, tags={"t": "1"})
    run_id = _run(client)
    for _ in range(3):
        client.create_model_version(name, f"runs:/{run_id}/m", run_id=run_id)
    client.transition_model_version_stage(name, "1", "Production")
    client.transition_model_version_stage(name, "2", "Production", archive_existing_versions=True)
    client.set_registered_model_alias(name, "champion", "2")
    client.delete_model_version(name, "3")

    def answers() -> list[Any]:
        return [
            _api(server, "GET", "mlflow/registered-models/get", name=name).json(),
            _api(server, "GET", "mlflow/model-versions/search", filter=f"name = '{name}'").json(),
            _api(
                server, "GET", "mlflow/registered-models/alias", name=name, alias="champion"
            ).json(),
            _api(server, "GET", "evtrack/audit/registered-models/history", name=name).json(),
        ]

    before = answers()
    rebuilt = subprocess.run(
        [
            sys.executable,
            "-m",
            "evtrack",
            "projections",
            "rebuild",
            "registry",
            "--database-url",
            server.dsn,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert "rebuilt registry" in rebuilt.stdout
    assert answers() == before
    # The live projector goes on after the swap.
    client.set_registered_model_alias(name, "champion", "1")
    assert client.get_model_version_by_alias(name, "champion").version == "1"

"""Two other ways to know who acts: an authenticating proxy's user header, trusted only from
the proxy's address; and no authentication, where every write is the local user's and a
claimed name is only an unverified note."""

from __future__ import annotations

import uuid
from typing import Any

import requests
from _support.server import EvtrackServer

from auth.conftest import ADMIN_PASSWORD


def _proxy_server(factory: Any, trusted: str) -> EvtrackServer:
    server: EvtrackServer = factory(
        extra_args=[
            "--auth",
            "--auth-proxy-header",
            "X-Forwarded-User",
            "--auth-trusted-proxies",
            trusted,
        ],
        env={"EVTRACK_ADMIN_PASSWORD": ADMIN_PASSWORD},
    )
    return server


def _create(server: EvtrackServer, headers: dict[str, str]) -> requests.Response:
    return requests.post(
        f"{server.url}/api/2.0/mlflow/experiments/create",
        json={"name": f"p-{uuid.uuid4().hex[:8]}"},
        headers=headers,
        timeout=10,
    )


def test_a_trusted_proxy_names_the_user(evtrack_server_factory: Any) -> None:
    server = _proxy_server(evtrack_server_factory, "127.0.0.1/32")
    created = _create(server, {"X-Forwarded-User": "dana@example.com"})
    assert created.status_code == 200, created.text
    experiment_id = created.json()["experiment_id"]
    history = requests.get(
        f"{server.url}/api/2.0/evtrack/audit/experiments/history",
        params={"experiment_id": experiment_id},
        headers={"X-Forwarded-User": "dana@example.com"},
        timeout=10,
    ).json()
    assert history["events"][0]["actor"] == "dana@example.com"
    # Without the header, the proxy vouched for nobody.
    assert _create(server, {}).status_code == 401


def test_a_user_header_from_anyone_else_is_ignored(evtrack_server_factory: Any) -> None:
    server = _proxy_server(evtrack_server_factory, "10.255.0.0/16")  # not this test's address
    assert _create(server, {"X-Forwarded-User": "admin"}).status_code == 401
    # Real credentials still work.
    resp = requests.post(
        f"{server.url}/api/2.0/mlflow/experiments/create",
        json={"name": f"p-{uuid.uuid4().hex[:8]}"},
        auth=("admin", ADMIN_PASSWORD),
        timeout=10,
    )
    assert resp.status_code == 200, resp.text


def test_without_auth_a_claimed_name_is_only_a_note(evtrack_server: EvtrackServer) -> None:
    created = requests.post(
        f"{evtrack_server.url}/api/2.0/mlflow/experiments/create",
        json={"name": f"l-{uuid.uuid4().hex[:8]}"},
        headers={"X-Evtrack-User": "cto"},
        timeout=10,
    )
    assert created.status_code == 200, created.text
    history = requests.get(
        f"{evtrack_server.url}/api/2.0/evtrack/audit/experiments/history",
        params={"experiment_id": created.json()["experiment_id"]},
        timeout=10,
    ).json()
    event = history["events"][0]
    assert (event["actor"], event["claimed_actor"]) == ("local", "cto")
    # The user routes do not exist without authentication, as on MLflow.
    users = requests.get(f"{evtrack_server.url}/api/2.0/mlflow/users/list", timeout=10)
    assert users.status_code == 404

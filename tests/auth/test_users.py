"""MLflow's auth API, driven by the official ``AuthServiceClient`` against ``--auth``.

Users are created, read, listed, updated and deleted as MLflow's basic-auth app does them;
answers follow the reference (401 without valid credentials, 403 when not allowed, 400 for
bad arguments), password hashes are never answered, and every change is in the audit trail.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import pytest
import requests
from _support.server import EvtrackServer
from mlflow.exceptions import RestException
from mlflow.server.auth.client import AuthServiceClient

from auth.conftest import ADMIN, ADMIN_PASSWORD, User, basic, new_user


def _as(monkeypatch: pytest.MonkeyPatch, user: User) -> AuthServiceClient:
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", user.name)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", user.password)
    monkeypatch.delenv("MLFLOW_TRACKING_TOKEN", raising=False)
    return AuthServiceClient(user.server.url)


def test_admin_manages_users_with_the_official_client(
    admin: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = _as(monkeypatch, admin)
    name = f"alice-{uuid.uuid4().hex[:6]}"
    created = client.create_user(name, "alice-pw-1")
    assert (created.username, created.is_admin) == (name, False)
    assert isinstance(created.id, int) and created.id > 1  # the admin is user 1
    assert client.get_user(name).id == created.id

    with pytest.raises(RestException) as dup:
        client.create_user(name, "other")
    assert dup.value.error_code == "RESOURCE_ALREADY_EXISTS"

    client.update_user_admin(name, True)
    assert client.get_user(name).is_admin is True
    client.update_user_admin(name, False)
    client.update_user_password(name, "alice-pw-2")  # an admin needs no current password
    alice = User(admin.server, name, "alice-pw-2")
    assert alice.call("GET", "mlflow/users/current").json()["user"]["username"] == name

    client.delete_user(name)
    with pytest.raises(RestException) as gone:
        client.get_user(name)
    assert gone.value.error_code == "RESOURCE_DOES_NOT_EXIST"
    assert alice.call("GET", "mlflow/users/current").status_code == 401


def test_answers_never_carry_a_password_hash(admin: User) -> None:
    user = new_user(admin)
    for resp in (
        admin.call("GET", "mlflow/users/get", username=user.name),
        admin.call("GET", "mlflow/users/list"),
        user.call("GET", "mlflow/users/current"),
        admin.call("GET", "evtrack/audit/users/history", username=user.name),
    ):
        assert resp.status_code == 200, resp.text
        assert "argon2" not in resp.text and user.password not in resp.text
    history = admin.call("GET", "evtrack/audit/users/history", username=user.name).json()
    created = history["events"][0]
    assert created["type"] == "UserCreated" and created["actor"] == ADMIN
    assert created["change"]["password_hash"] == "REDACTED"


def test_credentials_are_checked(secured: EvtrackServer, admin: User) -> None:
    url = f"{secured.url}/api/2.0/mlflow/experiments/search"
    body = {"max_results": 1}
    anonymous = requests.post(url, json=body, timeout=10)
    assert anonymous.status_code == 401
    assert anonymous.json()["error_code"] == "UNAUTHENTICATED"
    assert anonymous.headers["WWW-Authenticate"].startswith("Basic")
    wrong = requests.post(url, json=body, headers={"Authorization": basic(ADMIN, "x")}, timeout=10)
    assert wrong.status_code == 401
    unknown = requests.post(url, json=body, auth=("nobody-at-all", "x"), timeout=10)
    assert unknown.status_code == 401
    garbage = requests.post(url, json=body, headers={"Authorization": "Basic %%%"}, timeout=10)
    assert garbage.status_code == 401
    token = requests.post(url, json=body, headers={"Authorization": "Bearer nope"}, timeout=10)
    assert token.status_code == 401
    assert requests.post(url, json=body, auth=admin.auth, timeout=10).status_code == 200
    # Liveness and version need no credentials (load balancers, the client's probe).
    assert requests.get(f"{secured.url}/health", timeout=10).status_code == 200
    assert requests.get(f"{secured.url}/version", timeout=10).status_code == 200


def test_non_admins_cannot_manage_users(admin: User, monkeypatch: pytest.MonkeyPatch) -> None:
    bob = new_user(admin, "bob")
    carol = new_user(admin, "carol")
    client = _as(monkeypatch, bob)
    for attempt in (
        lambda: client.create_user(f"x-{uuid.uuid4().hex[:6]}", "pw"),
        lambda: client.update_user_admin(bob.name, True),
        lambda: client.delete_user(carol.name),
        lambda: client.get_user(carol.name),
        lambda: client.update_user_password(carol.name, "taken-over"),
    ):
        with pytest.raises(RestException) as err:
            attempt()
        assert err.value.error_code == "PERMISSION_DENIED"
    assert client.get_user(bob.name).username == bob.name  # yourself: fine


def test_changing_your_own_password_needs_the_current_one(
    admin: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    bob = new_user(admin, "bob")
    client = _as(monkeypatch, bob)
    with pytest.raises(RestException) as missing:
        client.update_user_password(bob.name, "new-pw-1")
    assert missing.value.error_code == "INVALID_PARAMETER_VALUE"
    with pytest.raises(RestException) as wrong:
        client.update_user_password(bob.name, "new-pw-1", current_password="not-it")
    assert "does not match" in str(wrong.value)
    with pytest.raises(RestException) as same:
        client.update_user_password(bob.name, bob.password, current_password=bob.password)
    assert "must differ" in str(same.value)
    client.update_user_password(bob.name, "new-pw-1", current_password=bob.password)
    assert bob.call("GET", "mlflow/users/current").status_code == 401  # old password
    renewed = User(bob.server, bob.name, "new-pw-1")
    assert renewed.call("GET", "mlflow/users/current").status_code == 200


def test_bad_arguments_are_400s(admin: User) -> None:
    for body in (
        {"username": "", "password": "x"},
        {"username": "has:colon", "password": "x"},
        {"username": "ok-name", "password": ""},
        {"username": "tab\tname", "password": "x"},
    ):
        resp = admin.call("POST", "mlflow/users/create", body)
        assert resp.status_code == 400, (body, resp.text)
    resp = admin.call(
        "POST",
        "mlflow/users/permissions/grant",
        {"username": ADMIN, "resource_type": "experiment", "resource_id": "0", "permission": "X"},
        api="3.0",
    )
    assert resp.status_code == 400 and "Invalid permission" in resp.json()["message"]
    resp = admin.call(
        "POST",
        "mlflow/users/permissions/grant",
        {"username": ADMIN, "resource_type": "workspace", "resource_id": "0", "permission": "READ"},
        api="3.0",
    )
    assert resp.status_code == 400
    self_delete = admin.call("DELETE", "mlflow/users/delete", {"username": ADMIN})
    assert self_delete.status_code == 400


def test_the_first_admin_needs_a_password(fresh_database_dsn: str) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "evtrack",
            "server",
            "--auth",
            "--port",
            "0",
            "--database-url",
            fresh_database_dsn,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in os.environ.items() if k != "EVTRACK_ADMIN_PASSWORD"},
    )
    assert result.returncode == 2
    assert "EVTRACK_ADMIN_PASSWORD" in result.stderr
    assert "no default password" in result.stderr.lower()
    assert ADMIN_PASSWORD not in result.stderr

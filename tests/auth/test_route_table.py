"""Deny by default: every route of the route table, on every prefix it is mounted under, is
refused to a caller without credentials (401) and to a signed-in user who holds no
permission (403), on a server whose default permission is NO_PERMISSIONS.

The only routes open to them are named here, each with its reason; a route added later
without a permission cannot even be registered (``Route`` refuses it), and one added with a
permission is walked by this test.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest
import requests
from _support.server import EvtrackServer

from auth.conftest import ADMIN, ADMIN_PASSWORD, User, auth_server, new_user
from evtrack.api import all_routes
from evtrack.api._app import DEFAULT_PREFIXES
from evtrack.api.console import STATIC_PATHS
from evtrack.permissions import Permission

# Open without credentials: liveness, readiness and version for probes and the client's
# version check; server-info, which MLflow serves without auth so a client can read how the
# server is configured; the web UI's static files (public code, as on MLflow; the page that
# loads them asks for credentials) and the console's (code shipped in the package, no data).
PUBLIC = {
    "/health",
    "/ready",
    "/version",
    "/mlflow/server-info",
    "/static-files/{path:.+}",
    *STATIC_PATHS,
}

# Open to every signed-in user, about no resource at all: the console's home (and the redirect
# to it), which links to its pages, each of which declares its own permission.
SIGNED_IN = {"/console", "/console/"}

# Open to every signed-in user, about their own account only (each is also checked against
# another user's account below): who am I, my tokens, my password, my permissions, my
# history; and the user list, which MLflow's UI needs to name reviewers.
SELF_SERVICE = {
    "/mlflow/users/current",
    "/mlflow/users/get",
    "/mlflow/users/list",
    "/mlflow/users/update-password",
    "/mlflow/users/permissions/get",
    "/evtrack/tokens/create",
    "/evtrack/tokens/list",
    "/evtrack/tokens/revoke",
    "/evtrack/audit/users/history",
}


# Open to every signed-in user because they hold no data: the web UI's page (its data comes
# from the guarded API) and the constant answers of features evtrack does not have (no AI
# gateway, no assistant, no MCP servers, UI telemetry off).
EMPTY_SHELL = {
    "/",
    "/mlflow/gateway-proxy",
    "/mlflow/assistant/config",
    "/mlflow/assistant/providers",
    "/mlflow/mcp-servers",
    "/mlflow/ui-telemetry",
}


@pytest.fixture(scope="module")
def locked(
    postgres_admin_dsn: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[EvtrackServer]:
    yield from auth_server(
        postgres_admin_dsn, tmp_path_factory, ("--default-permission", "NO_PERMISSIONS")
    )


@pytest.fixture(scope="module")
def world(locked: EvtrackServer) -> dict[str, Any]:
    """Resources owned by the admin, for the routes to name."""
    admin = User(locked, ADMIN, ADMIN_PASSWORD)
    nobody = new_user(admin, "nobody")
    experiment_name = f"e-{uuid.uuid4().hex[:8]}"
    exp = admin.call("POST", "mlflow/experiments/create", {"name": experiment_name})
    experiment_id = exp.json()["experiment_id"]
    run = admin.call("POST", "mlflow/runs/create", {"experiment_id": experiment_id})
    run_id = run.json()["run"]["info"]["run_id"]
    model = f"m-{uuid.uuid4().hex[:8]}"
    admin.call("POST", "mlflow/registered-models/create", {"name": model})
    admin.call(
        "POST",
        "mlflow/model-versions/create",
        {"name": model, "source": f"runs:/{run_id}/model", "run_id": run_id},
    )
    logged = admin.call(
        "POST", "mlflow/logged-models", {"experiment_id": experiment_id, "name": "lm"}
    )
    assert logged.status_code == 200, logged.text
    return {
        "admin": admin,
        "nobody": nobody,
        "experiment_id": experiment_id,
        "experiment_name": experiment_name,
        "run_id": run_id,
        "model": model,
        "model_id": logged.json()["model"]["info"]["model_id"],
    }


def _fields(world: dict[str, Any], username: str) -> dict[str, Any]:
    return {
        "experiment_id": world["experiment_id"],
        "experiment_ids": [world["experiment_id"]],
        "experiment_name": world["experiment_name"],
        "run_id": world["run_id"],
        "run_uuid": world["run_id"],
        "run_ids": [world["run_id"]],
        "name": world["model"],
        "new_name": f"{world['model']}-2",
        "version": "1",
        "stage": "Staging",
        "alias": "champion",
        "key": "k",
        "value": "v",
        "metric_key": "m",
        "path": f"{world['experiment_id']}/file.txt",
        "username": username,
        "password": "pw-new-1",
        "resource_type": "experiment",
        "resource_id": world["experiment_id"],
        "permission": "READ",
        "token_id": "0000",
        "request_id": "r",
        "at": "0",
        "query": "{ test }",
        "is_admin": True,
        "description": "d",
        "source": f"runs:/{world['run_id']}/model",
    }


def _url(server: EvtrackServer, prefix: str, path: str, world: dict[str, Any]) -> str:
    path = path.replace("{model_id}", world["model_id"]).replace("{tag_key:.+}", "k")
    path = path.replace("{path:.+}", f"{world['experiment_id']}/file.txt")
    if path.startswith("/static-files/"):
        path = "/static-files/missing.js"
    assert not re.search(r"\{", path), path
    return f"{server.url}{prefix}{path}"


def _send(
    server: EvtrackServer,
    method: str,
    prefix: str,
    path: str,
    world: dict[str, Any],
    auth: tuple[str, str] | None,
    username: str,
) -> int:
    url = _url(server, prefix, path, world)
    fields = _fields(world, username)
    if path == "/evtrack/ingest":
        body = msgspec.msgpack.encode(
            {"records": [{"run_id": world["run_id"], "params": [{"key": "p", "value": "1"}]}]}
        )
        resp = requests.post(
            url,
            data=body,
            headers={"Content-Type": "application/msgpack"},
            auth=auth,
            timeout=30,
        )
        return resp.status_code
    if method == "GET":
        resp = requests.get(url, params=fields, auth=auth, timeout=30, stream=True)
    elif path.startswith("/mlflow-artifacts/"):
        resp = requests.request(
            method,
            url,
            data=b"x",
            headers={"Content-Type": "application/octet-stream"},
            auth=auth,
            timeout=30,
            stream=True,
        )
    else:
        resp = requests.request(method, url, json=fields, auth=auth, timeout=30, stream=True)
    status = resp.status_code
    resp.close()
    return status


def _mounted() -> list[tuple[str, str, str, Permission]]:
    return [
        (r.method, prefix, r.path, r.permission)
        for r in all_routes()
        for prefix in (r.prefixes or DEFAULT_PREFIXES)
    ]


def test_every_route_refuses_the_anonymous_and_the_unpermitted(
    locked: EvtrackServer, world: dict[str, Any]
) -> None:
    nobody: User = world["nobody"]
    open_to_nobody = []
    failures = []
    for method, prefix, path, permission in _mounted():
        anonymous = _send(locked, method, prefix, path, world, None, nobody.name)
        signed_in = _send(locked, method, prefix, path, world, nobody.auth, nobody.name)
        where = f"{method} {prefix}{path}"
        if path in PUBLIC:
            assert permission is Permission.NONE, where
            if anonymous in (401, 403):
                failures.append(f"{where}: public route answered {anonymous}")
            continue
        if anonymous != 401:
            failures.append(f"{where}: anonymous got {anonymous}, not 401")
        if path in EMPTY_SHELL or path in SIGNED_IN:
            open_to_nobody.append(where)
            if signed_in in (401, 403):
                failures.append(f"{where}: refused a signed-in user with {signed_in}")
            continue
        if path in SELF_SERVICE:
            open_to_nobody.append(where)
            if signed_in in (401, 403):
                failures.append(f"{where}: own account refused with {signed_in}")
            other = _send(locked, method, prefix, path, world, nobody.auth, ADMIN)
            if path != "/mlflow/users/list" and path != "/mlflow/users/current" and other != 403:
                failures.append(f"{where}: another user's account answered {other}, not 403")
        elif signed_in != 403:
            failures.append(f"{where}: a user without permissions got {signed_in}, not 403")
    assert not failures, "\n".join(failures)
    assert len(_mounted()) > 150  # the walk covered the whole table, every prefix


def test_an_admin_passes_every_guard(locked: EvtrackServer, world: dict[str, Any]) -> None:
    """The other side of the walk: the guards let the permitted through (so the 403s above
    are the permission's doing, not a locator that refuses everyone)."""
    admin: User = world["admin"]
    refused = []
    for method, prefix, path, _ in _mounted():
        if path in (
            "/mlflow/users/delete",
            "/mlflow/users/update-password",
            "/mlflow/registered-models/delete",
            "/mlflow/registered-models/rename",
            "/mlflow/experiments/delete",
            "/mlflow/users/update-admin",
        ):
            continue  # destructive for the fixtures; their guards are walked above
        status = _send(locked, method, prefix, path, world, admin.auth, ADMIN)
        if status in (401, 403):
            refused.append(f"{method} {prefix}{path}: {status}")
    assert not refused, "\n".join(refused)

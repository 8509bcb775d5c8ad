"""A server with authentication on, shared per module, and helpers to act as its users."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import requests
from _support.server import EvtrackServer, module_server

ADMIN = "admin"
ADMIN_PASSWORD = "admin-secret-Pw1"


@dataclass
class User:
    """A user of the server under test, with helpers that send its credentials."""

    server: EvtrackServer
    name: str
    password: str

    @property
    def auth(self) -> tuple[str, str]:
        return (self.name, self.password)

    def call(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        *,
        api: str = "2.0",
        headers: dict[str, str] | None = None,
        **params: Any,
    ) -> requests.Response:
        return requests.request(
            method,
            f"{self.server.url}/api/{api}/{path}",
            json=body,
            params=params or None,
            auth=self.auth,
            headers=headers,
            timeout=30,
        )

    def env(self) -> dict[str, str]:
        return {"MLFLOW_TRACKING_USERNAME": self.name, "MLFLOW_TRACKING_PASSWORD": self.password}


def basic(name: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{name}:{password}".encode()).decode()


def auth_server(
    postgres_admin_dsn: str,
    tmp_path_factory: pytest.TempPathFactory,
    extra_args: tuple[str, ...] = (),
) -> Iterator[EvtrackServer]:
    yield from module_server(
        postgres_admin_dsn,
        tmp_path_factory,
        "auth-server",
        extra_args=("--auth", *extra_args),
        env={"EVTRACK_ADMIN_PASSWORD": ADMIN_PASSWORD},
    )


@pytest.fixture(scope="module")
def secured(
    postgres_admin_dsn: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[EvtrackServer]:
    """``evtrack server --auth`` with the default permission (READ)."""
    yield from auth_server(postgres_admin_dsn, tmp_path_factory)


@pytest.fixture
def admin(secured: EvtrackServer) -> User:
    return User(secured, ADMIN, ADMIN_PASSWORD)


def new_user(admin: User, prefix: str = "user", *, is_admin: bool = False) -> User:
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    password = f"pw-{uuid.uuid4().hex}"
    resp = admin.call("POST", "mlflow/users/create", {"username": name, "password": password})
    assert resp.status_code == 200, resp.text
    if is_admin:
        resp = admin.call(
            "PATCH", "mlflow/users/update-admin", {"username": name, "is_admin": True}
        )
        assert resp.status_code == 200, resp.text
    return User(admin.server, name, password)

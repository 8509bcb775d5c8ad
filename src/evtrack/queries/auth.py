"""Reads of the access read model, and of the owners that name a resource's experiment.

Authentication reads a user or a token; authorization reads one user's grants on one
resource, or all their grants of a type (to filter a search); the experiment behind a run,
logged model or artifact path comes from the tracking read models.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

import asyncpg

from evtrack.eventlog import Conn

Executor: TypeAlias = "Conn | asyncpg.Pool[Any]"


@dataclass(frozen=True)
class UserRecord:
    username: str
    user_id: int
    password_hash: str
    is_admin: bool

    def to_wire(self) -> dict[str, Any]:
        """MLflow's User: never the hash."""
        return {"id": self.user_id, "username": self.username, "is_admin": self.is_admin}


@dataclass(frozen=True)
class TokenRecord:
    token_id: str
    username: str
    name: str
    created_at: int
    expires_at: int | None
    revoked: bool

    def to_wire(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "token_id": self.token_id,
            "username": self.username,
            "name": self.name,
            "created_at": self.created_at,
            "revoked": self.revoked,
        }
        if self.expires_at is not None:
            body["expires_at"] = self.expires_at
        return body


def _user(row: Any) -> UserRecord:
    return UserRecord(row["username"], row["user_id"], row["password_hash"], row["is_admin"])


def _token(row: Any) -> TokenRecord:
    return TokenRecord(
        row["token_id"],
        row["username"],
        row["name"],
        row["created_at"],
        row["expires_at"],
        row["revoked"],
    )


async def user(db: Executor, username: str) -> UserRecord | None:
    row = await db.fetchrow(
        """SELECT username, user_id, password_hash, is_admin FROM rm_auth.users
           WHERE username = $1""",
        username,
    )
    return None if row is None else _user(row)


async def user_key(db: Executor, username: str) -> str | None:
    """The key of the user's stream, whose events are their account's history."""
    key: str | None = await db.fetchval(
        "SELECT user_key FROM rm_auth.users WHERE username = $1", username
    )
    return key


async def users(db: Executor) -> list[UserRecord]:
    rows = await db.fetch(
        "SELECT username, user_id, password_hash, is_admin FROM rm_auth.users ORDER BY user_id"
    )
    return [_user(r) for r in rows]


async def token_owner(db: Executor, token_hash: str) -> tuple[TokenRecord, UserRecord] | None:
    """The live token with this hash and its user; None if unknown or revoked."""
    row = await db.fetchrow(
        """SELECT t.token_id, t.username, t.name, t.created_at, t.expires_at, t.revoked,
                  u.user_id, u.password_hash, u.is_admin
           FROM rm_auth.access_tokens t JOIN rm_auth.users u USING (username)
           WHERE t.token_hash = $1 AND NOT t.revoked""",
        token_hash,
    )
    return None if row is None else (_token(row), _user(row))


async def tokens(db: Executor, username: str) -> list[TokenRecord]:
    rows = await db.fetch(
        """SELECT token_id, username, name, created_at, expires_at, revoked
           FROM rm_auth.access_tokens WHERE username = $1 ORDER BY created_at, token_id""",
        username,
    )
    return [_token(r) for r in rows]


async def grants_of_type(db: Executor, username: str, resource_type: str) -> dict[str, str]:
    """``resource_id -> permission`` for every grant the user holds on resources of a type
    (``*`` included)."""
    rows = await db.fetch(
        """SELECT resource_id, permission FROM rm_auth.grants
           WHERE username = $1 AND resource_type = $2""",
        username,
        resource_type,
    )
    return {r["resource_id"]: r["permission"] for r in rows}


async def grants_on(
    db: Executor, username: str, resource_type: str, resource_id: str
) -> dict[str, str]:
    """The user's grants on one resource and on every resource of its type (``*``)."""
    rows = await db.fetch(
        """SELECT resource_id, permission FROM rm_auth.grants
           WHERE username = $1 AND resource_type = $2 AND resource_id IN ($3, '*')""",
        username,
        resource_type,
        resource_id,
    )
    return {r["resource_id"]: r["permission"] for r in rows}


async def experiment_of_run(db: Executor, run_id: str) -> str | None:
    value = await db.fetchval("SELECT experiment_id FROM rm_runs.runs WHERE run_id = $1", run_id)
    return None if value is None else str(value)


async def experiment_of_logged_model(db: Executor, model_id: str) -> str | None:
    value = await db.fetchval(
        "SELECT experiment_id FROM rm_logged_models.logged_models WHERE model_id = $1", model_id
    )
    return None if value is None else str(value)


async def experiment_id_by_name(db: Executor, name: str) -> str | None:
    value = await db.fetchval(
        "SELECT experiment_id FROM rm_experiments.experiments WHERE name = $1", name
    )
    return None if value is None else str(value)


async def model_name(db: Executor, model_key: str) -> str | None:
    name: str | None = await db.fetchval(
        "SELECT name FROM rm_registry.registered_models WHERE model_key = $1", model_key
    )
    return name


async def experiments_of_runs(db: Executor, run_ids: Sequence[str]) -> dict[str, str]:
    rows = await db.fetch(
        "SELECT run_id, experiment_id FROM rm_runs.runs WHERE run_id = ANY($1::text[])",
        list(run_ids),
    )
    return {r["run_id"]: str(r["experiment_id"]) for r in rows}

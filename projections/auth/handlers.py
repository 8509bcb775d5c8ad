"""Folds user, token and grant events, and the creations that make their creator an owner.

Every batch that changes who may do what ends with a NOTIFY on ``evtrack_access`` (delivered
at commit), so each API process drops the access decisions it cached.
"""

from __future__ import annotations

from evtrack.events import (
    AccessTokenCreated,
    AccessTokenRevoked,
    ExperimentCreated,
    PermissionGranted,
    PermissionRevoked,
    RegisteredModelCreated,
    RegisteredModelDeleted,
    RegisteredModelRenamed,
    UserAdminChanged,
    UserCreated,
    UserDeleted,
    UserPasswordChanged,
)
from evtrack.permissions import ACCESS_CHANNEL
from evtrack.projector import Conn, Projection, RecordedEvent, load_schema

projection = Projection("auth", load_schema("evtrack.projections.auth"))


async def _changed(conn: Conn, rec: RecordedEvent) -> None:
    await conn.execute(
        "SELECT pg_notify($1, $2)", ACCESS_CHANNEL, str(rec.position.global_position)
    )


@projection.on(UserCreated)
async def _user_created(conn: Conn, e: UserCreated, rec: RecordedEvent) -> None:
    await conn.execute(
        """INSERT INTO users (username, user_key, user_id, password_hash, is_admin, created_at)
           VALUES ($1, $2, nextval('user_ids'), $3, $4, $5)""",
        e.username,
        e.user_key,
        e.password_hash,
        e.is_admin,
        rec.recorded_at_ms,
    )
    await _changed(conn, rec)


@projection.on(UserPasswordChanged)
async def _password(conn: Conn, e: UserPasswordChanged, rec: RecordedEvent) -> None:
    await conn.execute(
        "UPDATE users SET password_hash = $2 WHERE user_key = $1", e.user_key, e.password_hash
    )
    await _changed(conn, rec)


@projection.on(UserAdminChanged)
async def _admin(conn: Conn, e: UserAdminChanged, rec: RecordedEvent) -> None:
    await conn.execute("UPDATE users SET is_admin = $2 WHERE user_key = $1", e.user_key, e.is_admin)
    await _changed(conn, rec)


@projection.on(UserDeleted)
async def _user_deleted(conn: Conn, e: UserDeleted, rec: RecordedEvent) -> None:
    await conn.execute("DELETE FROM users WHERE user_key = $1", e.user_key)
    await conn.execute("DELETE FROM access_tokens WHERE username = $1", e.username)
    await conn.execute("DELETE FROM grants WHERE username = $1", e.username)
    await _changed(conn, rec)


@projection.on(AccessTokenCreated)
async def _token_created(conn: Conn, e: AccessTokenCreated, rec: RecordedEvent) -> None:
    await conn.execute(
        """INSERT INTO access_tokens (token_hash, token_id, username, name, created_at,
                                      expires_at)
           VALUES ($1, $2, $3, $4, $5, $6)""",
        e.token_hash,
        e.token_id,
        e.username,
        e.name,
        rec.recorded_at_ms,
        e.expires_at_ms,
    )
    await _changed(conn, rec)


@projection.on(AccessTokenRevoked)
async def _token_revoked(conn: Conn, e: AccessTokenRevoked, rec: RecordedEvent) -> None:
    await conn.execute("UPDATE access_tokens SET revoked = true WHERE token_id = $1", e.token_id)
    await _changed(conn, rec)


async def _set_grant(
    conn: Conn, username: str, kind: str, resource_id: str, level: str, source: str
) -> None:
    await conn.execute(
        """INSERT INTO grants (username, resource_type, resource_id, permission, source)
           VALUES ($1, $2, $3, $4, $5)
           ON CONFLICT (username, resource_type, resource_id)
           DO UPDATE SET permission = EXCLUDED.permission, source = EXCLUDED.source""",
        username,
        kind,
        resource_id,
        level,
        source,
    )


@projection.on(PermissionGranted)
async def _granted(conn: Conn, e: PermissionGranted, rec: RecordedEvent) -> None:
    await _set_grant(conn, e.username, e.resource_type, e.resource_id, e.permission, "grant")
    await _changed(conn, rec)


@projection.on(PermissionRevoked)
async def _revoked(conn: Conn, e: PermissionRevoked, rec: RecordedEvent) -> None:
    await conn.execute(
        "DELETE FROM grants WHERE username = $1 AND resource_type = $2 AND resource_id = $3",
        e.username,
        e.resource_type,
        e.resource_id,
    )
    await _changed(conn, rec)


@projection.on(ExperimentCreated)
async def _experiment_created(conn: Conn, e: ExperimentCreated, rec: RecordedEvent) -> None:
    # The creator owns it (MLflow grants the creator MANAGE); the actor is authenticated.
    await _set_grant(conn, rec.actor, "experiment", str(e.experiment_id), "MANAGE", "owner")
    await _changed(conn, rec)


@projection.on(RegisteredModelCreated)
async def _model_created(conn: Conn, e: RegisteredModelCreated, rec: RecordedEvent) -> None:
    # A name can be reused after a delete; grants on the old model went with it.
    await conn.execute(
        "DELETE FROM grants WHERE resource_type = 'registered_model' AND resource_id = $1",
        e.name,
    )
    await _set_grant(conn, rec.actor, "registered_model", e.name, "MANAGE", "owner")
    await _changed(conn, rec)


@projection.on(RegisteredModelRenamed)
async def _model_renamed(conn: Conn, e: RegisteredModelRenamed, rec: RecordedEvent) -> None:
    await conn.execute(
        """UPDATE grants SET resource_id = $2
           WHERE resource_type = 'registered_model' AND resource_id = $1""",
        e.old_name,
        e.name,
    )
    await _changed(conn, rec)


@projection.on(RegisteredModelDeleted)
async def _model_deleted(conn: Conn, e: RegisteredModelDeleted, rec: RecordedEvent) -> None:
    await conn.execute(
        "DELETE FROM grants WHERE resource_type = 'registered_model' AND resource_id = $1",
        e.name,
    )
    await _changed(conn, rec)

"""Events of users, their credentials and their permissions.

Stream: ``user-<key>``, where the key is fixed when the user is created; the username is a
reserved name that points at it, so a deleted user's name can be given to a new user without
the two histories mixing. Grants and revocations are events of the grantee's stream, so the
audit trail says who gave whom what, and when.

Credentials are stored only as hashes: a password as a salted, slow hash (argon2id), an
access token as the SHA-256 of its random secret (a token is 256 random bits, so a fast hash
cannot be searched). Every outward view of the log (audit, event stream, export for users)
leaves the hash fields out.
"""

from __future__ import annotations

from evtrack.events._base import Event
from evtrack.events._constraints import Int64, Text

SECRET_FIELDS = frozenset({"password_hash", "token_hash"})
"""Payload fields no outward view of the log may show."""


class UserCreated(Event, frozen=True):
    user_key: Text
    username: Text
    password_hash: Text
    is_admin: bool = False


class UserPasswordChanged(Event, frozen=True):
    user_key: Text
    username: Text
    password_hash: Text


class UserAdminChanged(Event, frozen=True):
    user_key: Text
    username: Text
    is_admin: bool


class UserDeleted(Event, frozen=True):
    user_key: Text
    username: Text


class AccessTokenCreated(Event, frozen=True):
    user_key: Text
    username: Text
    token_id: Text
    token_hash: Text
    name: Text
    expires_at_ms: Int64 | None = None


class AccessTokenRevoked(Event, frozen=True):
    user_key: Text
    username: Text
    token_id: Text


class PermissionGranted(Event, frozen=True):
    """``resource_id`` is an experiment id, a registered model name, or ``*`` for every
    resource of the type (including ones created later)."""

    user_key: Text
    username: Text
    resource_type: Text
    resource_id: Text
    permission: Text


class PermissionRevoked(Event, frozen=True):
    user_key: Text
    username: Text
    resource_type: Text
    resource_id: Text

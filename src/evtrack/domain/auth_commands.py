"""Typed commands of users, access tokens and permission grants.

Secrets never reach the domain: the application hashes a password (slowly, off the event
loop) or a token before building the command, so commands, events and logs only ever hold
hashes. Who acts is the context's principal; whether that principal may act at all (admin,
or MANAGE on the resource) is the API's authorization, decided before the command runs.
"""

from __future__ import annotations

from typing import Any, ClassVar

from evtrack.domain.commands import Command


class CreateUser(Command, frozen=True, kw_only=True):
    """Answers the new user's key."""

    result_type: ClassVar[type[Any]] = str

    username: str
    password_hash: str
    is_admin: bool = False


class EnsureFirstAdmin(Command, frozen=True, kw_only=True):
    """Create the first admin when no user was ever bootstrapped; answers whether it did.

    ``password_hash`` None means the operator gave no password: fine once bootstrapped,
    refused (with a message that says what to set) when there is no admin yet.
    """

    result_type: ClassVar[type[Any]] = bool

    username: str
    password_hash: str | None


class ChangePassword(Command, frozen=True, kw_only=True):
    username: str
    password_hash: str


class SetAdmin(Command, frozen=True, kw_only=True):
    username: str
    is_admin: bool


class DeleteUser(Command, frozen=True, kw_only=True):
    username: str


class CreateAccessToken(Command, frozen=True, kw_only=True):
    username: str
    token_id: str
    token_hash: str
    name: str
    expires_at_ms: int | None = None


class RevokeAccessToken(Command, frozen=True, kw_only=True):
    username: str
    token_id: str


class GrantPermission(Command, frozen=True, kw_only=True):
    username: str
    resource_type: str
    resource_id: str
    permission: str


class RevokePermission(Command, frozen=True, kw_only=True):
    username: str
    resource_type: str
    resource_id: str

"""Users, their tokens and their grants, decided against each user's stream.

A username is a reserved name pointing at the user's stream (``user-<key>``), as a model name
points at its model's: a deleted user's name can be given to someone new, and the old history
stays the old user's. The first admin is bootstrapped once, ever, from the operator's
settings; afterwards admins manage users through the API or the CLI.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import msgspec

from evtrack.domain import auth_commands as ac
from evtrack.domain._planning import decided_by
from evtrack.errors import already_exists, invalid, not_found
from evtrack.eventlog import UnitOfWork
from evtrack.events import (
    AccessTokenCreated,
    AccessTokenRevoked,
    Event,
    PermissionGranted,
    PermissionRevoked,
    UserAdminChanged,
    UserCreated,
    UserDeleted,
    UserPasswordChanged,
)
from evtrack.permissions import GRANTABLE, RESOURCE_TYPES, WILDCARD

USERNAMES = "usernames"
BOOTSTRAP = "auth-bootstrap"
FIRST_ADMIN = "first-admin"
MAX_USERNAME_LENGTH = 255
MAX_TOKEN_NAME_LENGTH = 255
MAX_RESOURCE_ID_LENGTH = 500


def user_stream(user_key: str) -> str:
    return f"user-{user_key}"


class UserState(msgspec.Struct):
    user_key: str
    username: str
    is_admin: bool = False
    deleted: bool = False
    tokens: dict[str, bool] = msgspec.field(default_factory=dict)  # token id -> live
    grants: dict[str, str] = msgspec.field(default_factory=dict)  # "type/id" -> level

    def apply(self, event: Event) -> None:
        match event:
            case UserAdminChanged(is_admin=is_admin):
                self.is_admin = is_admin
            case UserDeleted():
                self.deleted = True
            case AccessTokenCreated(token_id=token_id):
                self.tokens[token_id] = True
            case AccessTokenRevoked(token_id=token_id):
                self.tokens[token_id] = False
            case PermissionGranted(resource_type=kind, resource_id=rid, permission=level):
                self.grants[f"{kind}/{rid}"] = level
            case PermissionRevoked(resource_type=kind, resource_id=rid):
                self.grants.pop(f"{kind}/{rid}", None)


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(UserState)


def validate_username(username: object) -> str:
    """A name that fits a Basic credential: non-empty, no colon, no control characters."""
    if not isinstance(username, str) or not username:
        raise invalid("Username and password cannot be empty.")
    if len(username) > MAX_USERNAME_LENGTH:
        raise invalid(f"Username must be at most {MAX_USERNAME_LENGTH} characters.")
    if ":" in username or any(ord(ch) < 32 or ord(ch) == 127 for ch in username):
        raise invalid("Username must not contain ':' or control characters.")
    if username != username.strip():
        raise invalid("Username must not start or end with whitespace.")
    return username


def validate_grant(resource_type: object, resource_id: object, permission: object) -> None:
    if resource_type not in RESOURCE_TYPES:
        raise invalid(
            f"Invalid resource_type '{resource_type}'. Must be one of: {', '.join(RESOURCE_TYPES)}."
        )
    if not isinstance(resource_id, str) or not resource_id:
        raise invalid("resource_id cannot be empty.")
    if len(resource_id) > MAX_RESOURCE_ID_LENGTH:
        raise invalid(f"resource_id must be at most {MAX_RESOURCE_ID_LENGTH} characters.")
    if permission is not None and permission not in GRANTABLE:
        raise invalid(
            f"Invalid permission '{permission}'. Valid permissions are: {', '.join(GRANTABLE)}"
        )


@dataclass
class _Loaded:
    state: UserState
    version: int

    def record(self, uow: UnitOfWork, events: Sequence[Event]) -> None:
        for event in events:
            self.state.apply(event)
        uow.append(
            user_stream(self.state.user_key),
            events,
            expected_version=self.version,
            state=_encoder.encode(self.state),
        )


async def _load(uow: UnitOfWork, username: str) -> _Loaded:
    owner = await uow.name_owner(USERNAMES, username)
    if owner is None:
        raise not_found(f"User with username={username} not found")
    head = (await uow.heads([owner], lock=True))[owner]
    assert head.state is not None
    return _Loaded(_decoder.decode(head.state), head.version)


async def create_user(uow: UnitOfWork, c: ac.CreateUser) -> str:
    username = validate_username(c.username)
    user_key = uuid.uuid4().hex
    stream = user_stream(user_key)
    if not await uow.reserve_name(USERNAMES, username, stream):
        raise already_exists(f"User '{username}' already exists")
    state = UserState(user_key, username, is_admin=c.is_admin)
    event = UserCreated(
        user_key=user_key, username=username, password_hash=c.password_hash, is_admin=c.is_admin
    )
    uow.append(stream, [event], expected_version=0, state=_encoder.encode(state))
    return user_key


async def ensure_first_admin(uow: UnitOfWork, c: ac.EnsureFirstAdmin) -> bool:
    if await uow.name_owner(BOOTSTRAP, FIRST_ADMIN) is not None:
        return False
    if c.password_hash is None:
        raise invalid(
            "Authentication is on and no admin exists yet: set EVTRACK_ADMIN_PASSWORD "
            f"(and optionally EVTRACK_ADMIN_USERNAME, default 'admin') to create user "
            f"'{c.username}' as the first admin. There is no default password."
        )
    user_key = await create_user(
        uow, ac.CreateUser(username=c.username, password_hash=c.password_hash, is_admin=True)
    )
    await uow.reserve_name(BOOTSTRAP, FIRST_ADMIN, user_stream(user_key))
    return True


async def change_password(uow: UnitOfWork, c: ac.ChangePassword) -> None:
    loaded = await _load(uow, c.username)
    key = loaded.state.user_key
    loaded.record(
        uow, [UserPasswordChanged(user_key=key, username=c.username, password_hash=c.password_hash)]
    )


async def set_admin(uow: UnitOfWork, c: ac.SetAdmin) -> None:
    loaded = await _load(uow, c.username)
    if loaded.state.is_admin == c.is_admin:
        return
    key = loaded.state.user_key
    loaded.record(uow, [UserAdminChanged(user_key=key, username=c.username, is_admin=c.is_admin)])


async def delete_user(uow: UnitOfWork, c: ac.DeleteUser) -> None:
    loaded = await _load(uow, c.username)
    loaded.record(uow, [UserDeleted(user_key=loaded.state.user_key, username=c.username)])
    await uow.release_name(USERNAMES, c.username)


async def create_token(uow: UnitOfWork, c: ac.CreateAccessToken) -> None:
    if not c.name or len(c.name) > MAX_TOKEN_NAME_LENGTH:
        raise invalid(f"A token needs a name of 1 to {MAX_TOKEN_NAME_LENGTH} characters.")
    loaded = await _load(uow, c.username)
    event = AccessTokenCreated(
        user_key=loaded.state.user_key,
        username=c.username,
        token_id=c.token_id,
        token_hash=c.token_hash,
        name=c.name,
        expires_at_ms=c.expires_at_ms,
    )
    loaded.record(uow, [event])


async def revoke_token(uow: UnitOfWork, c: ac.RevokeAccessToken) -> None:
    loaded = await _load(uow, c.username)
    if not loaded.state.tokens.get(c.token_id):
        raise not_found(f"No live token {c.token_id} for user {c.username}")
    key = loaded.state.user_key
    loaded.record(uow, [AccessTokenRevoked(user_key=key, username=c.username, token_id=c.token_id)])


async def grant(uow: UnitOfWork, c: ac.GrantPermission) -> None:
    validate_grant(c.resource_type, c.resource_id, c.permission)
    loaded = await _load(uow, c.username)
    event = PermissionGranted(
        user_key=loaded.state.user_key,
        username=c.username,
        resource_type=c.resource_type,
        resource_id=c.resource_id,
        permission=c.permission,
    )
    loaded.record(uow, [event])


async def revoke(uow: UnitOfWork, c: ac.RevokePermission) -> None:
    validate_grant(c.resource_type, c.resource_id, None)
    loaded = await _load(uow, c.username)
    if f"{c.resource_type}/{c.resource_id}" not in loaded.state.grants:
        raise not_found(
            f"No permission of user {c.username} on {c.resource_type} {c.resource_id} to revoke"
        )
    event = PermissionRevoked(
        user_key=loaded.state.user_key,
        username=c.username,
        resource_type=c.resource_type,
        resource_id=c.resource_id,
    )
    loaded.record(uow, [event])


decided_by(
    {
        ac.CreateUser: lambda uow, c, _: create_user(uow, c),
        ac.EnsureFirstAdmin: lambda uow, c, _: ensure_first_admin(uow, c),
        ac.ChangePassword: lambda uow, c, _: change_password(uow, c),
        ac.SetAdmin: lambda uow, c, _: set_admin(uow, c),
        ac.DeleteUser: lambda uow, c, _: delete_user(uow, c),
        ac.CreateAccessToken: lambda uow, c, _: create_token(uow, c),
        ac.RevokeAccessToken: lambda uow, c, _: revoke_token(uow, c),
        ac.GrantPermission: lambda uow, c, _: grant(uow, c),
        ac.RevokePermission: lambda uow, c, _: revoke(uow, c),
    }
)

__all__ = ["WILDCARD", "UserState", "user_stream", "validate_grant", "validate_username"]

"""MLflow's auth API (users and per-resource permissions) and evtrack's access tokens.

The routes and answers follow MLflow's basic-auth app, so ``AuthServiceClient`` works
unchanged: admins manage users; a user reads and updates themself; whoever may MANAGE an
experiment or registered model grants and revokes permissions on it. Every change is an
event, so the audit trail says who created whom and who granted what. Password hashes are
never answered. With authentication off these routes do not exist (404), as on MLflow.
"""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from evtrack.access import Principal, hash_password, new_token, verify_password
from evtrack.api._access import (
    access,
    auth_enabled,
    forbidden,
    principal,
    require,
    require_self_or_admin,
)
from evtrack.api._common import empty, execute, json_response, services
from evtrack.api._requests import Args, read_args
from evtrack.api._routing import Route
from evtrack.domain import auth_commands as ac
from evtrack.domain.auth import validate_grant, validate_username
from evtrack.errors import ErrorCode, EvtrackError, invalid, not_found
from evtrack.permissions import WILDCARD, Permission
from evtrack.queries import auth as queries
from evtrack.queries.auth import UserRecord

V2 = ("/api/2.0", "/ajax-api/2.0")
V3 = ("/api/3.0", "/ajax-api/3.0")
MAX_PASSWORD_LENGTH = 1024
MAX_TOKEN_DAYS = 3650


async def _args(request: web.Request) -> Args:
    if not auth_enabled(request):
        raise EvtrackError(
            ErrorCode.ENDPOINT_NOT_FOUND,
            "Authentication is off on this server: start it with --auth to manage users.",
        )
    return await read_args(request)


async def _user(request: web.Request, username: str) -> UserRecord:
    found = await access(request).user(username)
    if found is None:
        raise not_found(f"User with username={username} not found")
    return found


def _password(value: str | None) -> str:
    if not value:
        raise invalid("Username and password cannot be empty.")
    if len(value) > MAX_PASSWORD_LENGTH:
        raise invalid(f"Password must be at most {MAX_PASSWORD_LENGTH} characters.")
    return value


async def create_user(request: web.Request) -> web.Response:
    args = await _args(request)
    username = validate_username(args.string("username"))
    password = _password(args.string("password"))
    await execute(
        request, ac.CreateUser(username=username, password_hash=await hash_password(password))
    )
    return json_response({"user": (await _user(request, username)).to_wire()})


async def get_user(request: web.Request) -> web.Response:
    args = await _args(request)
    username = args.required_string("username")
    await require_self_or_admin(request, username)
    return json_response({"user": (await _user(request, username)).to_wire()})


async def current_user(request: web.Request) -> web.Response:
    await _args(request)
    caller = await principal(request)
    record = await access(request).user(caller.name)
    body: dict[str, Any] = (
        record.to_wire()
        if record is not None
        else {"id": None, "username": caller.name, "is_admin": caller.is_admin}
    )
    header = request.headers.get("Authorization", "").lower()
    return json_response({"user": body, "is_basic_auth": header.startswith("basic ")})


async def list_users(request: web.Request) -> web.Response:
    await _args(request)
    found = await queries.users(services(request).pool)
    return json_response({"users": [{**u.to_wire(), "roles": []} for u in found]})


async def update_password(request: web.Request) -> web.Response:
    args = await _args(request)
    username = args.required_string("username")
    password = _password(args.string("password"))
    caller = await principal(request)
    if caller.name == username:
        # Your own password: prove you know the current one (a stolen session or token
        # cannot take the account over).
        current = args.string("current_password")
        if not current:
            raise invalid("Current password is required when changing your own password.")
        record = await _user(request, username)
        if not await verify_password(record.password_hash, current):
            raise invalid("Current password does not match.")
        if password == current:
            raise invalid("New password must differ from the current password.")
    elif not caller.is_admin:
        raise forbidden()
    await _user(request, username)
    await execute(
        request, ac.ChangePassword(username=username, password_hash=await hash_password(password))
    )
    return empty()


async def update_admin(request: web.Request) -> web.Response:
    args = await _args(request)
    username = args.required_string("username")
    is_admin = args.boolean("is_admin")
    if args.fields.get("is_admin") is None:
        raise invalid("Missing value for required parameter 'is_admin'.")
    await execute(request, ac.SetAdmin(username=username, is_admin=is_admin))
    return empty()


async def delete_user(request: web.Request) -> web.Response:
    args = await _args(request)
    username = args.required_string("username")
    if username == (await principal(request)).name:
        raise EvtrackError(
            ErrorCode.BAD_REQUEST,
            "Users cannot delete their own account. Ask another admin to delete this user instead.",
        )
    await execute(request, ac.DeleteUser(username=username))
    return empty()


async def _grant_args(request: web.Request, *, with_permission: bool) -> tuple[str, str, str, str]:
    args = await _args(request)
    username = args.required_string("username")
    kind = args.required_string("resource_type")
    resource_id = args.required_string("resource_id")
    permission = args.required_string("permission") if with_permission else ""
    validate_grant(kind, resource_id, permission or None)
    return username, kind, resource_id, permission


async def _require_manage(request: web.Request, kind: str, resource_id: str) -> None:
    """Grants on one resource need MANAGE on it; grants on every resource (``*``) are an
    admin's."""
    if resource_id == WILDCARD:
        await require(request, Permission.ADMIN, ())
        return
    permission = Permission(f"{kind}:manage")
    await require(request, permission, [resource_id])


async def grant(request: web.Request) -> web.Response:
    username, kind, resource_id, permission = await _grant_args(request, with_permission=True)
    await _require_manage(request, kind, resource_id)
    await _user(request, username)
    await execute(
        request,
        ac.GrantPermission(
            username=username, resource_type=kind, resource_id=resource_id, permission=permission
        ),
    )
    return empty()


async def revoke(request: web.Request) -> web.Response:
    username, kind, resource_id, _ = await _grant_args(request, with_permission=False)
    await _require_manage(request, kind, resource_id)
    await _user(request, username)
    await execute(
        request, ac.RevokePermission(username=username, resource_type=kind, resource_id=resource_id)
    )
    return empty()


async def get_permission(request: web.Request) -> web.Response:
    username, kind, resource_id, _ = await _grant_args(request, with_permission=False)
    await require_self_or_admin(request, username)
    record = await _user(request, username)
    level = await access(request).level(
        Principal(record.username, record.is_admin), kind, resource_id
    )
    return json_response({"allowed": level.can_use, "permission": level.name})


# --- access tokens (evtrack) ---------------------------------------------------------------


async def _token_owner(request: web.Request, args: Args) -> str:
    caller = await principal(request)
    username = args.string("username") or caller.name
    await require_self_or_admin(request, username)
    await _user(request, username)
    return username


async def create_token(request: web.Request) -> web.Response:
    """A new token for yourself (or, as an admin, for someone else). The secret is in this
    answer only; evtrack keeps its hash."""
    args = await _args(request)
    username = await _token_owner(request, args)
    name = args.string("name") or "token"
    days, seconds = args.integer("expires_in_days"), args.integer("expires_in_seconds")
    if days is not None and not 1 <= days <= MAX_TOKEN_DAYS:
        raise invalid(f"expires_in_days must be between 1 and {MAX_TOKEN_DAYS}.")
    if seconds is not None and not 1 <= seconds <= MAX_TOKEN_DAYS * 86400:
        raise invalid(f"expires_in_seconds must be between 1 and {MAX_TOKEN_DAYS * 86400}.")
    if days is not None and seconds is not None:
        raise invalid("Give expires_in_days or expires_in_seconds, not both.")
    lifetime = days * 86400 if days is not None else seconds
    expires_at = None if lifetime is None else int((time.time() + lifetime) * 1000)
    token_id, secret, token_hash = new_token()
    await execute(
        request,
        ac.CreateAccessToken(
            username=validate_username(username),
            token_id=token_id,
            token_hash=token_hash,
            name=name,
            expires_at_ms=expires_at,
        ),
    )
    info: dict[str, Any] = {"token_id": token_id, "username": username, "name": name}
    if expires_at is not None:
        info["expires_at"] = expires_at
    return json_response({"token": secret, "token_info": info})


async def list_tokens(request: web.Request) -> web.Response:
    args = await _args(request)
    username = await _token_owner(request, args)
    found = await queries.tokens(services(request).pool, username)
    return json_response({"tokens": [t.to_wire() for t in found]})


async def revoke_token(request: web.Request) -> web.Response:
    args = await _args(request)
    username = await _token_owner(request, args)
    token_id = args.required_string("token_id")
    await execute(request, ac.RevokeAccessToken(username=username, token_id=token_id))
    return empty()


def user_routes() -> list[Route]:
    signed_in, admin = Permission.AUTHENTICATED, Permission.ADMIN
    users = "/mlflow/users"
    tokens = "/evtrack/tokens"
    return [
        Route("POST", f"{users}/create", create_user, admin, prefixes=V2),
        Route("GET", f"{users}/get", get_user, signed_in, prefixes=V2, reads=("auth",)),
        Route("GET", f"{users}/current", current_user, signed_in, prefixes=V2, reads=("auth",)),
        Route("GET", f"{users}/list", list_users, signed_in, prefixes=V2, reads=("auth",)),
        Route("PATCH", f"{users}/update-password", update_password, signed_in, prefixes=V2),
        Route("PATCH", f"{users}/update-admin", update_admin, admin, prefixes=V2),
        Route("DELETE", f"{users}/delete", delete_user, admin, prefixes=V2),
        Route("POST", f"{users}/permissions/grant", grant, signed_in, prefixes=V3),
        Route("POST", f"{users}/permissions/revoke", revoke, signed_in, prefixes=V3),
        Route(
            "GET",
            f"{users}/permissions/get",
            get_permission,
            signed_in,
            prefixes=V3,
            reads=("auth",),
        ),
        Route("POST", f"{tokens}/create", create_token, signed_in, prefixes=V2),
        Route("GET", f"{tokens}/list", list_tokens, signed_in, prefixes=V2, reads=("auth",)),
        Route("POST", f"{tokens}/revoke", revoke_token, signed_in, prefixes=V2),
    ]

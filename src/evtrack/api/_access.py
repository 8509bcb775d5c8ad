"""Authentication and authorization of each request against the route it matched.

Every route declares a :class:`~evtrack.permissions.Permission` and, for a resource-typed one,
a locator: how to find the resource the request names (an experiment id in the body, the run
a ``run_id`` belongs to, a model name, the first segment of an artifact path). The guard runs
before the handler: 401 without valid credentials, 403 when the caller's level on every named
resource does not allow the route's capability. Search routes are declared ``filtered``: any
signed-in caller may search, and the handler narrows the answer to what the caller may read.

With authentication off, every request acts as one fixed local user; a name the request
claims is kept as an unverified note on the events it causes.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

from aiohttp import web

from evtrack.access import AccessControl, Principal
from evtrack.api._requests import read_args
from evtrack.api._routing import Locator
from evtrack.errors import ErrorCode, EvtrackError, not_found
from evtrack.permissions import EXPERIMENT, REGISTERED_MODEL, WILDCARD, Permission, Visibility

LOCAL_USER = "local"
"""The actor of every write when authentication is off."""

PRINCIPAL_KEY = web.RequestKey("principal", str)
"""The authenticated principal's name, once the guard ran: for rate limits and logs."""
_PRINCIPAL_OBJECT = web.RequestKey("access_principal", Principal)
_VISIBILITY = {
    EXPERIMENT: web.RequestKey("visibility_experiment", Visibility),
    REGISTERED_MODEL: web.RequestKey("visibility_registered_model", Visibility),
}
ACCESS = web.AppKey("access", AccessControl)


@dataclass(frozen=True)
class AuthConfig:
    enabled: bool = False
    proxy_header: str | None = None
    trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()


AUTH_CONFIG = web.AppKey("auth_config", AuthConfig)


def unauthenticated(message: str = "You are not authenticated.") -> EvtrackError:
    return EvtrackError(
        ErrorCode.UNAUTHENTICATED,
        message + " Send Basic credentials (MLFLOW_TRACKING_USERNAME and "
        "MLFLOW_TRACKING_PASSWORD) or a token (MLFLOW_TRACKING_TOKEN).",
        headers={"WWW-Authenticate": 'Basic realm="evtrack", charset="UTF-8"'},
    )


def forbidden(message: str = "Permission denied") -> EvtrackError:
    return EvtrackError(ErrorCode.PERMISSION_DENIED, message)


def auth_enabled(request: web.Request) -> bool:
    config = request.app.get(AUTH_CONFIG)
    return config is not None and config.enabled


def access(request: web.Request) -> AccessControl:
    return request.app[ACCESS]


def claimed_name(request: web.Request) -> str | None:
    """The user a request says it is, unverified: a Basic user name or X-Evtrack-User."""
    header = request.headers.get("Authorization", "")
    if header.lower().startswith("basic "):
        try:
            user = base64.b64decode(header[6:]).decode().split(":", 1)[0]
        except (binascii.Error, UnicodeDecodeError):
            user = ""
        if user:
            return user
    return request.headers.get("X-Evtrack-User") or None


def _from_trusted_proxy(request: web.Request, config: AuthConfig) -> bool:
    peer = request.transport.get_extra_info("peername") if request.transport else None
    if not peer:
        return False
    try:
        address = ipaddress.ip_address(peer[0])
    except ValueError:
        return False
    return any(address in network for network in config.trusted_proxies)


async def _authenticate(request: web.Request, config: AuthConfig) -> Principal:
    control = access(request)
    if config.proxy_header and _from_trusted_proxy(request, config):
        name = request.headers.get(config.proxy_header, "").strip()
        if name:
            return await control.principal_named(name)
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    scheme = scheme.lower()
    if scheme == "basic":
        try:
            username, sep, password = base64.b64decode(value.strip()).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            raise unauthenticated("Malformed Basic credentials.") from None
        if sep and username:
            principal = await control.authenticate_password(username, password)
            if principal is not None:
                return principal
        raise unauthenticated("Invalid username or password.")
    if scheme == "bearer" and value.strip():
        principal = await control.authenticate_token(value.strip())
        if principal is not None:
            return principal
        raise unauthenticated("Invalid, expired or revoked token.")
    raise unauthenticated()


async def principal(request: web.Request) -> Principal:
    """Who is asking: authenticated once per request (401 if auth is on and it fails)."""
    known: Principal | None = request.get(_PRINCIPAL_OBJECT)
    if known is not None:
        return known
    config = request.app.get(AUTH_CONFIG)
    if config is None or not config.enabled:
        found = Principal(LOCAL_USER, is_admin=True)
    else:
        found = await _authenticate(request, config)
    request[_PRINCIPAL_OBJECT] = found
    request[PRINCIPAL_KEY] = found.name
    return found


async def require_self_or_admin(request: web.Request, username: str) -> None:
    """403 unless the caller is ``username`` or an admin (a user's own account)."""
    caller = await principal(request)
    if not (caller.is_admin or caller.name == username):
        raise forbidden()


async def require(
    request: web.Request, permission: Permission, resource_ids: Sequence[str]
) -> Principal:
    """The caller, if it holds ``permission`` on every resource named; else 403."""
    caller = await principal(request)
    kind, capability = permission.resource_type, permission.capability
    if caller.is_admin:
        return caller
    if permission is Permission.ADMIN:
        raise forbidden("Only an admin may do this.")
    if kind is None or capability is None:
        return caller
    control = access(request)
    for resource_id in resource_ids:
        level = await control.level(caller, kind, resource_id)
        if not level.allows(capability):
            raise forbidden(
                f"Permission denied: {capability} on {kind} {resource_id} needs more than "
                f"{level.name}."
            )
    return caller


async def visible(request: web.Request, resource_type: str) -> Visibility | None:
    """What a search may show this caller; None when it may show everything."""
    caller = await principal(request)
    if caller.is_admin:
        return None
    key = _VISIBILITY[resource_type]
    found: Visibility | None = request.get(key)
    if found is None:
        found = await access(request).visibility(caller, resource_type)
        request[key] = found
    return None if found.everything else found


async def readable_experiment_ids(request: web.Request, ids: Sequence[str]) -> list[str]:
    """``ids`` without the experiments the caller may not read (MLflow filters, not 403s)."""
    view = await visible(request, EXPERIMENT)
    return list(ids) if view is None else [i for i in ids if view.allows(str(i))]


# --- locators ------------------------------------------------------------------------------


def arg(name: str, *, default: str | None = None) -> Locator:
    """The resource is named by a request field (``experiment_id``, ``name``)."""

    async def locate(request: web.Request) -> Sequence[str]:
        args = await read_args(request)
        value = args.string(name) if default is not None else args.required_string(name)
        return [value or default or ""]

    return locate


def path(name: str) -> Locator:
    async def locate(request: web.Request) -> Sequence[str]:
        return [request.match_info[name]]

    return locate


async def _experiment_of_run(request: web.Request, run_id: str) -> str:
    found = await access(request).experiment_of_run(run_id)
    if found is None:
        raise not_found(f"Run with id={run_id} not found")
    return found


async def run(request: web.Request) -> Sequence[str]:
    """The experiment of the run named by ``run_id`` (or ``run_uuid``)."""
    args = await read_args(request)
    return [await _experiment_of_run(request, args.run_id())]


def runs(field: str) -> Locator:
    """The experiments of every run a request names in a list field."""

    async def locate(request: web.Request) -> Sequence[str]:
        args = await read_args(request)
        run_ids = args.string_list(field)
        if not run_ids:
            raise EvtrackError(
                ErrorCode.INVALID_PARAMETER_VALUE,
                f"Missing value for required parameter '{field}'.",
            )
        return sorted({await _experiment_of_run(request, r) for r in run_ids})

    return locate


async def experiment_by_name(request: web.Request) -> Sequence[str]:
    name = (await read_args(request)).required_string("experiment_name")
    found = await access(request).experiment_named(name)
    if found is None:
        raise not_found(f"Could not find experiment with name '{name}'")
    return [found]


async def logged_model(request: web.Request) -> Sequence[str]:
    model_id = request.match_info["model_id"]
    found = await access(request).experiment_of_logged_model(model_id)
    if found is None:
        raise not_found(f"Logged model with ID '{model_id}' not found.")
    return [found]


async def artifact_path(request: web.Request) -> Sequence[str]:
    """Proxied artifacts live under ``<experiment id>/...``: the first segment names it.
    Anything else (the store's root, a path outside any experiment) is an admin's."""
    raw = request.match_info.get("path") or request.query.get("path") or ""
    first = raw.strip("/").split("/", 1)[0]
    if not first.isdigit():
        raise forbidden("Only an admin may reach artifacts outside an experiment's folder.")
    return [first]


async def everything(request: web.Request) -> Sequence[str]:
    """Creating a resource: judged on the type as a whole (a grant or DENY on ``*``)."""
    return [WILDCARD]


async def filtered(request: web.Request) -> Sequence[str]:
    """Marks a search route: the handler narrows its answer to what the caller may read.
    A caller who may read nothing of the type at all is refused outright."""
    return ()


FILTERED: Locator = filtered


async def in_handler(request: web.Request) -> Sequence[str]:
    """Marks a route whose handler checks each resource its body names (native ingest)."""
    return ()


IN_HANDLER: Locator = in_handler


async def guard(request: web.Request, permission: Permission, locator: Locator | None) -> None:
    """Refuse the request unless its caller may do what the route does (deny by default)."""
    if permission is Permission.NONE:
        return
    config = request.app.get(AUTH_CONFIG)
    if config is None or not config.enabled:
        await principal(request)
        return
    caller = await principal(request)  # 401 before anything is looked up
    if locator is IN_HANDLER:
        return
    if locator is FILTERED:
        kind = permission.resource_type
        if kind is not None and not caller.is_admin:
            view = await visible(request, kind)
            if view is not None and view.include is not None and not view.include:
                raise forbidden(f"Permission denied: you may read no {kind}.")
        return
    ids = await locator(request) if locator is not None else ()
    await require(request, permission, ids)

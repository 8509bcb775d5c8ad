"""No cross-site writes: the Host and Origin allow-list, the content types a write may carry,
and CORS for the origins an operator allows, and for no other.

A page on another site can make a browser send requests to evtrack in three ways, and each is
closed here:

- **DNS rebinding** (the page's own name resolves to evtrack): the ``Host`` header still
  carries the page's name. A request whose ``Host`` is not on the allow-list
  (:mod:`evtrack.api._allowed_hosts`) is refused with 403 before any handler runs, as MLflow
  3.17 does. Probes (``/health``, ``/ready``, ``/version``) are exempt, as MLflow exempts
  ``/health`` and ``/version``: load balancers and kubelets probe by IP or with a ``Host`` of
  their own, and these answers reveal and change nothing.
- **A cross-site form or ``no-cors`` fetch** can POST ``text/plain``, form-encoded or
  multipart bodies without asking the server first. Write routes refuse those types (and a
  body with no declared type) with MLflow's 400; each route declares what it accepts
  (:class:`~evtrack.api._routing.Route` ``body_types``): JSON by default, MessagePack or
  NDJSON for native ingest, anything for the artifact upload, which a browser can only send
  cross-site after a CORS preflight (it is a PUT).
- **A cross-site fetch** carries an ``Origin`` header, which browsers send with every write.
  A write whose ``Origin`` is neither an allowed host nor an origin listed with
  ``--cors-allowed-origins`` is refused with 403 (with ``--allowed-hosts '*'``, the origin
  must be the server's own: the same name and port as ``Host``).

CORS headers are sent only for origins listed with ``--cors-allowed-origins``: that origin
(never ``*``) with credentials allowed, and preflight ``OPTIONS`` answered with 204.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from aiohttp import web
from aiohttp.typedefs import Middleware

from evtrack.api._allowed_hosts import AllowedHosts, split_host
from evtrack.api._routing import Handler
from evtrack.errors import ErrorCode, EvtrackError, invalid

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
PROBE_PATHS = frozenset({"/health", "/ready", "/version"})
# What a browser sends cross-site without a preflight (a "CORS-safelisted" request type).
SIMPLE_TYPES = frozenset({"text/plain", "application/x-www-form-urlencoded", "multipart/form-data"})
INVALID_HOST_MESSAGE = "Invalid Host header - possible DNS rebinding attack detected"
CORS_METHODS = "GET, POST, PUT, PATCH, DELETE"
CORS_EXPOSED = "X-Request-Id, Retry-After"
PREFLIGHT_MAX_AGE_S = 600
_HEADER_LIST = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+(\s*,\s*[A-Za-z0-9!#$%&'*+.^_`|~-]+)*$")
_DEFAULT_PORTS = {"http": 80, "https": 443}
_CORS_ORIGIN = web.RequestKey("cors_origin", str)


class OriginError(ValueError):
    """A ``--cors-allowed-origins`` entry that is not ``scheme://host[:port]``."""


def normalize_origin(text: str) -> str | None:
    """``scheme://host[:port]`` lower-cased, or None when ``text`` is not such an origin
    (``null``, a path, userinfo, another scheme)."""
    scheme, sep, authority = text.strip().lower().partition("://")
    if not sep or scheme not in _DEFAULT_PORTS or split_host(authority) is None:
        return None
    return f"{scheme}://{authority}"


def parse_cors_origins(entries: Iterable[str]) -> frozenset[str]:
    """Origins an operator allows; ``*`` is refused: a wildcard cannot carry credentials, and
    a server that accepts writes from every site is what this module prevents."""
    origins = set()
    for entry in (e.strip() for e in entries):
        if not entry:
            continue
        if entry == "*":
            raise OriginError(
                "'*' is not allowed: list the origins (scheme://host[:port]) that may call the API"
            )
        origin = normalize_origin(entry.rstrip("/"))
        if origin is None:
            raise OriginError(f"not an origin: {entry!r} (use scheme://host[:port])")
        origins.add(origin)
    return frozenset(origins)


@dataclass(frozen=True)
class CrossSitePolicy:
    hosts: AllowedHosts
    cors_origins: frozenset[str] = frozenset()

    def write_origin_allowed(self, origin: str, host: str | None) -> bool:
        """Whether a write from a page at ``origin`` (to ``host``) may go ahead."""
        normalized = normalize_origin(origin)
        if normalized is None:
            return False  # "null" (sandboxed frames, file:) and garbage
        if normalized in self.cors_origins:
            return True
        scheme, _, authority = normalized.partition("://")
        if not self.hosts.any_host:
            return self.hosts.allows(authority)
        # Every Host is allowed, so the Host says nothing: the page must be the server's own.
        page, target = split_host(authority), split_host(host or "")
        if page is None or target is None:
            return False
        default = _DEFAULT_PORTS[scheme]
        return page[0] == target[0] and (page[1] or default) == (target[1] or default)


def cross_site_guard(policy: CrossSitePolicy) -> Middleware:
    """The middleware: Host check, Origin check for writes, CORS preflight."""

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in PROBE_PATHS:
            return await handler(request)
        host = request.headers.get("Host")
        if not policy.hosts.allows(host):
            raise EvtrackError(
                ErrorCode.PERMISSION_DENIED,
                f"{INVALID_HOST_MESSAGE}: {_shown(host)} is not an allowed host. An operator can "
                "allow it with --allowed-hosts (EVTRACK_ALLOWED_HOSTS).",
            )
        origin = request.headers.get("Origin")
        if origin is None:
            return await handler(request)
        listed = normalize_origin(origin)
        if listed is not None and listed in policy.cors_origins:
            request[_CORS_ORIGIN] = listed
            if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
                return _preflight(request, listed)
        if request.method in WRITE_METHODS and not policy.write_origin_allowed(origin, host):
            raise EvtrackError(
                ErrorCode.PERMISSION_DENIED,
                f"Cross-origin request blocked: pages of {_shown(origin)} may not write here. An "
                "operator can allow an origin with --cors-allowed-origins.",
            )
        return await handler(request)

    return guard


def _shown(value: str | None) -> str:
    """A header value quoted for a message, cut short: it is the client's, not ours."""
    return repr(value if value is None or len(value) <= 200 else value[:200] + "...")


def _preflight(request: web.Request, origin: str) -> web.Response:
    response = web.Response(status=204)
    response.headers["Access-Control-Allow-Methods"] = CORS_METHODS
    requested = request.headers.get("Access-Control-Request-Headers", "").strip()
    if requested and _HEADER_LIST.match(requested):
        response.headers["Access-Control-Allow-Headers"] = requested
    response.headers["Access-Control-Max-Age"] = str(PREFLIGHT_MAX_AGE_S)
    return response


def cors_hook(
    policy: CrossSitePolicy,
) -> Callable[[web.Request, web.StreamResponse], Awaitable[None]]:
    """An ``on_response_prepare`` hook: CORS headers on answers to a listed origin (streamed
    and error answers included), and ``Vary: Origin`` whenever some origin is listed."""

    async def add_cors_headers(request: web.Request, response: web.StreamResponse) -> None:
        if not policy.cors_origins:
            return
        vary = response.headers.get("Vary")
        if vary is None:
            response.headers["Vary"] = "Origin"
        elif "origin" not in vary.lower():
            response.headers["Vary"] = f"{vary}, Origin"
        origin = request.get(_CORS_ORIGIN)
        if origin is None:
            return
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Allow-Credentials"] = "true"
        response.headers["Access-Control-Expose-Headers"] = CORS_EXPOSED

    return add_cors_headers


def check_body_type(request: web.Request, accepted: tuple[str, ...] | None) -> None:
    """Refuse a write whose body type a browser could send cross-site, or that the route does
    not take. ``accepted`` None: any type (a raw upload). Raises MLflow's 400."""
    if request.method not in WRITE_METHODS or accepted is None:
        return
    declared = request.headers.get("Content-Type", "")
    essence = declared.split(";", 1)[0].strip().lower()
    if not essence:
        refused = request.body_exists  # an undeclared body is a form's text/plain in disguise
    else:
        refused = essence in SIMPLE_TYPES or (request.body_exists and essence not in accepted)
    if refused:
        raise invalid(f"Bad Request. Content-Type must be one of {list(accepted)}.")

"""The aiohttp application: middlewares, the mounted route table, start-up and shutdown."""

from __future__ import annotations

import asyncio
import math
import sys
import time
import uuid
from collections.abc import Sequence

import msgspec
import structlog
from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError

from evtrack.api._access import guard
from evtrack.api._allowed_hosts import AllowedHosts, default_allowed_hosts
from evtrack.api._bodies import (
    BODIES,
    BUDGET,
    MAX_REQUEST_BODY,
    BodyBudget,
    BodyLimits,
    HttpStatusError,
    release_body,
)
from evtrack.api._common import SHUTTING_DOWN, json_response, wait_fresh
from evtrack.api._cross_site import (
    CrossSitePolicy,
    check_body_type,
    cors_hook,
    cross_site_guard,
    parse_cors_origins,
)
from evtrack.api._http_server import HANDLER_ARGS
from evtrack.api._rate_limit import RATE_LIMITER, RateLimiter, check_rate
from evtrack.api._routing import Handler, Route
from evtrack.api._security_headers import add_security_headers
from evtrack.api.artifacts import artifact_routes
from evtrack.api.audit import audit_routes
from evtrack.api.console import console_routes, error_page, is_console
from evtrack.api.experiments import experiment_routes
from evtrack.api.graphql import graphql_routes
from evtrack.api.ingest import ingest_routes
from evtrack.api.logged_models import logged_model_routes
from evtrack.api.metrics import metric_routes
from evtrack.api.registry import registry_routes
from evtrack.api.run_artifacts import run_artifact_routes
from evtrack.api.runs import run_routes
from evtrack.api.series import series_routes
from evtrack.api.service import service_routes
from evtrack.api.status import status_routes
from evtrack.api.ui import ui_routes
from evtrack.api.ui_stubs import ui_stub_routes
from evtrack.api.users import user_routes
from evtrack.application import RETRY_AFTER_S, ErrorLog, OutageLog
from evtrack.config import Settings
from evtrack.errors import ErrorCode, EvtrackError

log = structlog.get_logger("evtrack.api")

RECENT_ERRORS = ErrorLog()
"""This process's last failures (500s, database outages), for the status page."""
OUTAGES = OutageLog(RECENT_ERRORS)
"""This process's view of database outages (each is logged once)."""

DEFAULT_PREFIXES = ("/api/2.0", "/ajax-api/2.0")
API_PREFIXES = ("/api/", "/ajax-api/")


def all_routes() -> list[Route]:
    return [
        *service_routes(),
        *experiment_routes(),
        *run_routes(),
        *logged_model_routes(),
        *metric_routes(),
        *run_artifact_routes(),
        *registry_routes(),
        *audit_routes(),
        *ingest_routes(),
        *artifact_routes(),
        *graphql_routes(),
        *user_routes(),
        *ui_stub_routes(),
        *ui_routes(),
        *status_routes(),
        *series_routes(),
        *console_routes(),
    ]


# nginx's status for "the client closed the connection before the answer": no answer was sent,
# and it is not a server error.
CLIENT_CLOSED = 499


def _client_gone(request: web.Request) -> bool:
    """True if the request's connection is closed or closing: the client went away."""
    transport = request.transport
    return transport is None or transport.is_closing()


def _log_client_closed(request: web.Request, request_id: str, started: float, why: str) -> None:
    log.info(
        "request.client_closed",
        request_id=request_id,
        method=request.method,
        path=request.path,
        status=CLIENT_CLOSED,
        reason=why,
        latency_ms=round((time.perf_counter() - started) * 1000, 2),
    )


def _internal_error(request: web.Request, request_id: str) -> web.Response:
    """Log the exception being handled with its traceback; the client gets the request id."""
    log.exception("request.failed", request_id=request_id, path=request.path)
    failure = sys.exc_info()[1]
    RECENT_ERRORS.record(
        "request",
        f"{request.method} {request.path}: {type(failure).__name__}: {failure}",
        request_id,
    )
    return json_response(
        _error_body(ErrorCode.INTERNAL_ERROR, f"Internal error (request id {request_id})"),
        status=500,
    )


_KEPT_HEADERS = ("WWW-Authenticate", "Retry-After", "Allow")


def _as_console_page(response: web.StreamResponse, status: int) -> web.StreamResponse:
    """An error on a console page as a page a person can read (with the same status and the
    headers that matter: a Basic challenge, Retry-After)."""
    if not isinstance(response, web.Response) or response.content_type != "application/json":
        return response
    raw = response.body
    if not isinstance(raw, bytes | bytearray):
        return response
    try:
        body = msgspec.json.decode(raw)
        code, message = str(body["error_code"]), str(body["message"])
    except (msgspec.DecodeError, KeyError, TypeError):
        return response
    page = error_page(status, code, message)
    for name in _KEPT_HEADERS:
        if name in response.headers:
            page.headers[name] = response.headers[name]
    return page


def _error_body(code: ErrorCode | str, message: str) -> dict[str, str]:
    return {
        "error_code": str(code.value if isinstance(code, ErrorCode) else code),
        "message": message,
    }


@web.middleware
async def request_context(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Give each request an id, log it with its latency, and render every error as JSON."""
    request_id = request.headers.get("X-Request-Id") or uuid.uuid4().hex
    request["request_id"] = request_id
    started = time.perf_counter()
    began = time.monotonic()  # OutageLog's clock
    status = 500
    drop = False
    try:
        response = await handler(request)
        status = response.status
    except EvtrackError as exc:
        status = exc.http_status
        response = json_response(_error_body(exc.code, exc.message), status=status)
        response.headers.update(exc.headers)
        if isinstance(exc, HttpStatusError) and exc.close:
            response.force_close()
            drop = exc.drop
    except web.HTTPNotFound:
        status = 404
        response = json_response(
            _error_body(
                ErrorCode.ENDPOINT_NOT_FOUND,
                f"No API endpoint matches {request.method} {request.path}",
            ),
            status=404,
        )
    except web.HTTPMethodNotAllowed as exc:
        status = 405
        response = json_response(
            _error_body(
                ErrorCode.BAD_REQUEST, f"Method {request.method} is not allowed on {request.path}"
            ),
            status=405,
        )
        response.headers["Allow"] = ",".join(sorted(exc.allowed_methods))
    except web.HTTPRequestEntityTooLarge as exc:
        status = 413
        response = json_response(
            _error_body(ErrorCode.INVALID_PARAMETER_VALUE, exc.text or "Request too large"),
            status=413,
        )
    except RequestPayloadError as exc:
        # A body that cannot be read as declared (e.g. Content-Encoding: gzip that is not).
        status = 400
        response = json_response(
            _error_body(ErrorCode.INVALID_PARAMETER_VALUE, f"Unreadable request body: {exc}"),
            status=400,
        )
    except web.HTTPException as exc:
        raise exc
    except asyncio.CancelledError:
        # aiohttp cancels the handler when the client disconnects (with handler cancellation
        # on) and at shutdown. Either way it must propagate; it is not a server error.
        if _client_gone(request):
            _log_client_closed(request, request_id, started, "cancelled")
        raise
    except ConnectionResetError as exc:
        # aiohttp's payload reader and response writer raise this (or its subclass
        # ClientConnectionResetError) when the client disconnected mid-request. An outbound
        # connection reset (e.g. to an object store) while the client is still there stays a
        # 500 below.
        if not _client_gone(request):
            response = _internal_error(request, request_id)
        else:
            _log_client_closed(request, request_id, started, str(exc) or type(exc).__name__)
            # Nobody reads this answer; aiohttp drops it on the closed transport.
            return web.Response(status=CLIENT_CLOSED)
    except Exception as exc:
        if not OUTAGES.is_outage(exc):
            response = _internal_error(request, request_id)
        else:
            OUTAGES.failed(exc)  # one line per outage, not a traceback per request
            status = 503
            response = json_response(
                _error_body(
                    ErrorCode.TEMPORARILY_UNAVAILABLE,
                    "The database is unavailable; retry shortly.",
                ),
                status=503,
            )
            response.headers["Retry-After"] = str(RETRY_AFTER_S)
    else:
        OUTAGES.succeeded(began)
    if status >= 400 and is_console(request.path):
        response = _as_console_page(response, status)
    response.headers["X-Request-Id"] = request_id
    log.info(
        "request",
        request_id=request_id,
        method=request.method,
        path=request.path,
        status=status,
        latency_ms=round((time.perf_counter() - started) * 1000, 2),
    )
    if drop:
        await _answer_and_close(request, response)
    return response


async def _answer_and_close(request: web.Request, response: web.StreamResponse) -> None:
    """Send ``response`` now and close the connection, without reading the rest of the body
    (aiohttp would otherwise keep reading it for a while, at the client's pace)."""
    try:
        await response.prepare(request)
        await response.write_eof()
    except ConnectionResetError:
        return
    if request.transport is not None:
        request.transport.close()


def _guarded(route: Route) -> Handler:
    """The route's handler behind what every route gets, in this order: the per-user rate
    limit, its access guard, the body types it takes, and for reads its freshness wait; its
    share of the body budget is given back after."""
    names, inner, permission, locator = route.reads, route.handler, route.permission, route.resource
    body_types = route.body_types

    async def handler(request: web.Request) -> web.StreamResponse:
        try:
            await check_rate(request, permission)
            # 401 and 403 before 400, as MLflow's auth app answers; the guard may read the
            # body (for the resource it names), within the same limits as any read.
            await guard(request, permission, locator)
            check_body_type(request, body_types)
            if names:
                await wait_fresh(request, *names)
            return await inner(request)
        finally:
            release_body(request)

    return handler


def mount(app: web.Application, routes: Sequence[Route]) -> None:
    for route in routes:
        handler = _guarded(route)
        for prefix in route.prefixes or DEFAULT_PREFIXES:
            app.router.add_route(route.method, prefix + route.path, handler)


def cross_site_policy(settings: Settings) -> CrossSitePolicy:
    hosts = (
        AllowedHosts.parse(settings.allowed_hosts)
        if settings.allowed_hosts is not None
        else default_allowed_hosts(settings.host)
    )
    return CrossSitePolicy(hosts, parse_cors_origins(settings.cors_allowed_origins))


def check_limits(settings: Settings) -> None:
    """Raise ValueError, with a message for the operator, on limits that cannot work."""
    cross_site_policy(settings)
    positive = {
        "--max-buffered-body-bytes": settings.max_buffered_body_bytes,
        "--keepalive-timeout": settings.keepalive_timeout_s,
        "--header-timeout": settings.header_timeout_s,
        "--body-timeout": settings.body_timeout_s,
    }
    for flag, value in positive.items():
        if value <= 0:
            raise ValueError(f"{flag} must be positive, got {value:g}")
    for flag, value in {
        "--body-budget-wait": settings.body_budget_wait_s,
        "--body-min-rate": settings.body_min_rate,
        "--rate-limit": settings.rate_limit,
    }.items():
        if value < 0:
            raise ValueError(f"{flag} cannot be negative, got {value:g}")
    if settings.max_connections is not None and settings.max_connections < 1:
        raise ValueError("--max-connections must be at least 1")
    if settings.rate_limit_burst is not None and settings.rate_limit_burst < 1:
        raise ValueError("--rate-limit-burst must be at least 1")


def build_app(settings: Settings | None = None) -> web.Application:
    """The HTTP application with every route mounted and the limits of ``settings``; services
    are attached by the composition root (:mod:`evtrack.server`) when it starts.

    Middlewares, outermost first: request ids, logs and error rendering; the Host and Origin
    allow-list (and CORS preflights), before anything else looks at a request. Each route
    then checks its body type, rate limit and access (:func:`_guarded`).
    """
    settings = settings or Settings()
    policy = cross_site_policy(settings)
    app = web.Application(
        middlewares=[request_context, cross_site_guard(policy)],
        client_max_size=MAX_REQUEST_BODY,
        handler_args=HANDLER_ARGS,  # long query lines (run ids) as MLflow's UI sends them
    )
    limits = BodyLimits(
        max_buffered_bytes=settings.max_buffered_body_bytes,
        budget_wait_s=settings.body_budget_wait_s,
        timeout_s=settings.body_timeout_s,
        min_rate=settings.body_min_rate,
    )
    app[BODIES] = limits
    app[BUDGET] = BodyBudget(limits.max_buffered_bytes)
    if settings.rate_limit > 0:
        burst = settings.rate_limit_burst or max(1, math.ceil(2 * settings.rate_limit))
        app[RATE_LIMITER] = RateLimiter(settings.rate_limit, burst)
    mount(app, all_routes())
    app.on_response_prepare.append(add_security_headers)
    app.on_response_prepare.append(cors_hook(policy))
    app[SHUTTING_DOWN] = asyncio.Event()

    async def end_streams(app: web.Application) -> None:
        app[SHUTTING_DOWN].set()

    app.on_shutdown.append(end_streams)
    return app


__all__ = ["all_routes", "build_app", "check_limits", "cross_site_policy", "mount"]

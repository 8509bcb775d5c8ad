"""Audit routes: histories, time travel, and a live Server-Sent Events stream of the log.

The stream is for CI/CD: subscribe to ``ModelVersionStageChanged`` and deploy on promotion.
Each event carries its log position as the SSE id; a client that reconnects with
``Last-Event-ID`` resumes right after it, without loss. Events are read with the same horizon
rule as the projectors, so a late-committing transaction is delivered in its place.
"""

from __future__ import annotations

import asyncio

import msgspec
from aiohttp import web

from evtrack.api._access import (
    access,
    arg,
    forbidden,
    principal,
    require_self_or_admin,
    run,
    visible,
)
from evtrack.api._common import json_response, services, stream_over
from evtrack.api._event_access import EventAccess
from evtrack.api._requests import read_args
from evtrack.api._routing import Route
from evtrack.api._state import SERVICES
from evtrack.application import LOG_START, FeedFilter, LogPosition, audit
from evtrack.domain import (
    experiment_stream,
    logged_model_stream,
    parse_experiment_id,
    run_stream,
)
from evtrack.domain.auth import user_stream
from evtrack.errors import EvtrackError, invalid, not_found
from evtrack.permissions import EXPERIMENT, REGISTERED_MODEL, Permission
from evtrack.queries import auth as auth_queries

HEARTBEAT_S = 15.0
WAKE_S = 0.5


async def model_history(request: web.Request) -> web.Response:
    args = await read_args(request)
    name = args.required_string("name")
    version = args.integer("version")
    events = await audit.model_history(services(request).pool, name, version)
    return json_response({"name": name, "events": events})


async def model_as_of(request: web.Request) -> web.Response:
    args = await read_args(request)
    name = args.required_string("name")
    at = audit.parse_instant(args.required_string("at"))
    return json_response(await audit.model_as_of(services(request).pool, name, at))


async def run_history(request: web.Request) -> web.Response:
    args = await read_args(request)
    run_id = args.run_id()
    return json_response(
        {
            "run_id": run_id,
            "events": await audit.stream_history(services(request).pool, run_stream(run_id)),
        }
    )


async def user_history(request: web.Request) -> web.Response:
    """A user's account history: creation, password and admin changes, tokens, grants (the
    hashes redacted). Admins, or the user themself."""
    args = await read_args(request)
    username = args.required_string("username")
    await require_self_or_admin(request, username)
    key = await auth_queries.user_key(services(request).pool, username)
    if key is None:
        raise not_found(f"User with username={username} not found")
    events = await audit.stream_history(services(request).pool, user_stream(key))
    return json_response({"username": username, "events": events})


async def experiment_history(request: web.Request) -> web.Response:
    args = await read_args(request)
    experiment_id = parse_experiment_id(args.required_string("experiment_id"))
    events = await audit.stream_history(services(request).pool, experiment_stream(experiment_id))
    return json_response({"experiment_id": str(experiment_id), "events": events})


def _parse_cursor(value: str) -> LogPosition:
    tx, sep, gp = value.partition("-")
    if not sep or not tx.isdigit() or not gp.isdigit():
        raise invalid(f"Invalid event position {value!r}: expected '<transaction>-<position>'.")
    return LogPosition(int(tx), int(gp))


async def may_read_something(request: web.Request) -> None:
    """A subscriber sees the events of what they may read; one who may read nothing at all
    is refused rather than handed an empty stream."""
    caller = await principal(request)
    if caller.is_admin:
        return
    for kind in (EXPERIMENT, REGISTERED_MODEL):
        view = await visible(request, kind)
        if view is None or view.include is None or view.include:
            return
    raise forbidden("Permission denied: you may read no experiment and no registered model.")


MAX_RECENT = 10_000
_RUN_PREFIX = run_stream("")
_LOGGED_MODEL_PREFIX = logged_model_stream("")


def feed_filter(request: web.Request) -> FeedFilter:
    """The subscriber's filter from the query: ``types`` (comma-separated), ``stream``,
    ``stream_prefix``, ``experiment_id`` (its stream, its runs' and logged models') and
    ``model`` (a registered model's name, across renames)."""
    query = request.query
    control = access(request)
    pool = services(request).pool

    async def experiment_of(stream: str) -> str | None:
        if stream.startswith(_RUN_PREFIX):
            return await control.experiment_of_run(stream.removeprefix(_RUN_PREFIX), wait=False)
        if stream.startswith(_LOGGED_MODEL_PREFIX):
            return await control.experiment_of_logged_model(
                stream.removeprefix(_LOGGED_MODEL_PREFIX)
            )
        return None

    async def model_streams(name: str) -> list[str]:
        try:
            return await audit.model_streams(pool, name)
        except EvtrackError:
            return []  # not created yet: its creation event adds it

    experiment = query.get("experiment_id") or None
    if experiment is not None:
        experiment = str(parse_experiment_id(experiment))
    return FeedFilter(
        types={t for t in query.get("types", "").split(",") if t},
        stream=query.get("stream") or None,
        stream_prefix=query.get("stream_prefix") or None,
        experiment_id=experiment,
        model=query.get("model") or None,
        experiment_of=experiment_of,
        model_streams=model_streams,
    )


def _recent(value: str) -> int:
    if not value.isdigit() or not 0 < int(value) <= MAX_RECENT:
        raise invalid(f"Invalid recent={value!r}: a count of events from 1 to {MAX_RECENT}.")
    return int(value)


async def event_stream(request: web.Request) -> web.StreamResponse:
    """``GET /api/2.0/evtrack/events/stream``: the log as Server-Sent Events.

    Filters: see :func:`feed_filter`. Start: ``Last-Event-ID`` header or ``after`` (a
    position), else ``from=start`` for the whole log, else ``recent=N`` (the last N events of
    the log, those that pass the filter), else from now.
    """
    svc = request.app[SERVICES]
    readable = EventAccess(request)
    await may_read_something(request)
    wanted = feed_filter(request)
    resume = request.headers.get("Last-Event-ID") or request.query.get("after")
    if resume:
        cursor = _parse_cursor(resume)
    elif request.query.get("from") == "start":
        cursor = LOG_START
    elif request.query.get("recent"):
        cursor = await svc.feed.position_back(_recent(request.query["recent"]))
    else:
        cursor = await svc.feed.head()
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
        }
    )
    await response.prepare(request)
    await response.write(b": evtrack event stream\n\n")
    loop = asyncio.get_running_loop()
    last_write = loop.time()
    # Every subscriber of this process shares one reader of the log (EventFeed); none holds
    # a database connection while it waits. It wakes at least every WAKE_S to notice a
    # client that left or a server that stops (aiohttp cancels neither handler).
    async with svc.feed.subscribe(cursor) as subscription:
        while not stream_over(request):
            for record in await subscription.next(WAKE_S):
                if not await wanted.matches(record):
                    continue
                if not await readable.may_read(record.stream_id):
                    continue
                entry = audit.describe(record)
                data = msgspec.json.encode(entry).decode()
                message = f"id: {entry['position']}\nevent: {record.event_type}\ndata: {data}\n\n"
                await response.write(message.encode())
                last_write = loop.time()
            if loop.time() - last_write >= HEARTBEAT_S:
                await response.write(b": keep-alive\n\n")
                last_write = loop.time()
    return response


def audit_routes() -> list[Route]:
    model_read, exp_read = Permission.MODEL_READ, Permission.EXPERIMENT_READ
    base = "/evtrack/audit"
    return [
        Route(
            "GET",
            f"{base}/registered-models/history",
            model_history,
            model_read,
            reads=("registry",),
            resource=arg("name"),
        ),
        Route(
            "GET",
            f"{base}/registered-models/as-of",
            model_as_of,
            model_read,
            reads=("registry",),
            resource=arg("name"),
        ),
        Route("GET", f"{base}/runs/history", run_history, exp_read, resource=run),
        Route(
            "GET", f"{base}/users/history", user_history, Permission.AUTHENTICATED, reads=("auth",)
        ),
        Route(
            "GET",
            f"{base}/experiments/history",
            experiment_history,
            exp_read,
            resource=arg("experiment_id"),
        ),
        Route("GET", "/evtrack/events/stream", event_stream, Permission.AUTHENTICATED),
    ]

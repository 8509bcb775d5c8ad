"""Helpers every handler uses: JSON responses, running commands, who is asking."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import msgspec
from aiohttp import web

from evtrack.api._access import auth_enabled, claimed_name, principal
from evtrack.api._state import SERVICES, Services
from evtrack.application import Context
from evtrack.domain import Command
from evtrack.errors import ErrorCode, EvtrackError
from evtrack.search import SqlQuery, next_page_token

R = TypeVar("R")

_encoder = msgspec.json.Encoder()
REQUEST_ID = web.AppKey("request_id_header", str)


SHUTTING_DOWN = web.AppKey("shutting_down", asyncio.Event)
"""Set when the server begins to stop: long-lived streams end so it can stop at once."""


def stream_over(request: web.Request) -> bool:
    """Whether a long-lived answer (an SSE stream) should end: its client went away, or the
    server is stopping. aiohttp does not cancel a handler whose client left, and shutdown
    waits for every handler, so streams check between two writes."""
    transport = request.transport
    stopping = request.app.get(SHUTTING_DOWN)
    return (
        transport is None or transport.is_closing() or (stopping is not None and stopping.is_set())
    )


def json_response(body: Any, status: int = 200) -> web.Response:
    return web.Response(body=_encoder.encode(body), status=status, content_type="application/json")


def prerendered_response(members: Sequence[tuple[str, str | None]]) -> web.Response:
    """An object whose member values are JSON texts rendered elsewhere (by PostgreSQL).

    The texts are spliced in as they are, never decoded; a member whose text is None is left
    out, as the reference leaves out unset fields.
    """
    body = ",".join(f"{_encoder.encode(k).decode()}:{v}" for k, v in members if v is not None)
    return web.Response(body=("{" + body + "}").encode(), content_type="application/json")


def empty() -> web.Response:
    return json_response({})


def services(request: web.Request) -> Services:
    return request.app[SERVICES]


async def context(request: web.Request) -> Context:
    """The caller of a command: the authenticated principal (the fixed local user when
    authentication is off, with the name the request claims kept as an unverified note)."""
    caller = await principal(request)
    claimed = None if auth_enabled(request) else claimed_name(request)
    return Context(
        principal=caller.name,
        claimed_principal=claimed if claimed != caller.name else None,
        request_id=request.get("request_id"),
        client=request.headers.get("User-Agent"),
        idempotency_key=request.headers.get("Idempotency-Key") or None,
        scope=request.path,
    )


async def execute(request: web.Request, command: Command) -> Any:
    """Execute ``command`` for this request's caller; its answer, as ``result_type``."""
    return await services(request).commands.execute(command, await context(request))


# Seconds a client is asked to wait before retrying a read refused as stale: short, because
# the usual cause (a projector busy with a burst) clears in moments.
STALE_RETRY_AFTER_S = 1


async def wait_fresh(request: web.Request, *names: str) -> None:
    """Hold the read until ``names`` include what was committed before it (invariant 7).

    When they cannot catch up within the bound, refuse with 503 and ``Retry-After`` rather
    than answer from stale read models (invariant 12); MLflow's client retries a 503. A caller
    that accepts stale data says ``X-Evtrack-Consistency: eventual`` and is answered at once.
    """
    if request.headers.get("X-Evtrack-Consistency", "").lower() == "eventual":
        return
    freshness = services(request).freshness
    behind = await freshness.wait(names)
    if behind:
        raise EvtrackError(
            ErrorCode.TEMPORARILY_UNAVAILABLE,
            f"Read models {', '.join(behind)} did not catch up with the event log within "
            f"{freshness.timeout_s:g} s; retry later, or send 'X-Evtrack-Consistency: eventual' "
            "to read possibly stale data",
            headers={"Retry-After": str(STALE_RETRY_AFTER_S)},
        )


async def search_response(
    request: web.Request,
    query: SqlQuery,
    load: Callable[[Any, list[Any]], Awaitable[Sequence[Any]]],
    list_key: str,
    *,
    row_key: Callable[[Any], Any] = lambda row: row[0],
) -> web.Response:
    """Run a compiled search and answer one page of it the way every MLflow search does.

    The query fetches one row more than the page (that row only says whether a next page
    exists); ``load`` turns the page's keys into wire objects in the same order. Empty lists
    and a missing next page are left out of the answer, as the reference does.
    """
    pool = services(request).pool
    rows = await pool.fetch(query.sql, *query.args)
    found = await load(pool, [row_key(r) for r in rows[: query.limit]])
    body: dict[str, object] = {}
    if found:
        body[list_key] = found
    if token := next_page_token(query, len(rows)):
        body["next_page_token"] = token
    return json_response(body)


def prerendered_page(query: SqlQuery, items: Sequence[str], list_key: str) -> web.Response:
    """One search page from items already rendered as JSON texts, ``query.limit + 1`` at most.

    The answer has the same shape as :func:`search_response`'s: the first ``query.limit``
    items under ``list_key`` and the next page's token, each left out when there is none.
    """
    page = items[: query.limit]
    token = next_page_token(query, len(items))
    return prerendered_response(
        [
            (list_key, "[" + ",".join(page) + "]" if page else None),
            ("next_page_token", _encoder.encode(token).decode() if token else None),
        ]
    )

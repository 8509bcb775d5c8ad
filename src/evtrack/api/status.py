"""The deployment's status as JSON, once or live: for the console's status page and for tools.

``GET /api/2.0/evtrack/status`` answers the latest snapshot (see
:class:`~evtrack.application.StatusBoard`); ``GET /api/2.0/evtrack/status/stream`` sends one
as a Server-Sent Event every second, so a page that shows it is never more than about two
seconds old. Both are for admins: they show every read model, error and parked event.
"""

from __future__ import annotations

import contextlib

import msgspec
from aiohttp import web

from evtrack.api._common import json_response, services, stream_over
from evtrack.api._routing import Route
from evtrack.permissions import Permission


async def status(request: web.Request) -> web.Response:
    return json_response(await services(request).status.snapshot())


async def status_stream(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
        }
    )
    await response.prepare(request)
    await response.write(b": evtrack status stream\n\n")
    async with contextlib.aclosing(services(request).status.updates()) as snapshots:
        async for snapshot in snapshots:
            if stream_over(request):
                break
            data = msgspec.json.encode(snapshot).decode()
            message = f"id: {snapshot['sequence']}\nevent: status\ndata: {data}\n\n"
            await response.write(message.encode())
    return response


def status_routes() -> list[Route]:
    return [
        Route("GET", "/evtrack/status", status, Permission.ADMIN),
        Route("GET", "/evtrack/status/stream", status_stream, Permission.ADMIN),
    ]

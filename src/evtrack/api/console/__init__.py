"""The evtrack console at ``/console/``: what only an event log knows, for people.

Server-rendered pages (promotion timelines with an as-of view, the approval queue, live
status, a live event feed, a long-series explorer) with a few small JavaScript modules of our
own for the live parts. It works after a plain ``pip install``: no Node.js, no bundle, no
third-party code. Every page declares its permission like any route; errors on console pages
are rendered as HTML (see :func:`error_page`).
"""

from __future__ import annotations

from aiohttp import web

from evtrack.api._access import FILTERED, arg
from evtrack.api._routing import Route
from evtrack.api.console._assets import FILES, STATIC_PREFIX, static_handler
from evtrack.api.console._explorer import explorer, run_if_named
from evtrack.api.console._feed import feed_page
from evtrack.api.console._html import CONSOLE_POLICY, error_page
from evtrack.api.console._models import home, model, models
from evtrack.api.console._requests import queue
from evtrack.api.console._status import status_page
from evtrack.permissions import Permission

CONSOLE_PATH = "/console"
STATIC_PATHS = tuple(f"{STATIC_PREFIX}{name}" for name in FILES)


async def _to_home(request: web.Request) -> web.StreamResponse:
    raise web.HTTPPermanentRedirect("/console/")


def console_routes() -> list[Route]:
    root = ("",)
    registry = ("registry",)
    read_model = Permission.MODEL_READ
    return [
        Route("GET", CONSOLE_PATH, _to_home, Permission.AUTHENTICATED, prefixes=root),
        # The console's own code: no data, open like /health.
        *(
            Route("GET", path, static_handler(name), Permission.NONE, prefixes=root)
            for path, name in zip(STATIC_PATHS, FILES, strict=True)
        ),
        Route("GET", "/console/", home, Permission.AUTHENTICATED, prefixes=root),
        Route("GET", "/console/models", models, read_model, registry, root, FILTERED),
        Route("GET", "/console/model", model, read_model, registry, root, arg("name")),
        Route("GET", "/console/requests", queue, read_model, registry, root, FILTERED),
        Route("GET", "/console/status", status_page, Permission.ADMIN, prefixes=root),
        # As the event stream: each user sees the events of what they may read.
        Route("GET", "/console/feed", feed_page, Permission.AUTHENTICATED, prefixes=root),
        Route(
            "GET",
            "/console/explorer",
            explorer,
            Permission.EXPERIMENT_READ,
            prefixes=root,
            resource=run_if_named,
        ),
    ]


def is_console(path: str) -> bool:
    return path == CONSOLE_PATH or path.startswith(CONSOLE_PATH + "/")


__all__ = [
    "CONSOLE_POLICY",
    "STATIC_PATHS",
    "console_routes",
    "error_page",
    "is_console",
]

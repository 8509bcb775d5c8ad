"""MLflow's web UI at ``/``: its ``index.html`` and its files under ``/static-files/``.

The bundle comes from the installed ``mlflow`` package (``pip install 'evtrack[ui]'``), found
when the server starts (see :mod:`evtrack.api._ui_bundle`). Without it, ``/`` is a short page
that says how to install it. The UI itself is a single-page app with hash routes
(``/#/experiments/1``): it needs no other page route, only the API it calls.
"""

from __future__ import annotations

import html

from aiohttp import web

from evtrack.api._routing import Route
from evtrack.api._ui_bundle import BundleFiles, UiBundle
from evtrack.errors import ErrorCode, EvtrackError
from evtrack.permissions import Permission

UI_FILES = web.AppKey("ui_files", BundleFiles)

UI_POLICY = "; ".join(
    [
        "default-src 'self'",
        # No inline script and no eval: the bundle needs neither (its index.html loads one
        # script file, and the browser tests fail on any policy violation).
        "script-src 'self'",
        # The UI's component libraries (Emotion, Ant Design's CSS-in-JS) write <style>
        # elements at run time, without a nonce; without this the pages lose their layout.
        "style-src 'self' 'unsafe-inline'",
        # Artifact previews draw fetched files from blob: URLs; the styles embed data: images
        # and fonts.
        "img-src 'self' data: blob:",
        "font-src 'self' data:",
        "media-src 'self' blob:",
        # HTML and PDF artifact previews are blob: frames (they inherit this policy, so an HTML
        # artifact's own scripts do not run); code editors start blob: workers.
        "frame-src 'self' blob:",
        "worker-src 'self' blob:",
        # Requests go to evtrack only: no third-party fetches from users' browsers.
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)
"""The Content-Security-Policy of the UI's page, as strict as MLflow's bundle allows: scripts
only from evtrack itself, no plug-ins, no framing by other sites, no requests elsewhere."""

INSTALL_HINT = "pip install 'evtrack[ui]'"

_NO_UI_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>evtrack</title>
</head>
<body>
<main>
<h1>evtrack</h1>
<p>This evtrack server is running, but MLflow's web UI is not installed.</p>
<p>To get it, install evtrack with its <code>ui</code> extra in the server's environment and
restart the server:</p>
<pre><code>{hint}</code></pre>
<p>The evtrack console (audit timeline, approvals, live status) is at
<a href="/console/">/console/</a>.</p>
<p>The MLflow REST API answers under <code>/api/2.0/mlflow/</code>; point MLflow clients at
this server's address.</p>
</main>
</body>
</html>
"""


def ui_files(bundle: UiBundle | None) -> BundleFiles | None:
    return BundleFiles(bundle) if bundle is not None else None


def _files(request: web.Request) -> BundleFiles | None:
    return request.app.get(UI_FILES)


async def index(request: web.Request) -> web.StreamResponse:
    files = _files(request)
    if files is None:
        page = _NO_UI_PAGE.format(hint=html.escape(INSTALL_HINT))
        return web.Response(
            text=page,
            content_type="text/html",
            charset="utf-8",
            headers={"Cache-Control": "no-cache"},
        )
    return await files.respond(
        request, files.bundle.index, headers={"Content-Security-Policy": UI_POLICY}
    )


async def static_file(request: web.Request) -> web.StreamResponse:
    files = _files(request)
    path = files.resolve(request.match_info["path"]) if files is not None else None
    if files is None or path is None:
        raise EvtrackError(ErrorCode.ENDPOINT_NOT_FOUND, f"No UI file at {request.path}")
    return await files.respond(request, path)


def ui_routes() -> list[Route]:
    root = ("",)
    routes = []
    for method in ("GET", "HEAD"):
        routes += [
            Route(method, "/", index, Permission.AUTHENTICATED, prefixes=root),
            Route(method, "/static-files/{path:.+}", static_file, Permission.NONE, prefixes=root),
        ]
    return routes

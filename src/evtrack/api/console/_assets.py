"""The console's own static files (its stylesheet and small JavaScript modules).

They ship inside the package (``static/``), so a plain ``pip install`` serves them: no
Node.js, no build step, no third-party code. Each is served at a fixed path and linked with
its content hash as a version, so browsers cache it for good and a new release is fetched
at once. Only the files listed here are served: no path from a request reaches the disk.
"""

from __future__ import annotations

import gzip
import hashlib
from dataclasses import dataclass
from functools import cache
from importlib import resources

from aiohttp import web

from evtrack.api._routing import Handler

STATIC_PREFIX = "/console/static/"
_TYPES = {
    ".css": "text/css",
    ".js": "text/javascript",
    ".svg": "image/svg+xml",
}
FILES = (
    "console.css",
    "favicon.svg",
    "live.js",
    "requests.js",
    "status.js",
    "feed.js",
    "explorer.js",
)


@dataclass(frozen=True)
class Asset:
    name: str
    body: bytes
    gzipped: bytes
    content_type: str
    version: str


@cache
def asset(name: str) -> Asset:
    body = resources.files("evtrack.api.console").joinpath("static", name).read_bytes()
    suffix = name[name.rindex(".") :]
    return Asset(
        name=name,
        body=body,
        gzipped=gzip.compress(body, compresslevel=9, mtime=0),
        content_type=_TYPES[suffix],
        version=hashlib.sha256(body).hexdigest()[:12],
    )


def asset_url(name: str) -> str:
    return f"{STATIC_PREFIX}{name}?v={asset(name).version}"


def static_handler(name: str) -> Handler:
    async def serve(request: web.Request) -> web.StreamResponse:
        found = asset(name)
        etag = f'"{found.version}"'
        headers = {
            "ETag": etag,
            "Vary": "Accept-Encoding",
            # Linked with ?v=<hash>: that URL never changes content, so keep it for good.
            "Cache-Control": "public, max-age=31536000, immutable"
            if request.query.get("v") == found.version
            else "no-cache",
        }
        if request.headers.get("If-None-Match") == etag:
            return web.Response(status=304, headers=headers)
        body = found.body
        if "gzip" in request.headers.get("Accept-Encoding", ""):
            body = found.gzipped
            headers["Content-Encoding"] = "gzip"
        return web.Response(body=body, content_type=found.content_type, headers=headers)

    return serve

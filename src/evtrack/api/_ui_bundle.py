"""MLflow's web UI bundle: where the installed ``mlflow`` package keeps it, and its files
served with the right type, caching and compression.

evtrack never ships the bundle: it serves the one inside the installed ``mlflow`` package (the
``ui`` extra pins the versions it was tested with), from ``mlflow/server/js/build``, or from a
directory the operator names (``--ui-dir``). The package is found without importing it (an
import of mlflow takes seconds and pulls in half of PyPI).

Caching follows the bundle's build: a file whose name carries a content hash
(``main.c2f5f8d4.js``) never changes under that name, so browsers keep it for a year without
asking; anything else (``index.html``, ``favicon.ico``) is revalidated on every use with its
ETag. Text files are gzipped once, on first request, and kept in memory: the whole bundle
compresses from 26 MB to 7 MB in about half a second of CPU, far cheaper than compressing on
every page load.
"""

from __future__ import annotations

import asyncio
import gzip
import importlib.util
import mimetypes
import re
from collections import OrderedDict
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from pathlib import Path

from aiohttp import web

# The build directory inside the mlflow package, as MLflow's own server finds it.
_BUILD_IN_PACKAGE = ("server", "js", "build")

# Types of the files a React build holds; the platform's mimetypes table varies by system
# (/etc/mime.types), and a script served with the wrong type is refused under nosniff.
_TYPES = {
    ".html": "text/html",
    ".js": "text/javascript",
    ".mjs": "text/javascript",
    ".cjs": "text/javascript",
    ".css": "text/css",
    ".json": "application/json",
    ".map": "application/json",
    ".txt": "text/plain",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".gif": "image/gif",
    ".ico": "image/x-icon",
    ".webp": "image/webp",
    ".woff": "font/woff",
    ".woff2": "font/woff2",
    ".ttf": "font/ttf",
    ".eot": "application/vnd.ms-fontobject",
    ".wasm": "application/wasm",
}
_CHARSET_TYPES = {"text/html", "text/javascript", "text/css", "application/json", "text/plain"}
# Worth gzipping: text, and fonts that are not compressed already (woff/woff2 are).
_COMPRESSIBLE = _CHARSET_TYPES | {"image/svg+xml", "image/x-icon", "font/ttf"}
_MIN_GZIP_BYTES = 1024

# A build's content hash: a run of 8 or more hex digits between dots in the file name.
_HASHED = re.compile(r"\.[0-9a-f]{8,}\.")
IMMUTABLE = "public, max-age=31536000, immutable"
_Key = tuple[Path, int, int]
REVALIDATE = "no-cache"


@dataclass(frozen=True)
class UiBundle:
    """A directory holding MLflow's built UI (``index.html`` and its assets)."""

    root: Path
    mlflow_version: str | None  # the package it came from; None for a named directory

    @property
    def index(self) -> Path:
        return self.root / "index.html"


def locate_ui_bundle(configured: str | None = None) -> UiBundle | None:
    """The UI bundle to serve: ``configured`` if given (None if it holds no ``index.html``),
    else the installed mlflow package's; None when there is none (mlflow is not installed,
    or only ``mlflow-skinny``, which has no UI)."""
    if configured:
        root = Path(configured).expanduser()
        return UiBundle(root.resolve(), None) if (root / "index.html").is_file() else None
    try:
        spec = importlib.util.find_spec("mlflow")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        root = Path(location).joinpath(*_BUILD_IN_PACKAGE)
        if (root / "index.html").is_file():
            try:
                installed: str | None = package_version("mlflow")
            except PackageNotFoundError:
                installed = None
            return UiBundle(root.resolve(), installed)
    return None


def content_type(path: Path) -> str:
    suffix = path.suffix.lower()
    found = _TYPES.get(suffix) or mimetypes.guess_type(path.name)[0]
    return found or "application/octet-stream"


def cache_control(path: Path) -> str:
    return IMMUTABLE if _HASHED.search(path.name) else REVALIDATE


def accepts_gzip(request: web.Request) -> bool:
    """Whether ``Accept-Encoding`` allows gzip (``gzip;q=0`` refuses it; ``*`` allows it)."""
    allowed: dict[str, bool] = {}
    for part in request.headers.get("Accept-Encoding", "").split(","):
        coding, _, params = part.strip().partition(";")
        coding = coding.strip().lower()
        if not coding:
            continue
        quality = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        allowed[coding] = quality > 0
    return allowed.get("gzip", allowed.get("x-gzip", allowed.get("*", False)))


def _etag_matches(request: web.Request, etag: str) -> bool:
    header = request.headers.get("If-None-Match")
    if not header:
        return False
    candidates = {tag.strip().removeprefix("W/") for tag in header.split(",")}
    return "*" in candidates or etag in candidates


class _GzipCache:
    """Gzipped file contents, each compressed once (in a worker thread), bounded in bytes.

    Keyed by path, modification time and size, so a reinstalled mlflow is never answered
    from an old entry. Concurrent first requests share one compression, which finishes (and
    is kept) even if the client that started it goes away.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._done: OrderedDict[_Key, bytes] = OrderedDict()
        self._pending: dict[_Key, asyncio.Future[bytes]] = {}
        self._bytes = 0

    async def get(self, path: Path, mtime_ns: int, size: int) -> bytes:
        key = (path, mtime_ns, size)
        found = self._done.get(key)
        if found is not None:
            self._done.move_to_end(key)
            return found
        pending = self._pending.get(key)
        if pending is None:
            pending = asyncio.ensure_future(asyncio.to_thread(_gzip_file, path))
            self._pending[key] = pending
            pending.add_done_callback(lambda done: self._finished(key, done))
        return await asyncio.shield(pending)

    def _finished(self, key: _Key, done: asyncio.Future[bytes]) -> None:
        self._pending.pop(key, None)
        if done.cancelled() or done.exception() is not None:
            return  # the next request tries again (and gets the error, e.g. a vanished file)
        data = done.result()
        if len(data) > self.max_bytes:
            return
        self._done[key] = data
        self._bytes += len(data)
        while self._bytes > self.max_bytes:
            _, evicted = self._done.popitem(last=False)
            self._bytes -= len(evicted)


def _gzip_file(path: Path) -> bytes:
    # mtime=0: the same file always compresses to the same bytes (stable across servers).
    return gzip.compress(path.read_bytes(), compresslevel=9, mtime=0)


class BundleFiles:
    """Answers requests for the files of one UI bundle."""

    def __init__(self, bundle: UiBundle, *, gzip_cache_bytes: int = 64 * 1024 * 1024) -> None:
        self.bundle = bundle
        self._gzip = _GzipCache(gzip_cache_bytes)

    def resolve(self, relative: str) -> Path | None:
        """The file ``relative`` names inside the bundle, or None: nothing outside it (no
        ``..``, no absolute path, no symlink out of it), no directory."""
        if not relative or "\x00" in relative or "\\" in relative:
            return None
        parts = relative.split("/")
        if any(part in ("", ".", "..") for part in parts):
            return None
        root = self.bundle.root
        try:
            path = root.joinpath(*parts).resolve()
        except (OSError, RuntimeError):
            return None
        if not path.is_relative_to(root) or not path.is_file():
            return None
        return path

    async def respond(
        self, request: web.Request, path: Path, *, headers: dict[str, str] | None = None
    ) -> web.StreamResponse:
        """``path`` (inside the bundle) with its type, cache policy and ETag; gzipped when the
        type gains from it and the client accepts it; 304 when the client's copy is current."""
        stat = path.stat()
        kind = content_type(path)
        base = {"Cache-Control": cache_control(path), **(headers or {})}
        if kind in _CHARSET_TYPES:
            base["Content-Type"] = f"{kind}; charset=utf-8"
        else:
            base["Content-Type"] = kind
        compressible = kind in _COMPRESSIBLE and stat.st_size >= _MIN_GZIP_BYTES
        if compressible:
            base["Vary"] = "Accept-Encoding"
        identity_tag = f'"{stat.st_mtime_ns:x}-{stat.st_size:x}"'
        if compressible and accepts_gzip(request):
            etag = f'"{stat.st_mtime_ns:x}-{stat.st_size:x}-gz"'
            if _etag_matches(request, etag):
                return web.Response(status=304, headers={**base, "ETag": etag})
            body = await self._gzip.get(path, stat.st_mtime_ns, stat.st_size)
            response = web.Response(body=body, headers={**base, "ETag": etag})
            response.headers["Content-Encoding"] = "gzip"
            return response
        if _etag_matches(request, identity_tag):
            return web.Response(status=304, headers={**base, "ETag": identity_tag})
        # aiohttp's FileResponse streams the file (sendfile) and handles ranges.
        return web.FileResponse(path, headers={**base, "ETag": identity_tag})

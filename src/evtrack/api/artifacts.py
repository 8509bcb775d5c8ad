"""The ``mlflow-artifacts`` proxy API: what MLflow's client uses in proxied-artifact mode.

Experiments get ``artifact_location = mlflow-artifacts:/<exp_id>``; the client resolves that
to ``<tracking_uri>/api/2.0/mlflow-artifacts/artifacts/<path>`` and moves every file through
these four routes (``mlflow/store/artifact/http_artifact_repo.py``). Behaviour mirrors
``mlflow server`` 3.17.2 (``mlflow/server/artifact_router.py`` and ``handlers.py``), except
that evtrack answers with MLflow's error JSON where the reference leaks FastAPI's
``{"detail": ...}`` or a 500: the client retries 5xx, so a deterministic failure must be 4xx.

Handlers stream in both directions; none of them ever holds a whole artifact in memory.
"""

from __future__ import annotations

import mimetypes
import posixpath
import unicodedata
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, cast

import msgspec
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from evtrack.api._access import artifact_path
from evtrack.api._bodies import body_chunks
from evtrack.api._routing import Route
from evtrack.artifacts import (
    ArtifactStore,
    FileInfo,
    invalid_path,
    normalize_artifact_path,
    normalize_upload_path,
)
from evtrack.errors import ErrorCode, EvtrackError, invalid
from evtrack.permissions import Permission

ARTIFACT_STORE = web.AppKey("artifact_store", ArtifactStore)
"""Where the app puts its ``ArtifactStore``; handlers look it up through ``config_dict`` so
the routes also work when mounted in a sub-application."""

_PREFIXES = ("/api/2.0", "/ajax-api/2.0")
_ENCODER = msgspec.json.Encoder()
_FILE_PATH = "/mlflow-artifacts/artifacts/{path:.+}"
_LIST_PATH = "/mlflow-artifacts/artifacts"

# mlflow/utils/mime_type_utils.py::get_text_extensions: served as text/plain so the UI can
# preview them. "MLmodel" and "mlproject" (MLflow's own spelling of MLPROJECT_FILE_NAME) have no
# extension and match on the whole name.
_TEXT_NAMES = (
    "txt log err cfg conf cnf cf ini properties prop hocon toml yaml yml xml json js py py3 "
    "csv tsv md rst ipynb MLmodel mlproject"
)
_TEXT_EXTENSIONS = frozenset(_TEXT_NAMES.split())
# werkzeug's token characters: a filename made only of these goes into the header unquoted.
_TOKEN_CHARS = frozenset(
    "!#$%&'*+-.0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ^_`abcdefghijklmnopqrstuvwxyz|~"
)


def guess_mime_type(filename: str) -> str:
    """The ``Content-Type`` MLflow serves for an artifact named ``filename``."""
    ext = posixpath.splitext(filename)[1].replace(".", "") or filename
    if ext in _TEXT_EXTENSIONS:
        return "text/plain"
    return mimetypes.guess_type(filename)[0] or "application/octet-stream"


def content_disposition(filename: str) -> str:
    """``attachment; filename=...`` exactly as MLflow builds it (RFC 6266 / RFC 5987).

    Always an attachment, so a browser never renders an uploaded HTML file on the server's
    origin. Non-ASCII names get an ASCII fallback plus a UTF-8 ``filename*``.
    """

    def quote(value: str) -> str:
        if value and _TOKEN_CHARS.issuperset(value):
            return value
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'

    if filename.isascii():
        return f"attachment; filename={quote(filename)}"
    fallback = (
        unicodedata.normalize("NFKD", filename).encode("ascii", "ignore").decode("ascii")
        or "download"
    )
    encoded = urllib.parse.quote(filename, safe="!#$&+-.^_`|~")
    return f"attachment; filename={quote(fallback)}; filename*=UTF-8''{encoded}"


def file_info_to_json(info: FileInfo) -> dict[str, Any]:
    """One ``files[]`` entry as MLflow's proto JSON renders it.

    ``file_size`` is omitted for directories, and for empty files too: the reference
    serialises the proto with default-value elision, so a 0 never appears on the wire.
    """
    out: dict[str, Any] = {"path": info.path, "is_dir": info.is_dir}
    if not info.is_dir and info.file_size:
        out["file_size"] = info.file_size
    return out


async def list_directory(store: ArtifactStore, rel_dir: str) -> list[FileInfo]:
    """The children of ``rel_dir`` (validated here, ``""`` = root), sorted by basename.

    Shared with the run-scoped ``mlflow/artifacts/list`` route, which joins the run's
    artifact root with the client's ``path`` and must apply the same path rules.
    """
    rel = normalize_artifact_path(rel_dir, allow_root=True)
    return sorted(await store.list(rel), key=lambda info: info.path)


def _json(body: dict[str, Any]) -> web.Response:
    """JSON with a bare ``application/json`` content type, as the reference sends it."""
    return web.Response(body=_ENCODER.encode(body), content_type="application/json")


def _store(request: web.Request) -> ArtifactStore:
    return request.config_dict[ARTIFACT_STORE]


def _path_param(request: web.Request) -> str:
    """The artifact path in the URL, canonicalised.

    aiohttp drops a raw ``#...`` from the request target before routing, which would let
    ``a#b`` silently become ``a``; a fragment never belongs in a request, so it is refused.
    """
    if "#" in request.raw_path:
        raise invalid_path()
    return normalize_artifact_path(request.match_info["path"])


async def upload_artifact(request: web.Request) -> web.StreamResponse:
    """``PUT .../artifacts/<path>``: stream the raw body into the store, answer ``{}``."""
    _path_param(request)
    if request.match_info["path"].endswith("/"):
        raise invalid("Artifact path must include a filename (cannot end with '/').")
    rel = normalize_upload_path(request.match_info["path"])  # stored under the name asked for
    try:
        await _store(request).put(rel, body_chunks(request))
    except (ConnectionResetError, HttpProcessingError):
        # The client went away or sent a broken body; the store has already discarded the
        # partial file. A 4xx (not a logged 500) because nothing is wrong with the server.
        raise EvtrackError(
            ErrorCode.BAD_REQUEST, "Upload aborted: the request body was incomplete or invalid"
        ) from None
    return _json({})


async def download_artifact(request: web.Request) -> web.StreamResponse:
    """``GET .../artifacts/<path>``: stream the file back as an attachment.

    A missing path or a directory is 404 RESOURCE_DOES_NOT_EXIST with MLflow's error JSON.
    Errors after the headers are sent can only abort the connection, which the client
    detects because ``Content-Length`` is always set.
    """
    rel = _path_param(request)
    size, chunks = await _store(request).open(rel)
    try:
        name = posixpath.basename(rel)
        resp = web.StreamResponse(
            headers={
                "Content-Disposition": content_disposition(name),
                "X-Content-Type-Options": "nosniff",
            }
        )
        resp.content_type = guess_mime_type(name)
        resp.content_length = size
        await resp.prepare(request)
        async for chunk in chunks:
            await resp.write(chunk)
        await resp.write_eof()
        return resp
    finally:
        await _aclose(chunks)


async def list_artifacts(request: web.Request) -> web.StreamResponse:
    """``GET .../artifacts?path=<dir>``: ``{"files": [...]}`` with basenames, or ``{}``.

    ``{}`` for an empty directory, a missing path and a file path alike: MLflow's client
    takes an empty listing to mean "this path is a file" when downloading.
    """
    if "#" in request.raw_path:
        raise invalid_path()
    files = await list_directory(_store(request), request.query.get("path", ""))
    body = {"files": [file_info_to_json(f) for f in files]} if files else {}
    return _json(body)


async def delete_artifact(request: web.Request) -> web.StreamResponse:
    """``DELETE .../artifacts/<path>``: remove a file or a directory tree; ``{}`` even if
    nothing was there (as the reference does), so a retried delete is not an error."""
    rel = _path_param(request)
    await _store(request).delete(rel)
    return _json({})


async def _aclose(chunks: AsyncIterator[bytes]) -> None:
    aclose = cast(Callable[[], Awaitable[None]] | None, getattr(chunks, "aclose", None))
    if aclose is not None:
        await aclose()


def artifact_routes() -> list[Route]:
    """The ``mlflow-artifacts`` proxy routes, relative to ``/api/2.0`` and ``/ajax-api/2.0``."""
    return [
        Route(
            "PUT",
            _FILE_PATH,
            upload_artifact,
            Permission.EXPERIMENT_EDIT,
            prefixes=_PREFIXES,
            resource=artifact_path,
            body_types=None,  # raw bytes of any type, streamed to the store
        ),
        Route(
            "GET",
            _FILE_PATH,
            download_artifact,
            Permission.EXPERIMENT_READ,
            prefixes=_PREFIXES,
            resource=artifact_path,
        ),
        Route(
            "GET",
            _LIST_PATH,
            list_artifacts,
            Permission.EXPERIMENT_READ,
            prefixes=_PREFIXES,
            resource=artifact_path,
        ),
        Route(
            "DELETE",
            _FILE_PATH,
            delete_artifact,
            Permission.EXPERIMENT_EDIT,
            prefixes=_PREFIXES,
            resource=artifact_path,
        ),
    ]

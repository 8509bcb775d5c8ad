"""Run-scoped artifact routes: ``artifacts/list`` and the UI's ``/get-artifact``.

These take a run and a path relative to the run's artifact root, where the proxy routes take
paths relative to the whole artifact store; both go through the same path validation.
"""

from __future__ import annotations

import posixpath

from aiohttp import web

from evtrack.api._access import run
from evtrack.api._common import json_response, services
from evtrack.api._requests import read_args
from evtrack.api._routing import Route
from evtrack.api.artifacts import (
    ARTIFACT_STORE,
    content_disposition,
    file_info_to_json,
    guess_mime_type,
    list_directory,
)
from evtrack.artifacts import normalize_artifact_path
from evtrack.errors import not_found
from evtrack.permissions import Permission
from evtrack.queries import runs as queries

PROXY_SCHEME = "mlflow-artifacts:"


def store_path(artifact_uri: str) -> str | None:
    """The store-relative path behind an ``mlflow-artifacts:`` URI; None for other stores."""
    if not artifact_uri.startswith(PROXY_SCHEME):
        return None
    rest = artifact_uri[len(PROXY_SCHEME) :]
    if rest.startswith("//"):
        # mlflow-artifacts://host:port/path: the host part names this server.
        rest = rest[2:].partition("/")[2]
    return rest.strip("/")


async def _run_root(request: web.Request, run_id: str) -> tuple[str, str | None]:
    info = await queries.get_run_info(services(request).pool, run_id)
    if info is None:
        raise not_found(f"Run with id={run_id} not found")
    return info.artifact_uri, store_path(info.artifact_uri)


async def list_run_artifacts(request: web.Request) -> web.Response:
    args = await read_args(request)
    run_id = args.run_id()
    sub = args.string("path") or ""
    root_uri, root = await _run_root(request, run_id)
    body: dict[str, object] = {"root_uri": root_uri}
    if root is None:
        return json_response(body)
    sub_path = normalize_artifact_path(sub, allow_root=True)
    listed = posixpath.join(root, sub_path) if sub_path else root
    files = await list_directory(request.app[ARTIFACT_STORE], listed)
    if files:
        entries = []
        for f in files:
            entry = file_info_to_json(f)
            entry["path"] = posixpath.join(sub_path, f.path) if sub_path else f.path
            entries.append(entry)
        body["files"] = entries
    return json_response(body)


async def get_artifact(request: web.Request) -> web.StreamResponse:
    run_id = request.query.get("run_uuid") or request.query.get("run_id") or ""
    _, root = await _run_root(request, run_id)
    if root is None:
        raise not_found("Artifacts of this run are not stored by this server")
    rel = normalize_artifact_path(request.query.get("path", ""))
    return await stream_artifact(request, posixpath.join(root, rel))


async def stream_artifact(request: web.Request, store_path: str) -> web.StreamResponse:
    """Send one stored file, streamed, for the UI's preview routes."""
    size, chunks = await request.app[ARTIFACT_STORE].open(store_path)
    try:
        name = posixpath.basename(store_path)
        response = web.StreamResponse(headers={"Content-Disposition": content_disposition(name)})
        response.content_type = guess_mime_type(name)
        response.content_length = size
        await response.prepare(request)
        async for chunk in chunks:
            await response.write(chunk)
        await response.write_eof()
        return response
    finally:
        aclose = getattr(chunks, "aclose", None)
        if aclose is not None:
            await aclose()


def run_artifact_routes() -> list[Route]:
    read = Permission.EXPERIMENT_READ
    return [
        Route(
            "GET", "/mlflow/artifacts/list", list_run_artifacts, read, reads=("runs",), resource=run
        ),
        Route(
            "GET",
            "/get-artifact",
            get_artifact,
            read,
            reads=("runs",),
            prefixes=("",),
            resource=run,
        ),
    ]

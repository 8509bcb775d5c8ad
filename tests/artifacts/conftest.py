"""A minimal aiohttp app around the artifact routes, served on loopback for real-HTTP tests.

The production app (error rendering, auth, route mounting) is written elsewhere; this one
does only what the routes rely on: render ``EvtrackError`` as MLflow's error JSON and mount
each ``Route`` under its prefixes.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from evtrack.api.artifacts import ARTIFACT_STORE, artifact_routes
from evtrack.artifacts import ArtifactStore, LocalArtifactStore
from evtrack.errors import EvtrackError

BASE = "/api/2.0/mlflow-artifacts/artifacts"


def make_app(store: ArtifactStore, prefixes: tuple[str, ...] | None = None) -> web.Application:
    """An app with the artifact routes mounted under ``prefixes`` (default: each route's own)."""

    @web.middleware
    async def render_errors(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        try:
            return await handler(request)
        except EvtrackError as err:
            return web.json_response(
                {"error_code": err.code.value, "message": err.message}, status=err.http_status
            )

    app = web.Application(middlewares=[render_errors])
    app[ARTIFACT_STORE] = store
    for route in artifact_routes():
        for prefix in prefixes or route.prefixes or ("/api/2.0",):
            app.router.add_route(route.method, prefix + route.path, route.handler)
    return app


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Env:
    """Everything a test needs: the HTTP client, the store root and a sentinel beside it."""

    client: TestClient[web.Request, web.Application]
    store: LocalArtifactStore
    root: Path
    sentinel: Path
    tmp: Path

    async def raw(
        self,
        method: str,
        target: str,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
    ) -> RawResponse:
        """Send ``target`` byte for byte (no client-side normalisation of ``..`` or ``%``).

        aiohttp's and requests' clients both rewrite dot segments before sending, which
        would hide exactly the traversal attempts these tests are about.
        """
        host, port = self.client.server.host, self.client.server.port
        assert port is not None
        reader, writer = await asyncio.open_connection(host, port)
        try:
            head = [f"{method} {target} HTTP/1.1", f"Host: {host}:{port}", "Connection: close"]
            head.append(f"Content-Length: {len(body)}")
            head += [f"{k}: {v}" for k, v in (headers or {}).items()]
            writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
            await writer.drain()
            data = await asyncio.wait_for(reader.read(), timeout=30)
        finally:
            writer.close()
        head_bytes, _, payload = data.partition(b"\r\n\r\n")
        lines = head_bytes.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        hdrs = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            hdrs[k.strip().lower()] = v.strip()
        return RawResponse(status, hdrs, payload)


def snapshot(top: Path, exclude: Path | None = None) -> dict[str, bytes | None]:
    """Every path under ``top`` with its content (``None`` for directories)."""
    out: dict[str, bytes | None] = {}
    for p in sorted(top.rglob("*")):
        if exclude is not None and (p == exclude or exclude in p.parents):
            continue
        out[str(p.relative_to(top))] = None if p.is_dir() else p.read_bytes()
    return out


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    root = tmp_path / "root"
    root.mkdir()
    sentinel = tmp_path / "sentinel"
    sentinel.mkdir()
    (sentinel / "keep.txt").write_bytes(b"do not touch")
    store = LocalArtifactStore(root)
    client = TestClient(TestServer(make_app(store)))
    await client.start_server()
    try:
        yield Env(client, store, root, sentinel, tmp_path)
    finally:
        await client.close()

"""Backends for the shared artifact-store suite: a local directory and S3 (moto, server mode).

Every test here that takes ``backend`` runs once per backend, so "the S3 store behaves like
the local store" is checked by the same assertions rather than by two suites drifting apart.
``Backend`` hides what differs: how to look at raw storage behind the store's back (to prove
nothing was written, or nothing escaped), and what "an upload in flight" looks like (a temp
file beside the target, an unfinished multipart upload).

moto runs as a real HTTP server in a subprocess (one per session) rather than in-process
mocks: aiobotocore talks to it over aiohttp exactly as it would talk to S3, and the server's
memory (moto keeps objects in RAM) stays out of the bounded-memory measurements.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import pytest
from aiobotocore.session import get_session
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from artifacts.conftest import BASE, RawResponse, make_app

from evtrack.artifacts import (
    ArtifactStore,
    LocalArtifactStore,
    S3ArtifactStore,
    artifact_store_for,
    close_artifact_store,
    start_artifact_store,
)
from evtrack.artifacts._local import TEMP_PREFIX

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client

__all__ = [
    "BASE",
    "Backend",
    "HttpEnv",
    "LocalBackend",
    "RawResponse",
    "S3Backend",
    "chunks_of",
    "raw_request",
    "read_all",
]

ACCESS_KEY = "evtrack-test"
SECRET_KEY = "evtrack-test-secret"
REGION = "us-east-1"
S3_PREFIX = "artifacts/root"
"""Where the store lives inside each test's bucket: not the bucket root, so escapes show."""


async def chunks_of(*parts: bytes) -> AsyncIterator[bytes]:
    for p in parts:
        yield p


async def read_all(store: ArtifactStore, rel: str) -> bytes:
    size, it = await store.open(rel)
    data = b"".join([c async for c in it])
    assert len(data) == size
    return data


# --- moto server ---------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as resp:
            return int(resp.status) < 500
    except urllib.error.HTTPError as err:
        return err.code < 500
    except OSError:
        return False


@pytest.fixture(scope="session")
def moto_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``http://127.0.0.1:PORT`` of a moto S3 server running for the whole session."""
    log_path = tmp_path_factory.mktemp("moto") / "moto.log"
    for _attempt in range(3):  # the free port can be taken between probe and bind
        port = _free_port()
        endpoint = f"http://127.0.0.1:{port}"
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline:
            if _answers(f"{endpoint}/moto-api/"):
                break
            time.sleep(0.1)
        if proc.poll() is None and _answers(f"{endpoint}/moto-api/"):
            break
        proc.kill()
        proc.wait()
    else:
        pytest.fail(f"moto server did not start; log:\n{log_path.read_text()[-4000:]}")
    try:
        yield endpoint
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def s3_env(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Point botocore's default configuration chain at moto with dummy credentials.

    The store reads its endpoint and credentials from the environment like in production,
    so the tests exercise that path too; host AWS config and instance metadata are cut off
    so a developer's real credentials can never be used by accident.
    """
    for name in (
        "AWS_PROFILE",
        "AWS_SESSION_TOKEN",
        "AWS_SECURITY_TOKEN",
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_S3",
        "AWS_REQUEST_CHECKSUM_CALCULATION",
        "AWS_RESPONSE_CHECKSUM_VALIDATION",
        "MLFLOW_S3_IGNORE_TLS",
        "MLFLOW_S3_UPLOAD_EXTRA_ARGS",
        "MLFLOW_BOTO_CLIENT_ADDRESSING_STYLE",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("MLFLOW_S3_ENDPOINT_URL", moto_endpoint)
    return moto_endpoint


_ADMIN_SESSION = get_session()
"""Shared by every admin client: a session loads S3's service model once (~0.25 s)."""
_STORE_SESSION = get_session()
"""Shared by the stores under test, for the same reason; credentials come from ``s3_env``."""


def admin_client(endpoint: str) -> AbstractAsyncContextManager[S3Client]:
    """A client independent of the store, for setting up buckets and inspecting them."""
    return _ADMIN_SESSION.create_client(
        "s3",
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
    )


@pytest.fixture
async def admin(moto_endpoint: str) -> AsyncIterator[S3Client]:
    async with admin_client(moto_endpoint) as client:
        yield client


async def new_bucket(admin: S3Client) -> str:
    bucket = f"evtrack-{uuid.uuid4().hex[:16]}"
    await admin.create_bucket(Bucket=bucket)
    return bucket


async def bucket_snapshot(admin: S3Client, bucket: str) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    async for page in admin.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for obj in page.get("Contents", []):
            resp = await admin.get_object(Bucket=bucket, Key=obj["Key"])
            async with resp["Body"] as body:
                out[obj["Key"]] = await body.read()
    return out


async def multipart_uploads(admin: S3Client, bucket: str) -> list[str]:
    """Keys of multipart uploads started but neither completed nor aborted."""
    resp = await admin.list_multipart_uploads(Bucket=bucket)
    return [u.get("Key", "") for u in resp.get("Uploads", [])]


# --- backends ------------------------------------------------------------------------------


class Backend(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def store(self) -> ArtifactStore: ...

    @property
    def outside_path(self) -> str:
        """An absolute-looking location outside the store, for the traversal corpus."""
        ...

    async def snapshot(self) -> dict[str, bytes | None]:
        """Everything in raw storage, inside the store and around it (for "nothing
        written/escaped" checks); ``None`` for directories."""
        ...

    async def outside_snapshot(self) -> dict[str, bytes | None]:
        """Like ``snapshot``, but only what lies outside the store's root or prefix."""
        ...

    async def make_empty_dir(self, rel: str) -> None:
        """An empty directory as the backend spells it (S3: a zero-byte ``rel/`` marker)."""
        ...

    async def in_flight(self) -> list[str]:
        """Uploads started and not yet finished or cleaned up (temp files, multipart)."""
        ...

    async def raw(self, rel: str) -> bytes | None:
        """The bytes stored for ``rel``, read behind the store's back (``None``: absent)."""
        ...


@dataclass
class LocalBackend:
    store: LocalArtifactStore
    tmp: Path
    name: str = "local"

    @property
    def outside_path(self) -> str:
        return str(self.tmp / "sentinel").lstrip("/")

    async def snapshot(self) -> dict[str, bytes | None]:
        out: dict[str, bytes | None] = {}
        for p in sorted(self.tmp.rglob("*")):
            out[str(p.relative_to(self.tmp))] = None if p.is_dir() else p.read_bytes()
        return out

    async def outside_snapshot(self) -> dict[str, bytes | None]:
        snap = await self.snapshot()
        return {k: v for k, v in snap.items() if k != "root" and not k.startswith("root/")}

    async def make_empty_dir(self, rel: str) -> None:
        (self.store.root / rel).mkdir(parents=True)

    async def in_flight(self) -> list[str]:
        root = self.store.root
        if not root.exists():
            return []
        return [str(p) for p in root.rglob("*") if p.name.startswith(TEMP_PREFIX)]

    async def raw(self, rel: str) -> bytes | None:
        path = self.store.root / rel
        return path.read_bytes() if path.is_file() else None


@dataclass
class S3Backend:
    store: S3ArtifactStore
    admin: S3Client
    bucket: str
    name: str = "s3"

    @property
    def outside_path(self) -> str:
        return f"{self.bucket}/sentinel"

    async def snapshot(self) -> dict[str, bytes | None]:
        return dict(await bucket_snapshot(self.admin, self.bucket))

    async def outside_snapshot(self) -> dict[str, bytes | None]:
        snap = await self.snapshot()
        return {k: v for k, v in snap.items() if not k.startswith(f"{S3_PREFIX}/")}

    async def make_empty_dir(self, rel: str) -> None:
        await self.admin.put_object(Bucket=self.bucket, Key=f"{S3_PREFIX}/{rel}/", Body=b"")

    async def in_flight(self) -> list[str]:
        return await multipart_uploads(self.admin, self.bucket)

    async def raw(self, rel: str) -> bytes | None:
        try:
            resp = await self.admin.get_object(Bucket=self.bucket, Key=f"{S3_PREFIX}/{rel}")
        except self.admin.exceptions.NoSuchKey:
            return None
        async with resp["Body"] as body:
            data: bytes = await body.read()
            return data


async def _sentinels_local(tmp: Path) -> None:
    (tmp / "sentinel").mkdir()
    (tmp / "sentinel" / "keep.txt").write_bytes(b"do not touch")
    (tmp / "sentinel" / "evil.txt").write_bytes(b"sentinel content")
    (tmp / "evil.txt").write_bytes(b"tmp content")


async def _sentinels_s3(admin: S3Client, bucket: str) -> None:
    # Around the store's prefix: at the bucket root, beside the prefix, and a sibling prefix
    # sharing the store's name as a string prefix (a missing "/" would reach it).
    for key, body in (
        ("evil.txt", b"bucket root content"),
        ("sentinel/keep.txt", b"do not touch"),
        ("sentinel/evil.txt", b"sentinel content"),
        ("artifacts/evil.txt", b"beside content"),
        (f"{S3_PREFIX}-sibling/evil.txt", b"sibling content"),
    ):
        await admin.put_object(Bucket=bucket, Key=key, Body=body)


@pytest.fixture(params=["local", "s3"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    """The same store contract, once on a temp directory and once on a fresh moto bucket.

    Both stores are built from a URI and started and closed with the factory's lifecycle
    helpers, as the app does.
    """
    if request.param == "local":
        await _sentinels_local(tmp_path)
        store = artifact_store_for(str(tmp_path / "root"))
        assert isinstance(store, LocalArtifactStore)
        await start_artifact_store(store)
        try:
            yield LocalBackend(store, tmp_path)
        finally:
            await close_artifact_store(store)
        return
    endpoint: str = request.getfixturevalue("s3_env")  # sync fixtures only from in here
    async with admin_client(endpoint) as admin:
        bucket = await new_bucket(admin)
        await _sentinels_s3(admin, bucket)
        # As the app builds it, except for sharing one botocore session across tests (the
        # factory itself is covered in test_s3_store.py).
        s3_store = S3ArtifactStore.from_uri(f"s3://{bucket}/{S3_PREFIX}", session=_STORE_SESSION)
        await start_artifact_store(s3_store)
        try:
            yield S3Backend(s3_store, admin, bucket)
        finally:
            await close_artifact_store(s3_store)


@dataclass
class HttpEnv:
    backend: Backend
    client: TestClient[web.Request, web.Application]


@pytest.fixture
async def http(backend: Backend) -> AsyncIterator[HttpEnv]:
    """The artifact routes (``tests/artifacts``' minimal app) over the parametrised store."""
    client = TestClient(TestServer(make_app(backend.store)))
    await client.start_server()
    try:
        yield HttpEnv(backend, client)
    finally:
        await client.close()


async def raw_request(
    client: TestClient[web.Request, web.Application],
    method: str,
    target: str,
    body: bytes = b"",
) -> RawResponse:
    """Send ``target`` byte for byte: HTTP clients normalise ``..`` before sending, which
    would hide exactly the traversal attempts the corpus is about."""
    host, port = client.server.host, client.server.port
    assert port is not None
    reader, writer = await asyncio.open_connection(host, port)
    try:
        head = [f"{method} {target} HTTP/1.1", f"Host: {host}:{port}", "Connection: close"]
        head.append(f"Content-Length: {len(body)}")
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), timeout=30)
    finally:
        writer.close()
    head_bytes, _, payload = data.partition(b"\r\n\r\n")
    lines = head_bytes.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    return RawResponse(int(lines[0].split()[1]), headers, payload)

"""The mlflow-artifacts proxy routes over real HTTP, against every backend.

Same app as ``tests/artifacts`` (``make_app``), same corpus, but with the store swapped: what
the MLflow client sees must not depend on where the bytes live.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator

import pytest
from artifacts.test_api import URL_CORPUS

from .conftest import BASE, HttpEnv, raw_request

INVALID_PATH = {"error_code": "INVALID_PARAMETER_VALUE", "message": "Invalid path"}
MiB = 1024 * 1024


async def put(http: HttpEnv, rel: str, data: bytes) -> None:
    resp = await http.client.put(f"{BASE}/{rel}", data=data)
    assert resp.status == 200, await resp.text()
    assert resp.content_type == "application/json"
    assert await resp.json() == {}


async def test_round_trip_binary_nested(http: HttpEnv) -> None:
    blobs = {
        "1/r/artifacts/model/model.pkl": os.urandom(9 * MiB + 17),  # multipart on S3
        "1/r/artifacts/model/MLmodel": b"flavors:\n  sklearn: {}\n",
        "1/r/artifacts/a/b/c/d/zeros.bin": b"\x00" * 1000,
        "1/r/artifacts/empty.txt": b"",
        "1/r/artifacts/crlf.csv": b"a,b\r\n1,2\r\n\x1a",
        "1/r/artifacts/all-bytes": bytes(range(256)) * 64,
    }
    for rel, data in blobs.items():
        await put(http, rel, data)
    for rel, data in blobs.items():
        resp = await http.client.get(f"{BASE}/{rel}")
        assert resp.status == 200
        assert resp.headers["Content-Length"] == str(len(data))
        assert await resp.read() == data
        assert await http.backend.raw(rel) == data
    assert await http.backend.in_flight() == []


async def test_download_headers(http: HttpEnv) -> None:
    await put(http, "h/MLmodel", b"m")
    await put(http, "h/a b.tar.gz", b"t")
    resp = await http.client.get(f"{BASE}/h/MLmodel")
    assert resp.headers["Content-Type"] == "text/plain"
    assert resp.headers["Content-Disposition"] == "attachment; filename=MLmodel"
    resp = await http.client.get(f"{BASE}/h/a b.tar.gz")
    assert resp.headers["Content-Disposition"] == 'attachment; filename="a b.tar.gz"'
    assert await resp.read() == b"t"


async def test_list_semantics(http: HttpEnv) -> None:
    await put(http, "a/b/c.txt", b"hello")
    await put(http, "a/d.bin", b"12345")
    await put(http, "a/MLmodel", b"m")
    await put(http, "a/empty.txt", b"")
    resp = await http.client.get(BASE, params={"path": "a"})
    assert resp.status == 200
    assert resp.content_type == "application/json"
    assert await resp.json() == {
        "files": [
            {"path": "MLmodel", "is_dir": False, "file_size": 1},
            {"path": "b", "is_dir": True},
            {"path": "d.bin", "is_dir": False, "file_size": 5},
            {"path": "empty.txt", "is_dir": False},  # a zero size is elided, as MLflow does
        ]
    }
    nested = await (await http.client.get(BASE, params={"path": "a/b"})).json()
    assert nested == {"files": [{"path": "c.txt", "is_dir": False, "file_size": 5}]}
    for root_spelling in ({}, {"path": ""}):
        body = await (await http.client.get(BASE, params=root_spelling)).json()
        assert body == {"files": [{"path": "a", "is_dir": True}]}
    for spelling in ("a/", "a//b"):
        assert (await http.client.get(BASE, params={"path": spelling})).status == 200
    assert await (await http.client.get(BASE, params={"path": "a//b"})).json() == nested


async def test_list_empty_cases_are_empty_object(http: HttpEnv) -> None:
    await put(http, "d/f.txt", b"x")
    await http.backend.make_empty_dir("emptydir")
    for path in ("d/f.txt", "nope", "nope/deeper", "emptydir", "d/f.txt/under"):
        resp = await http.client.get(BASE, params={"path": path})
        assert resp.status == 200, path
        assert await resp.json() == {}, path


async def test_missing_and_directory_download_is_404_json(http: HttpEnv) -> None:
    await put(http, "a/b/c.txt", b"x")
    for rel in ("nope.txt", "a/nope", "a", "a/b", "a/b/", "a/b/c.txt/x"):
        resp = await http.client.get(f"{BASE}/{rel}")
        assert resp.status == 404, rel
        assert resp.content_type == "application/json"
        body = await resp.json()
        assert body["error_code"] == "RESOURCE_DOES_NOT_EXIST"
        assert body["message"].startswith("No such artifact: ")


async def test_delete(http: HttpEnv) -> None:
    await put(http, "d/sub/x", b"1")
    await put(http, "d/sub/deeper/x", b"1")
    await put(http, "d/y", b"2")
    for rel in ("d/y", "d/sub", "d/never/was"):
        resp = await http.client.delete(f"{BASE}/{rel}")
        assert resp.status == 200
        assert await resp.json() == {}
    assert await (await http.client.get(BASE, params={"path": "d"})).json() == {}
    assert (await http.client.get(f"{BASE}/d/y")).status == 404
    assert await http.backend.raw("d/sub/x") is None


async def test_put_edge_cases_are_400_not_500(http: HttpEnv) -> None:
    await put(http, "d/f", b"x")
    for rel, message in (
        ("dir/", "Artifact path must include a filename (cannot end with '/')."),
        ("d", "Artifact path refers to a directory, not a file: 'd'"),
        ("d/f/under", "Cannot write artifact 'd/f/under': a parent path is a file"),
    ):
        resp = await http.client.put(f"{BASE}/{rel}", data=b"y")
        assert resp.status == 400, rel
        assert await resp.json() == {"error_code": "INVALID_PARAMETER_VALUE", "message": message}
    assert await http.backend.raw("d/f") == b"x"


# --- traversal corpus ----------------------------------------------------------------------


@pytest.mark.parametrize("method", ["PUT", "GET", "DELETE"])
async def test_traversal_corpus_on_path_routes(http: HttpEnv, method: str) -> None:
    before = await http.backend.snapshot()
    for tail in URL_CORPUS:
        target = f"{BASE}/{tail.replace('ABS', http.backend.outside_path)}"
        resp = await raw_request(
            http.client, method, target, b"evil payload" if method == "PUT" else b""
        )
        assert resp.status == 400, f"{method} {target}"
        assert resp.json() == INVALID_PATH, f"{method} {target}"
        assert b"content" not in resp.body
    assert await http.backend.snapshot() == before
    assert await http.backend.in_flight() == []


async def test_traversal_corpus_on_list_route(http: HttpEnv) -> None:
    before = await http.backend.snapshot()
    corpus = [t for t in URL_CORPUS if "#" not in t] + [
        "..%23",
        "%2F",
        "/",
        ".",
        "sentinel/..%2f..",
        "a#frag",
    ]
    for tail in corpus:
        target = f"{BASE}?path={tail.replace('ABS', http.backend.outside_path)}"
        resp = await raw_request(http.client, "GET", target)
        assert resp.status == 400, target
        assert resp.json() == INVALID_PATH, target
        assert b"keep.txt" not in resp.body and b"evil.txt" not in resp.body
    assert await http.backend.snapshot() == before


# --- aborted and broken uploads -----------------------------------------------------------


@pytest.mark.parametrize("existing", [None, b"version 1"])
async def test_aborted_upload_leaves_nothing(http: HttpEnv, existing: bytes | None) -> None:
    """The client dies mid-body after enough bytes that S3 is in a multipart upload: no
    object appears (or the old one stays) and no multipart upload is left behind."""
    if existing is not None:
        await put(http, "up/model.pkl", existing)
    host, port = http.client.server.host, http.client.server.port
    assert port is not None
    reader, writer = await asyncio.open_connection(host, port)
    declared = 64 * MiB
    writer.write(
        (
            f"PUT {BASE}/up/model.pkl HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"Content-Length: {declared}\r\nContent-Type: application/octet-stream\r\n\r\n"
        ).encode()
    )
    for _ in range(20):  # 20 MiB: two S3 parts, several local temp-file writes
        writer.write(b"p" * MiB)
        await writer.drain()
    for _ in range(1000):
        if await http.backend.in_flight():
            break
        await asyncio.sleep(0.01)
    assert await http.backend.in_flight(), "the upload should be in flight by now"
    writer.transport.abort()
    del reader

    for _ in range(1000):
        if not await http.backend.in_flight():
            break
        await asyncio.sleep(0.01)
    assert await http.backend.in_flight() == []
    assert await http.backend.raw("up/model.pkl") == existing
    resp = await http.client.get(f"{BASE}/up/model.pkl")
    if existing is None:
        assert resp.status == 404
    else:
        assert await resp.read() == existing


async def _files(http: HttpEnv) -> dict[str, bytes]:
    """Stored files only: the local store may leave the (empty) parent directory behind."""
    return {k: v for k, v in (await http.backend.snapshot()).items() if v is not None}


async def test_truncated_or_malformed_body_writes_nothing(http: HttpEnv) -> None:
    before = await _files(http)
    host, port = http.client.server.host, http.client.server.port
    assert port is not None
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(
        f"PUT {BASE}/t/short HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc".encode()
    )
    await writer.drain()
    writer.write_eof()
    reply = await asyncio.wait_for(reader.read(), timeout=10)
    writer.close()
    assert b" 200 " not in reply.split(b"\r\n", 1)[0]
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(
        f"PUT {BASE}/t/chunked HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        "5\r\nhello\r\nZZ\r\nxx\r\n0\r\n\r\n".encode()
    )
    await writer.drain()
    reply = await asyncio.wait_for(reader.read(), timeout=10)
    writer.close()
    assert reply.split(b"\r\n", 1)[0].split()[1] == b"400"
    for _ in range(200):
        if await _files(http) == before and not await http.backend.in_flight():
            break
        await asyncio.sleep(0.02)
    assert await _files(http) == before
    assert await http.backend.in_flight() == []


async def test_chunked_upload_without_content_length(http: HttpEnv) -> None:
    async def body() -> AsyncIterator[bytes]:
        for i in range(30):  # 9 MB in 300 kB pieces: crosses the multipart threshold
            yield bytes([i]) * 300_000

    resp = await http.client.put(f"{BASE}/c/chunked.bin", data=body())
    assert resp.status == 200
    got = await (await http.client.get(f"{BASE}/c/chunked.bin")).read()
    assert got == b"".join(bytes([i]) * 300_000 for i in range(30))

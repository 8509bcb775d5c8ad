"""The mlflow-artifacts proxy routes over real HTTP on loopback."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from evtrack.api.artifacts import (
    artifact_routes,
    content_disposition,
    file_info_to_json,
    guess_mime_type,
    list_directory,
)
from evtrack.artifacts import FileInfo
from evtrack.artifacts._local import TEMP_PREFIX
from evtrack.permissions import Permission

from .conftest import BASE, Env, snapshot

INVALID_PATH = {"error_code": "INVALID_PARAMETER_VALUE", "message": "Invalid path"}


async def put(env: Env, rel: str, data: bytes, prefix: str = "/api/2.0") -> None:
    resp = await env.client.put(f"{prefix}/mlflow-artifacts/artifacts/{rel}", data=data)
    assert resp.status == 200, await resp.text()
    assert resp.content_type == "application/json"
    assert await resp.json() == {}


def test_route_table() -> None:
    table = {(r.method, r.path): r for r in artifact_routes()}
    assert set(table) == {
        ("PUT", "/mlflow-artifacts/artifacts/{path:.+}"),
        ("GET", "/mlflow-artifacts/artifacts/{path:.+}"),
        ("GET", "/mlflow-artifacts/artifacts"),
        ("DELETE", "/mlflow-artifacts/artifacts/{path:.+}"),
    }
    for (method, _), route in table.items():
        assert route.prefixes == ("/api/2.0", "/ajax-api/2.0")
        expected = Permission.EXPERIMENT_READ if method == "GET" else Permission.EXPERIMENT_EDIT
        assert route.permission is expected


async def test_round_trip_binary_nested(env: Env) -> None:
    blobs = {
        "1/r/artifacts/model/model.pkl": os.urandom(3 * 1024 * 1024 + 17),
        "1/r/artifacts/model/MLmodel": b"flavors:\n  sklearn: {}\n",
        "1/r/artifacts/a/b/c/d/zeros.bin": b"\x00" * 1000,
        "1/r/artifacts/empty.txt": b"",
        "1/r/artifacts/crlf.csv": b"a,b\r\n1,2\r\n\x1a",
    }
    for rel, data in blobs.items():
        await put(env, rel, data)
    for rel, data in blobs.items():
        resp = await env.client.get(f"{BASE}/{rel}")
        assert resp.status == 200
        assert resp.headers["Content-Length"] == str(len(data))
        assert await resp.read() == data
        assert (env.root / rel).read_bytes() == data


async def test_download_headers_match_reference(env: Env) -> None:
    cases = {
        "c.txt": ("text/plain", "attachment; filename=c.txt"),
        "MLmodel": ("text/plain", "attachment; filename=MLmodel"),
        "d.bin": ("application/octet-stream", "attachment; filename=d.bin"),
        "x.png": ("image/png", "attachment; filename=x.png"),
        "noext": ("application/octet-stream", "attachment; filename=noext"),
        "a b.tar.gz": ("application/x-tar", 'attachment; filename="a b.tar.gz"'),
        'we ird"na.me': (None, 'attachment; filename="we ird\\"na.me"'),
        "日本.csv": (
            "text/plain",
            "attachment; filename=.csv; filename*=UTF-8''%E6%97%A5%E6%9C%AC.csv",
        ),
    }
    for name, (ctype, disposition) in cases.items():
        await put(env, f"h/{name}", b"hello")
        resp = await env.client.get(f"{BASE}/h/{name}")
        assert resp.status == 200, name
        assert resp.headers["Content-Disposition"] == disposition
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
        if ctype is not None:
            assert resp.headers["Content-Type"] == ctype
        assert await resp.read() == b"hello"


def test_mime_and_disposition_agree_with_mlflow() -> None:
    import mlflow.server.handlers as handlers
    import mlflow.utils.mime_type_utils as mime

    names = [
        "a.txt", "MLmodel", "MLproject", "mlproject", "conda.yaml", "model.pkl", "x.json",
        "y.png", "z", "a b.tar.gz", 'q"uote', "back\\slash", "日本.csv", "日本", "é.txt", "",
        "semi;colon",
    ]  # fmt: skip
    for name in names:
        if name:
            assert guess_mime_type(name) == mime._guess_mime_type(name), name
        assert content_disposition(name) == handlers._content_disposition_attachment(name), name


async def test_list_semantics(env: Env) -> None:
    await put(env, "a/b/c.txt", b"hello")
    await put(env, "a/d.bin", b"12345")
    await put(env, "a/MLmodel", b"m")
    await put(env, "a/empty.txt", b"")
    resp = await env.client.get(BASE, params={"path": "a"})
    assert resp.status == 200
    assert resp.content_type == "application/json"
    assert await resp.json() == {
        "files": [
            {"path": "MLmodel", "is_dir": False, "file_size": 1},
            {"path": "b", "is_dir": True},
            {"path": "d.bin", "is_dir": False, "file_size": 5},
            # the reference elides a zero file_size (proto default)
            {"path": "empty.txt", "is_dir": False},
        ]
    }
    nested = await (await env.client.get(BASE, params={"path": "a/b"})).json()
    assert nested == {"files": [{"path": "c.txt", "is_dir": False, "file_size": 5}]}
    for root_spelling in ({}, {"path": ""}):
        body = await (await env.client.get(BASE, params=root_spelling)).json()
        assert body == {"files": [{"path": "a", "is_dir": True}]}
    # trailing slash and doubled slashes are the same directory, as in the reference
    for spelling in ("a/", "a//b"):
        assert (await env.client.get(BASE, params={"path": spelling})).status == 200
    assert await (await env.client.get(BASE, params={"path": "a//b"})).json() == nested


async def test_list_empty_cases_are_empty_object(env: Env) -> None:
    await put(env, "d/f.txt", b"x")
    (env.root / "emptydir").mkdir()
    for path in ("d/f.txt", "nope", "nope/deeper", "emptydir", "d/f.txt/under"):
        resp = await env.client.get(BASE, params={"path": path})
        assert resp.status == 200, path
        assert await resp.json() == {}, path


async def test_list_hides_uploads_in_flight(env: Env) -> None:
    await put(env, "d/f.txt", b"x")
    (env.root / "d" / f"{TEMP_PREFIX}abc.part").write_bytes(b"partial")
    body = await (await env.client.get(BASE, params={"path": "d"})).json()
    assert [f["path"] for f in body["files"]] == ["f.txt"]


async def test_list_directory_helper(env: Env) -> None:
    await put(env, "1/r/artifacts/z", b"1")
    await put(env, "1/r/artifacts/a/x", b"1")
    assert await list_directory(env.store, "1/r/artifacts") == [
        FileInfo("a", True, None),
        FileInfo("z", False, 1),
    ]
    assert await list_directory(env.store, "1/r/artifacts/") == await list_directory(
        env.store, "1/r/artifacts"
    )
    assert await list_directory(env.store, "1/r/artifacts/z") == []
    with pytest.raises(Exception, match="Invalid path"):
        await list_directory(env.store, "1/r/artifacts/../../..")
    assert file_info_to_json(FileInfo("a", True, None)) == {"path": "a", "is_dir": True}
    assert file_info_to_json(FileInfo("z", False, 3)) == {
        "path": "z",
        "is_dir": False,
        "file_size": 3,
    }


async def test_missing_and_directory_download_is_404_json(env: Env) -> None:
    await put(env, "a/b/c.txt", b"x")
    for rel in ("nope.txt", "a/nope", "a", "a/b", "a/b/", "a/b/c.txt/x"):
        resp = await env.client.get(f"{BASE}/{rel}")
        assert resp.status == 404, rel
        assert resp.content_type == "application/json"
        body = await resp.json()
        assert body["error_code"] == "RESOURCE_DOES_NOT_EXIST"
        assert body["message"].startswith("No such artifact: ")


async def test_delete(env: Env) -> None:
    await put(env, "d/sub/x", b"1")
    await put(env, "d/y", b"2")
    for rel in ("d/y", "d/sub", "d/never/was"):
        resp = await env.client.delete(f"{BASE}/{rel}")
        assert resp.status == 200
        assert await resp.json() == {}
    assert await (await env.client.get(BASE, params={"path": "d"})).json() == {}
    assert (await env.client.get(f"{BASE}/d/y")).status == 404


async def test_put_edge_cases_are_400_not_500(env: Env) -> None:
    await put(env, "d/f", b"x")
    for rel, message in (
        ("dir/", "Artifact path must include a filename (cannot end with '/')."),
        ("d", "Artifact path refers to a directory, not a file: 'd'"),
        ("d/f/under", "Cannot write artifact 'd/f/under': a parent path is a file"),
    ):
        resp = await env.client.put(f"{BASE}/{rel}", data=b"y")
        assert resp.status == 400, rel
        assert await resp.json() == {"error_code": "INVALID_PARAMETER_VALUE", "message": message}
    assert (env.root / "d" / "f").read_bytes() == b"x"


async def test_ajax_prefix_serves_the_same_store(env: Env) -> None:
    await put(env, "x/y.txt", b"ajax", prefix="/ajax-api/2.0")
    resp = await env.client.get(f"{BASE}/x/y.txt")
    assert await resp.read() == b"ajax"
    resp = await env.client.get("/ajax-api/2.0/mlflow-artifacts/artifacts", params={"path": "x"})
    assert await resp.json() == {"files": [{"path": "y.txt", "is_dir": False, "file_size": 4}]}


# --- traversal corpus ----------------------------------------------------------------------
# Raw request-target tails, sent byte for byte. ABS is replaced by the sentinel's absolute path.
URL_CORPUS = [
    "../sentinel/evil.txt",
    "a/../../sentinel/evil.txt",
    "..",
    "a/..",
    "%2e%2e/sentinel/evil.txt",
    "%2E%2E/sentinel/evil.txt",
    ".%2e/sentinel/evil.txt",
    "%252e%252e/sentinel/evil.txt",
    "%25252e%25252e/sentinel/evil.txt",
    "..%2fsentinel%2fevil.txt",
    "..%252fsentinel%252fevil.txt",
    "a/..%2f..%2fsentinel%2fevil.txt",
    "..%5csentinel%5cevil.txt",
    "a%5c..%5c..%5csentinel%5cevil.txt",
    "..\\sentinel\\evil.txt",
    "/ABS/evil.txt",
    "%2fABS/evil.txt",
    "%252fABS/evil.txt",
    "file:///ABS/evil.txt",
    "file:%2f%2f%2fABS%2fevil.txt",
    "file%3a%2f%2f%2fABS%2fevil.txt",
    "s3://bucket/evil.txt",
    "C:%5cevil.txt",
    "C:/evil.txt",
    "evil.txt#frag",
    "evil%23.txt",
    "evil%2523.txt",
    "evil%00.txt",
    "evil%2500.txt",
    "evil%0dX-Injected:%201.txt",
    "evil%09%1b%7f.txt",
    "a/./evil.txt",
    "a/%2e/evil.txt",
    "./evil.txt",
]


def _fill(tail: str, sentinel: Path) -> str:
    return tail.replace("ABS", str(sentinel).lstrip("/"))


def _assert_invalid(resp_status: int, body: object, what: str) -> None:
    assert resp_status == 400, what
    assert body == INVALID_PATH, what


@pytest.mark.parametrize("method", ["PUT", "GET", "DELETE"])
async def test_traversal_corpus_on_path_routes(env: Env, method: str) -> None:
    # Something to read or delete at each plausible escaped target.
    (env.sentinel / "evil.txt").write_bytes(b"sentinel content")
    (env.tmp / "evil.txt").write_bytes(b"tmp content")
    before_outside = snapshot(env.tmp, exclude=env.root)
    for tail in URL_CORPUS:
        target = f"{BASE}/{_fill(tail, env.sentinel)}"
        resp = await env.raw(method, target, body=b"evil payload" if method == "PUT" else b"")
        _assert_invalid(resp.status, resp.json(), f"{method} {target}")
        assert b"content" not in resp.body
    assert snapshot(env.tmp, exclude=env.root) == before_outside
    assert snapshot(env.root) == {}


async def test_newline_in_url_path_never_reaches_the_store(env: Env) -> None:
    """``{path:.+}`` does not match a newline, so the router refuses it (404) first."""
    for method in ("PUT", "GET", "DELETE"):
        resp = await env.raw(method, f"{BASE}/evil%0a.txt", b"x" if method == "PUT" else b"")
        assert resp.status in (400, 404)
    resp = await env.raw("GET", f"{BASE}?path=evil%0a")
    assert resp.status == 400
    assert resp.json() == INVALID_PATH
    assert snapshot(env.root) == {}


async def test_traversal_corpus_on_list_route(env: Env) -> None:
    (env.sentinel / "evil.txt").write_bytes(b"sentinel content")
    before_outside = snapshot(env.tmp, exclude=env.root)
    query_corpus = [t for t in URL_CORPUS if "#" not in t] + [
        "..%23",
        "%2F",
        "/",
        ".",
        "sentinel/..%2f..",
        "a#frag",  # raw fragment: dropped by the parser, so refused up front
    ]
    for tail in query_corpus:
        target = f"{BASE}?path={_fill(tail, env.sentinel)}"
        resp = await env.raw("GET", target)
        _assert_invalid(resp.status, resp.json(), target)
        assert b"keep.txt" not in resp.body and b"evil.txt" not in resp.body
    assert snapshot(env.tmp, exclude=env.root) == before_outside


async def test_symlink_inside_root_cannot_escape_over_http(env: Env) -> None:
    (env.sentinel / "evil.txt").write_bytes(b"sentinel content")
    os.symlink(env.sentinel, env.root / "link")
    before_outside = snapshot(env.tmp, exclude=env.root)
    assert (await env.raw("GET", f"{BASE}/link/evil.txt")).status == 400
    assert (await env.raw("PUT", f"{BASE}/link/planted.txt", b"x")).status == 400
    assert (await env.raw("GET", f"{BASE}?path=link")).status == 400
    assert (await env.raw("DELETE", f"{BASE}/link/evil.txt")).status == 400
    assert snapshot(env.tmp, exclude=env.root) == before_outside


# --- aborted uploads -----------------------------------------------------------------------


def _files_under(d: Path) -> list[Path]:
    return [p for p in d.rglob("*") if p.is_file()] if d.exists() else []


@pytest.mark.parametrize("existing", [None, b"version 1"])
async def test_aborted_upload_leaves_no_partial_file(env: Env, existing: bytes | None) -> None:
    if existing is not None:
        await put(env, "up/model.pkl", existing)
    host, port = env.client.server.host, env.client.server.port
    assert port is not None
    reader, writer = await asyncio.open_connection(host, port)
    declared = 64 * 1024 * 1024
    writer.write(
        (
            f"PUT {BASE}/up/model.pkl HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"Content-Length: {declared}\r\nContent-Type: application/octet-stream\r\n\r\n"
        ).encode()
    )
    for _ in range(4):  # 4 MiB: several chunks reach the temp file on disk
        writer.write(b"p" * (1024 * 1024))
        await writer.drain()
    temp_seen = False
    for _ in range(500):
        if any(p.name.startswith(TEMP_PREFIX) for p in _files_under(env.root / "up")):
            temp_seen = True
            break
        await asyncio.sleep(0.01)
    assert temp_seen, "the upload should be streaming to a temp file by now"
    writer.transport.abort()  # the client dies mid-body
    del reader

    expected = [env.root / "up" / "model.pkl"] if existing is not None else []
    for _ in range(500):
        if _files_under(env.root / "up") == expected:
            break
        await asyncio.sleep(0.01)
    assert _files_under(env.root / "up") == expected
    resp = await env.client.get(f"{BASE}/up/model.pkl")
    if existing is None:
        assert resp.status == 404
    else:
        assert await resp.read() == existing


async def test_truncated_or_malformed_body_writes_nothing(env: Env) -> None:
    host, port = env.client.server.host, env.client.server.port
    assert port is not None
    # Content-Length promises more than arrives, then the client half-closes.
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(
        f"PUT {BASE}/t/short HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc".encode()
    )
    await writer.drain()
    writer.write_eof()
    reply = await asyncio.wait_for(reader.read(), timeout=10)
    writer.close()
    assert b" 200 " not in reply.split(b"\r\n", 1)[0]
    # A chunked body with a garbage chunk size after a valid chunk.
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
        if not _files_under(env.root / "t"):
            break
        await asyncio.sleep(0.01)
    assert _files_under(env.root / "t") == []


async def test_chunked_upload_without_content_length(env: Env) -> None:
    async def body() -> AsyncIterator[bytes]:
        for i in range(5):
            yield bytes([i]) * 300_000

    resp = await env.client.put(f"{BASE}/c/chunked.bin", data=body())
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "application/json"
    got = await (await env.client.get(f"{BASE}/c/chunked.bin")).read()
    assert got == b"".join(bytes([i]) * 300_000 for i in range(5))


# Uploads whose name the store would change (issue 8, point 7): sent byte for byte.
RENAMING_UPLOADS = [
    "a%5Cb.txt",  # backslash
    "a\\b.txt",
    "%2Fabs.txt",  # absolute once decoded
    "a%00b.txt",  # NUL
    "%EF%BC%8E%EF%BC%8E%EF%BC%8Fx.txt",  # U+FF0E U+FF0E U+FF0F: "../" after NFKC
    "a%E2%80%A4b.txt",  # U+2024 ONE DOT LEADER
    "a%EF%BC%8Fb.txt",  # U+FF0F FULLWIDTH SOLIDUS
    "a%E2%88%95b.txt",  # U+2215 DIVISION SLASH
    "a%E2%A7%B8b.txt",  # U+29F8 BIG SOLIDUS
    "%EF%AC%81le.txt",  # U+FB01 LATIN SMALL LIGATURE FI: NFKC gives "file.txt"
    "a//b.txt",  # would be stored as a/b.txt
    "a%2520b.txt",  # would be stored as "a b.txt"
]


async def test_upload_that_would_be_renamed_is_refused_and_stores_nothing(env: Env) -> None:
    for tail in RENAMING_UPLOADS:
        resp = await env.raw("PUT", f"{BASE}/{tail}", body=b"payload")
        assert resp.status == 400, tail
        assert resp.json() == INVALID_PATH, tail
    assert snapshot(env.root) == {}
    # The canonical spellings are fine and land exactly where they were asked for.
    resp = await env.raw("PUT", f"{BASE}/a/b.txt", body=b"ok")
    assert resp.status == 200
    assert snapshot(env.root) == {"a": None, "a/b.txt": b"ok"}

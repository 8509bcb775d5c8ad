"""The ``ArtifactStore`` contract, run against every backend (local directory and S3).

These are the behaviours ``tests/artifacts/test_local_store.py`` pins for the local store,
restated backend-neutrally, plus the cases where S3 has more ways to go wrong (bodies that
cross the multipart threshold, chunks bigger than a part, out-of-band keys).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator

import pytest

from evtrack.artifacts import ArtifactStore, FileInfo
from evtrack.errors import ErrorCode, EvtrackError

from .conftest import Backend, chunks_of, read_all

MiB = 1024 * 1024
MULTIPART = 8 * MiB
"""The S3 store's default part size: bodies of at least this go up in parts."""


def test_is_an_artifact_store(backend: Backend) -> None:
    assert isinstance(backend.store, ArtifactStore)


@pytest.mark.parametrize(
    "size",
    [1, 255 * 5000 + 4, MULTIPART - 1, MULTIPART, MULTIPART + 1, 2 * MULTIPART + 12345],
    ids=["tiny", "1MiB", "just-under-part", "exactly-part", "just-over-part", "three-parts"],
)
async def test_round_trip_binary_nested(backend: Backend, size: int) -> None:
    data = os.urandom(size)
    rel = "1/run/artifacts/deep/er/blob.bin"
    # odd chunk boundaries: 7 bytes, then 1 MiB + 3 pieces
    parts = [data[:7]] + [data[i : i + MiB + 3] for i in range(7, len(data), MiB + 3)]
    assert await backend.store.put(rel, chunks_of(*parts)) == size
    assert await read_all(backend.store, rel) == data
    assert await backend.raw(rel) == data
    assert await backend.in_flight() == []


async def test_single_chunk_larger_than_a_part(backend: Backend) -> None:
    data = os.urandom(3 * MULTIPART + 1)
    assert await backend.store.put("one/chunk", chunks_of(data)) == len(data)
    assert await read_all(backend.store, "one/chunk") == data


async def test_many_tiny_chunks_and_empty_chunks(backend: Backend) -> None:
    pieces = [bytes([i % 256]) * (i % 5) for i in range(3000)]  # includes b"" chunks
    assert await backend.store.put("tiny/pieces", chunks_of(*pieces)) == sum(map(len, pieces))
    assert await read_all(backend.store, "tiny/pieces") == b"".join(pieces)


async def test_empty_file(backend: Backend) -> None:
    assert await backend.store.put("e", chunks_of()) == 0
    assert await read_all(backend.store, "e") == b""
    assert await backend.store.list("") == [FileInfo("e", False, 0)]


@pytest.mark.parametrize(
    ("old", "new"),
    [(3000, 3), (3 * MULTIPART, 3), (3, 2 * MULTIPART + 1)],
    ids=["small-small", "multipart-small", "small-multipart"],
)
async def test_overwrite_replaces(backend: Backend, old: int, new: int) -> None:
    await backend.store.put("f", chunks_of(b"o" * old))
    data = os.urandom(new)
    await backend.store.put("f", chunks_of(data))
    assert await read_all(backend.store, "f") == data
    assert await backend.store.list("") == [FileInfo("f", False, new)]


async def test_names_that_need_escaping_round_trip(backend: Backend) -> None:
    names = ["a b.txt", "100%.txt", "日本.csv", "q?uery&x=1", "plus+sign", "tilde~", "a:b"]
    for name in names:
        await backend.store.put(f"n/{name}", chunks_of(name.encode()))
    for name in names:
        assert await read_all(backend.store, f"n/{name}") == name.encode()
    assert [i.path for i in await backend.store.list("n")] == sorted(names)


async def test_open_missing_or_directory_is_not_found(backend: Backend) -> None:
    await backend.store.put("d/f", chunks_of(b"x"))
    for rel in ("nope", "d", "d/nope", "d/f/under", ""):
        with pytest.raises(EvtrackError) as exc:
            await backend.store.open(rel)
        assert exc.value.code is ErrorCode.RESOURCE_DOES_NOT_EXIST
        assert exc.value.message == f"No such artifact: '{rel}'"


async def test_list_semantics(backend: Backend) -> None:
    store = backend.store
    assert await store.list("") == []  # nothing written yet
    await store.put("d/b.txt", chunks_of(b"12345"))
    await store.put("d/a/x", chunks_of(b"1"))
    await store.put("d/empty", chunks_of())
    await store.put("d/zz/deeper/still/y", chunks_of(b"22"))
    assert await store.list("d") == [
        FileInfo("a", True, None),
        FileInfo("b.txt", False, 5),
        FileInfo("empty", False, 0),
        FileInfo("zz", True, None),
    ]
    assert await store.list("") == [FileInfo("d", True, None)]
    assert await store.list("d/zz") == [FileInfo("deeper", True, None)]
    assert await store.list("d/b.txt") == []  # a file
    assert await store.list("nope") == []
    assert await store.list("d/b.txt/x") == []
    # "d" must not match "d2" (a prefix without its "/" would)
    await store.put("d2/other", chunks_of(b"o"))
    assert [i.path for i in await store.list("d")] == ["a", "b.txt", "empty", "zz"]


async def test_empty_directory_lists_empty_and_appears_in_parent(backend: Backend) -> None:
    await backend.make_empty_dir("p/emptydir")
    assert await backend.store.list("p/emptydir") == []
    assert await backend.store.list("p") == [FileInfo("emptydir", True, None)]
    with pytest.raises(EvtrackError) as exc:
        await backend.store.open("p/emptydir")
    assert exc.value.code is ErrorCode.RESOURCE_DOES_NOT_EXIST


async def test_delete_file_dir_and_missing(backend: Backend) -> None:
    store = backend.store
    await store.put("d/sub/x", chunks_of(b"1"))
    await store.put("d/sub/deep/er/z", chunks_of(b"3"))
    await store.put("d/y", chunks_of(b"2"))
    await store.put("d/sub-sibling", chunks_of(b"keep"))
    await store.delete("d/y")
    assert [i.path for i in await store.list("d")] == ["sub", "sub-sibling"]
    await store.delete("d/sub")
    assert [i.path for i in await store.list("d")] == ["sub-sibling"]
    await store.delete("d/never/existed")  # no error
    await store.delete("d/never/existed")
    with pytest.raises(EvtrackError) as exc:
        await store.delete("")  # never the whole root
    assert exc.value.code is ErrorCode.INVALID_PARAMETER_VALUE
    assert await read_all(store, "d/sub-sibling") == b"keep"


@pytest.mark.parametrize("sent", [3 * MiB, 3 * MULTIPART], ids=["single-put", "multipart"])
async def test_failed_upload_leaves_nothing_and_keeps_old_version(
    backend: Backend, sent: int
) -> None:
    store = backend.store
    await store.put("d/f", chunks_of(b"version 1"))

    async def broken() -> AsyncIterator[bytes]:
        for _ in range(sent // MiB):
            yield b"x" * MiB  # for S3 "multipart", some parts are uploaded before the error
        raise ConnectionResetError("client went away")

    with pytest.raises(ConnectionResetError):
        await store.put("d/f", broken())
    with pytest.raises(ConnectionResetError):
        await store.put("d/g", broken())
    assert await read_all(store, "d/f") == b"version 1"
    assert [i.path for i in await store.list("d")] == ["f"]
    assert await backend.raw("d/g") is None
    assert await backend.in_flight() == []


@pytest.mark.parametrize("sent", [4 * MiB, 3 * MULTIPART], ids=["single-put", "multipart"])
async def test_cancelled_upload_leaves_nothing(backend: Backend, sent: int) -> None:
    started = asyncio.Event()

    async def slow() -> AsyncIterator[bytes]:
        for _ in range(sent // MiB):
            yield b"y" * MiB
        started.set()
        await asyncio.sleep(3600)
        yield b""

    task = asyncio.create_task(backend.store.put("c/f", slow()))
    await started.wait()
    if backend.name == "local" or sent >= 2 * MULTIPART:
        for _ in range(200):  # the upload is visibly in flight (temp file / multipart)...
            if await backend.in_flight():
                break
            await asyncio.sleep(0.01)
        assert await backend.in_flight()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    for _ in range(200):  # ...and gone once the cancellation has been handled
        if not await backend.in_flight():
            break
        await asyncio.sleep(0.01)
    assert await backend.in_flight() == []
    assert await backend.store.list("c") == []
    assert await backend.raw("c/f") is None


async def test_in_flight_upload_is_invisible(backend: Backend) -> None:
    release = asyncio.Event()

    async def held() -> AsyncIterator[bytes]:
        for _ in range(2 * MULTIPART // MiB + 1):
            yield b"h" * MiB
        await release.wait()
        yield b"tail"

    task = asyncio.create_task(backend.store.put("v/f", held()))
    for _ in range(500):
        if await backend.in_flight():
            break
        await asyncio.sleep(0.01)
    assert await backend.in_flight()
    assert await backend.store.list("v") == []
    with pytest.raises(EvtrackError):
        await backend.store.open("v/f")
    release.set()
    assert await task == 2 * MULTIPART + MiB + 4
    assert await backend.store.list("v") == [FileInfo("f", False, 2 * MULTIPART + MiB + 4)]
    assert await backend.in_flight() == []


async def test_put_onto_directory_or_under_file_is_400(backend: Backend) -> None:
    await backend.store.put("d/f", chunks_of(b"x"))
    await backend.store.put("d/sub/deep/g", chunks_of(b"g"))
    for rel, message in (
        ("d", "Artifact path refers to a directory, not a file: 'd'"),
        ("d/sub", "Artifact path refers to a directory, not a file: 'd/sub'"),
        ("d/f/under", "Cannot write artifact 'd/f/under': a parent path is a file"),
        ("d/f/under/deeper", "Cannot write artifact 'd/f/under/deeper': a parent path is a file"),
    ):
        with pytest.raises(EvtrackError) as exc:
            await backend.store.put(rel, chunks_of(b"y"))
        assert exc.value.http_status == 400, rel
        assert exc.value.message == message
    assert await read_all(backend.store, "d/f") == b"x"
    assert await backend.in_flight() == []


async def test_unnormalised_paths_never_escape(backend: Backend) -> None:
    """Stores re-check what they are given: a caller that skipped ``normalize_artifact_path``
    may get a 400 (S3 refuses all of these) but never reaches outside the store."""
    await backend.store.put("a/b", chunks_of(b"inside"))
    before = await backend.outside_snapshot()
    for rel in ("../x", "/abs", "a/./b", "a//b", "a\\b", "a/", "a/../../x", "../../evil.txt"):
        try:
            await backend.store.put(rel, chunks_of(b"evil"))
        except EvtrackError as err:
            assert err.code is ErrorCode.INVALID_PARAMETER_VALUE, rel
        for op in (backend.store.open, backend.store.list, backend.store.delete):
            with contextlib.suppress(EvtrackError):
                await op(rel)
    assert await backend.outside_snapshot() == before


async def test_partial_read_then_aclose_releases_the_stream(backend: Backend) -> None:
    await backend.store.put("big", chunks_of(b"z" * (3 * MiB)))
    for _ in range(3):  # repeated: a leaked pooled connection would eventually stall
        size, it = await backend.store.open("big")
        assert size == 3 * MiB
        first = await it.__anext__()
        assert 0 < len(first) <= MiB
        await it.aclose()  # type: ignore[attr-defined]
    for _ in range(3):  # closed before the first read
        _, it = await backend.store.open("big")
        await it.aclose()  # type: ignore[attr-defined]
    assert await read_all(backend.store, "big") == b"z" * (3 * MiB)


async def test_concurrent_uploads_and_reads(backend: Backend) -> None:
    blobs = {
        f"cc/{i}/blob": os.urandom(i * 100_003 + (MULTIPART if i % 3 == 0 else 0)) for i in range(8)
    }
    await asyncio.gather(*(backend.store.put(k, chunks_of(v)) for k, v in blobs.items()))
    got = await asyncio.gather(*(read_all(backend.store, k) for k in blobs))
    assert got == list(blobs.values())
    assert [i.path for i in await backend.store.list("cc")] == [str(i) for i in range(8)]

"""LocalArtifactStore against the ArtifactStore contract, without HTTP in the way."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from evtrack.artifacts import ArtifactStore, FileInfo, LocalArtifactStore
from evtrack.artifacts._local import TEMP_PREFIX
from evtrack.errors import ErrorCode, EvtrackError


async def chunks_of(*parts: bytes) -> AsyncIterator[bytes]:
    for p in parts:
        yield p


async def read_all(store: ArtifactStore, rel: str) -> bytes:
    size, it = await store.open(rel)
    data = b"".join([c async for c in it])
    assert len(data) == size
    return data


def leftovers(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.startswith(TEMP_PREFIX)]


@pytest.fixture
def store(tmp_path: Path) -> LocalArtifactStore:
    return LocalArtifactStore(tmp_path / "root")


def test_is_an_artifact_store(store: LocalArtifactStore) -> None:
    assert isinstance(store, ArtifactStore)


async def test_round_trip_binary_nested(store: LocalArtifactStore) -> None:
    data = bytes(range(256)) * 5000 + b"\x00\r\n\xff"
    n = await store.put("1/run/artifacts/deep/er/blob.bin", chunks_of(data[:7], data[7:]))
    assert n == len(data)
    assert await read_all(store, "1/run/artifacts/deep/er/blob.bin") == data
    assert (store.root / "1/run/artifacts/deep/er/blob.bin").read_bytes() == data


async def test_empty_file(store: LocalArtifactStore) -> None:
    assert await store.put("e", chunks_of()) == 0
    assert await read_all(store, "e") == b""


async def test_overwrite_replaces(store: LocalArtifactStore) -> None:
    await store.put("f", chunks_of(b"old" * 1000))
    await store.put("f", chunks_of(b"new"))
    assert await read_all(store, "f") == b"new"


async def test_open_missing_or_directory_is_not_found(store: LocalArtifactStore) -> None:
    await store.put("d/f", chunks_of(b"x"))
    for rel in ("nope", "d", "d/nope", "d/f/under", ""):
        with pytest.raises(EvtrackError) as exc:
            await store.open(rel)
        assert exc.value.code is ErrorCode.RESOURCE_DOES_NOT_EXIST


async def test_list_semantics(store: LocalArtifactStore) -> None:
    assert await store.list("") == []  # root not created yet
    await store.put("d/b.txt", chunks_of(b"12345"))
    await store.put("d/a/x", chunks_of(b"1"))
    await store.put("d/empty", chunks_of())
    assert await store.list("d") == [
        FileInfo("a", True, None),
        FileInfo("b.txt", False, 5),
        FileInfo("empty", False, 0),
    ]
    assert await store.list("") == [FileInfo("d", True, None)]
    assert await store.list("d/b.txt") == []  # a file
    assert await store.list("nope") == []
    assert await store.list("d/b.txt/x") == []


async def test_delete_file_dir_and_missing(store: LocalArtifactStore) -> None:
    await store.put("d/sub/x", chunks_of(b"1"))
    await store.put("d/y", chunks_of(b"2"))
    await store.delete("d/y")
    assert [i.path for i in await store.list("d")] == ["sub"]
    await store.delete("d/sub")
    assert await store.list("d") == []
    await store.delete("d/never/existed")  # no error
    with pytest.raises(EvtrackError):
        await store.delete("")  # never the whole root


async def test_failed_upload_leaves_nothing_and_keeps_old_version(
    store: LocalArtifactStore,
) -> None:
    await store.put("d/f", chunks_of(b"version 1"))

    async def broken() -> AsyncIterator[bytes]:
        yield b"x" * (3 * 1024 * 1024)  # enough for real writes to the temp file
        raise ConnectionResetError("client went away")

    with pytest.raises(ConnectionResetError):
        await store.put("d/f", broken())
    with pytest.raises(ConnectionResetError):
        await store.put("d/g", broken())
    assert await read_all(store, "d/f") == b"version 1"
    assert [i.path for i in await store.list("d")] == ["f"]
    assert leftovers(store.root) == []


async def test_cancelled_upload_leaves_nothing(store: LocalArtifactStore) -> None:
    started = asyncio.Event()

    async def slow() -> AsyncIterator[bytes]:
        for _ in range(4):
            yield b"y" * (1024 * 1024)
        started.set()
        await asyncio.sleep(3600)
        yield b""

    task = asyncio.create_task(store.put("c/f", slow()))
    await started.wait()
    assert leftovers(store.root)  # the temp file exists mid-upload...
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    for _ in range(100):  # ...and is gone once the in-flight write returns
        if not leftovers(store.root):
            break
        await asyncio.sleep(0.01)
    assert leftovers(store.root) == []
    assert await store.list("c") == []


async def test_put_onto_directory_or_under_file_is_400(store: LocalArtifactStore) -> None:
    await store.put("d/f", chunks_of(b"x"))
    for rel in ("d", "d/f/under"):
        with pytest.raises(EvtrackError) as exc:
            await store.put(rel, chunks_of(b"y"))
        assert exc.value.http_status == 400
    assert await read_all(store, "d/f") == b"x"
    assert leftovers(store.root) == []


async def test_symlink_escape_refused(store: LocalArtifactStore, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"secret")
    store.root.mkdir()
    os.symlink(outside, store.root / "link")
    with pytest.raises(EvtrackError):
        await store.open("link/secret")
    with pytest.raises(EvtrackError):
        await store.put("link/planted", chunks_of(b"x"))
    with pytest.raises(EvtrackError):
        await store.list("link")
    assert await store.list("") == []  # the escaping link is not advertised
    await store.delete("link")  # removes the link itself, never what it points to
    assert (outside / "secret").read_bytes() == b"secret"
    assert sorted(p.name for p in outside.iterdir()) == ["secret"]
    assert not (store.root / "link").exists()


async def test_partial_read_closes_file(store: LocalArtifactStore) -> None:
    await store.put("big", chunks_of(b"z" * (3 * 1024 * 1024)))
    size, it = await store.open("big")
    assert size == 3 * 1024 * 1024
    first = await it.__anext__()
    assert len(first) == 1024 * 1024
    await it.aclose()  # type: ignore[attr-defined]
    fds = os.listdir("/proc/self/fd")
    targets = {
        os.readlink(f"/proc/self/fd/{fd}") for fd in fds if os.path.exists(f"/proc/self/fd/{fd}")
    }
    assert str((store.root / "big").resolve()) not in targets


async def test_uploaded_file_gets_umask_permissions(store: LocalArtifactStore) -> None:
    umask = os.umask(0o022)
    os.umask(umask)
    await store.put("m/f", chunks_of(b"x"))
    assert (store.root / "m" / "f").stat().st_mode & 0o777 == 0o666 & ~umask

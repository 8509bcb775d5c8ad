"""What only the S3 store has: key mapping, multipart mechanics, configuration, stray keys.

The shared contract lives in ``test_contract.py``; these tests look at S3 directly (through
an independent admin client) to check what the contract cannot see.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from botocore.exceptions import ClientError

from evtrack.artifacts import (
    FileInfo,
    LocalArtifactStore,
    S3ArtifactStore,
    artifact_store_for,
    open_artifact_store,
)
from evtrack.artifacts._s3 import MAX_PART_SIZE, MAX_PARTS, _part_size, parse_s3_uri
from evtrack.errors import EvtrackError

from .conftest import (
    S3_PREFIX,
    admin_client,
    bucket_snapshot,
    chunks_of,
    multipart_uploads,
    new_bucket,
    read_all,
)

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client

MiB = 1024 * 1024


@pytest.fixture
async def s3(s3_env: str) -> AsyncIterator[tuple[S3Client, str]]:
    """An admin client and a fresh, empty bucket."""
    async with admin_client(s3_env) as admin:
        yield admin, await new_bucket(admin)


async def _etag(admin: S3Client, bucket: str, key: str) -> str:
    return (await admin.head_object(Bucket=bucket, Key=key))["ETag"].strip('"')


# --- key mapping -----------------------------------------------------------------------------


@pytest.mark.parametrize("spelling", ["p/q", "p/q/", "/p//q/"])
async def test_keys_are_prefix_slash_path(s3: tuple[S3Client, str], spelling: str) -> None:
    admin, bucket = s3
    async with S3ArtifactStore.from_uri(f"s3://{bucket}/{spelling}") as store:
        assert store.prefix == "p/q"
        await store.put("1/r/artifacts/m/MLmodel", chunks_of(b"m"))
    assert await bucket_snapshot(admin, bucket) == {"p/q/1/r/artifacts/m/MLmodel": b"m"}


async def test_store_at_bucket_root(s3: tuple[S3Client, str]) -> None:
    admin, bucket = s3
    async with S3ArtifactStore.from_uri(f"s3://{bucket}") as store:
        assert store.prefix == ""
        await store.put("a/b", chunks_of(b"1"))
        await store.put("c", chunks_of(b"22"))
        assert await store.list("") == [FileInfo("a", True, None), FileInfo("c", False, 2)]
        await store.delete("a")
    assert await bucket_snapshot(admin, bucket) == {"c": b"22"}


async def test_unnormalised_paths_are_refused(s3: tuple[S3Client, str]) -> None:
    admin, bucket = s3
    async with S3ArtifactStore.from_uri(f"s3://{bucket}/{S3_PREFIX}") as store:
        for rel in ("../x", "/abs", "a/./b", "a//b", "a\\b", "a/", "..", "a/../../x", "%2e%2e"):
            for call in (
                lambda r: store.put(r, chunks_of(b"evil")),
                store.open,
                store.list,
                store.delete,
            ):
                with pytest.raises(EvtrackError) as exc:
                    await call(rel)
                assert exc.value.message == "Invalid path", rel
    assert await bucket_snapshot(admin, bucket) == {}


# --- multipart -------------------------------------------------------------------------------


async def test_small_bodies_are_one_put_large_ones_multipart(s3: tuple[S3Client, str]) -> None:
    admin, bucket = s3
    async with S3ArtifactStore.from_uri(f"s3://{bucket}/{S3_PREFIX}") as store:
        await store.put("small", chunks_of(os.urandom(8 * MiB - 1)))
        big = os.urandom(20 * MiB + 5)
        await store.put("big", chunks_of(*(big[i : i + MiB] for i in range(0, len(big), MiB))))
        assert await read_all(store, "big") == big
    assert "-" not in await _etag(admin, bucket, f"{S3_PREFIX}/small")
    assert (await _etag(admin, bucket, f"{S3_PREFIX}/big")).endswith("-3")  # 8 + 8 + 4 MiB
    assert await multipart_uploads(admin, bucket) == []


async def test_custom_part_size_and_inflight_bound(s3: tuple[S3Client, str]) -> None:
    admin, bucket = s3
    async with S3ArtifactStore.from_uri(
        f"s3://{bucket}/{S3_PREFIX}", part_size=5 * MiB, max_inflight_parts=1
    ) as store:
        data = os.urandom(16 * MiB)
        await store.put("f", chunks_of(*(data[i : i + MiB] for i in range(0, len(data), MiB))))
        assert await read_all(store, "f") == data
    assert (await _etag(admin, bucket, f"{S3_PREFIX}/f")).endswith("-4")  # 5 + 5 + 5 + 1


async def test_failing_part_aborts_the_upload(
    s3: tuple[S3Client, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    admin, bucket = s3
    async with S3ArtifactStore.from_uri(f"s3://{bucket}/{S3_PREFIX}") as store:
        await store.put("f", chunks_of(b"version 1"))
        client = store._client
        real = client.upload_part

        async def flaky(**kwargs: Any) -> Any:
            if kwargs["PartNumber"] == 2:
                raise ClientError(
                    {"Error": {"Code": "InternalError", "Message": "injected"}}, "UploadPart"
                )
            return await real(**kwargs)

        monkeypatch.setattr(client, "upload_part", flaky)
        with pytest.raises(ClientError, match="injected"):
            await store.put("f", chunks_of(*([b"x" * MiB] * 40)))
        assert await multipart_uploads(admin, bucket) == []
        assert await read_all(store, "f") == b"version 1"


@pytest.mark.parametrize("delay", [0, 0.0005, 0.002, 0.005, 0.01, 0.03, 0.1, 0.3])
async def test_cancellation_at_any_moment_leaves_no_upload(
    s3: tuple[S3Client, str], delay: float
) -> None:
    """Cancel right around the first part: before, during and after CreateMultipartUpload."""
    admin, bucket = s3
    async with S3ArtifactStore.from_uri(f"s3://{bucket}/{S3_PREFIX}") as store:
        crossed = asyncio.Event()

        async def body() -> AsyncIterator[bytes]:
            for i in range(30):
                if i == 7:
                    crossed.set()  # the next chunk completes the first part
                yield b"c" * MiB
            await asyncio.sleep(3600)
            yield b""

        task = asyncio.create_task(store.put("c/f", body()))
        await crossed.wait()
        await asyncio.sleep(delay)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # Anything the cancelled request could not wait for finishes before close returns.
    assert await multipart_uploads(admin, bucket) == []
    assert await bucket_snapshot(admin, bucket) == {}


def test_part_size_growth_reaches_terabytes() -> None:
    base = 8 * MiB
    assert _part_size(base, 1) == base
    assert _part_size(base, 1000) == base
    assert _part_size(base, 1001) == 2 * base
    assert _part_size(base, MAX_PARTS) == MAX_PART_SIZE
    total = sum(_part_size(base, n) for n in range(1, MAX_PARTS + 1))
    assert total > 2 * 1024**4  # > 2 TiB before running out of parts


# --- listing and deleting at scale, stray keys ----------------------------------------------


async def test_list_and_delete_paginate(s3: tuple[S3Client, str]) -> None:
    admin, bucket = s3
    async with S3ArtifactStore.from_uri(
        f"s3://{bucket}/{S3_PREFIX}", list_page_size=2, delete_batch_size=3
    ) as store:
        for i in range(7):
            await store.put(f"d/file{i}", chunks_of(b"x" * i))
            await store.put(f"d/dir{i}/inner", chunks_of(b"y"))
        listing = await store.list("d")
        assert listing == sorted(
            [FileInfo(f"dir{i}", True, None) for i in range(7)]
            + [FileInfo(f"file{i}", False, i) for i in range(7)],
            key=lambda info: info.path,
        )
        await store.delete("d")
        assert await store.list("d") == []
    assert await bucket_snapshot(admin, bucket) == {}


async def test_keys_written_by_other_tools(s3: tuple[S3Client, str]) -> None:
    """Folder markers, empty segments and unaddressable names are not advertised; a key that
    is both a file and a directory prefix is a file (``open`` works, listing it is empty)."""
    admin, bucket = s3
    p = S3_PREFIX
    for key in (
        f"{p}/d/",  # folder marker (S3 console)
        f"{p}/d/ok.txt",
        f"{p}/d//double",  # empty segment
        f"{p}/d/../up",  # ".." as a name
        f"{p}/d/back\\slash",
        f"{p}/d/100%25.txt",  # decodes to another name: unaddressable
        f"{p}/both",
        f"{p}/both/child",
    ):
        await admin.put_object(Bucket=bucket, Key=key, Body=b"k")
    async with S3ArtifactStore.from_uri(f"s3://{bucket}/{p}") as store:
        assert await store.list("d") == [FileInfo("ok.txt", False, 1)]
        assert await store.list("both") == []
        assert await read_all(store, "both") == b"k"
        await store.delete("both")
        assert await store.list("") == [FileInfo("d", True, None)]
        await store.delete("d")
    assert await bucket_snapshot(admin, bucket) == {}


# --- lifecycle and configuration ----------------------------------------------------------


async def test_start_fails_fast_on_missing_bucket(s3_env: str) -> None:
    store = S3ArtifactStore.from_uri("s3://evtrack-no-such-bucket/x")
    with pytest.raises(RuntimeError, match="NoSuchBucket"):
        await store.start()
    with pytest.raises(RuntimeError, match="not started"):
        await store.list("")
    await store.close()  # harmless when never started


async def test_close_is_idempotent_and_restartable(s3: tuple[S3Client, str]) -> None:
    _, bucket = s3
    store = S3ArtifactStore.from_uri(f"s3://{bucket}/p")
    await store.start()
    await store.start()  # no second client
    await store.put("x", chunks_of(b"1"))
    await store.close()
    await store.close()
    with pytest.raises(RuntimeError):
        await store.open("x")
    async with store:
        assert await read_all(store, "x") == b"1"


@pytest.mark.parametrize(
    "winner", ["MLFLOW_S3_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"]
)
async def test_endpoint_precedence(
    s3: tuple[S3Client, str], monkeypatch: pytest.MonkeyPatch, winner: str
) -> None:
    """MLflow's variable first, then botocore's service-specific one, then the generic one;
    the lower-priority variables point at a dead port, so only the winner can work."""
    _, bucket = s3
    dead = "http://127.0.0.1:9"
    names = ["MLFLOW_S3_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"]
    moto = os.environ["MLFLOW_S3_ENDPOINT_URL"]
    for name in names:
        monkeypatch.delenv(name, raising=False)
    for name in names[names.index(winner) :]:
        monkeypatch.setenv(name, moto if name == winner else dead)
    async with open_artifact_store(f"s3://{bucket}/e") as store:
        await store.put("f", chunks_of(b"ok"))
        assert await read_all(store, "f") == b"ok"


async def test_upload_extra_args_apply_to_both_upload_kinds(
    s3: tuple[S3Client, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    admin, bucket = s3
    monkeypatch.setenv(
        "MLFLOW_S3_UPLOAD_EXTRA_ARGS",
        '{"ServerSideEncryption": "AES256", "Metadata": {"origin": "evtrack"}}',
    )
    async with open_artifact_store(f"s3://{bucket}/x") as store:
        await store.put("small", chunks_of(b"s"))
        await store.put("big", chunks_of(b"b" * (9 * MiB)))
    for key in ("x/small", "x/big"):
        head = await admin.head_object(Bucket=bucket, Key=key)
        assert head.get("ServerSideEncryption") == "AES256", key
        assert head.get("Metadata") == {"origin": "evtrack"}, key


def test_from_uri_reads_mlflow_settings() -> None:
    env = {
        "MLFLOW_S3_ENDPOINT_URL": "http://minio:9000",
        "AWS_ENDPOINT_URL": "http://other:1",
        "MLFLOW_S3_IGNORE_TLS": "true",
        "MLFLOW_BOTO_CLIENT_ADDRESSING_STYLE": "path",
    }
    store = S3ArtifactStore.from_uri("s3://bkt/a/b", environ=env)
    assert (store.bucket, store.prefix, store.uri) == ("bkt", "a/b", "s3://bkt/a/b")
    assert store._endpoint_url == "http://minio:9000"
    assert store._verify is False
    assert store._addressing_style == "path"
    plain = S3ArtifactStore.from_uri("s3://bkt", environ={})
    assert (plain._endpoint_url, plain._verify, plain._addressing_style) == (None, None, None)
    with pytest.raises(ValueError):
        S3ArtifactStore.from_uri("s3://bkt", environ={"MLFLOW_BOTO_CLIENT_ADDRESSING_STYLE": "x"})
    with pytest.raises(ValueError):
        S3ArtifactStore.from_uri("s3://bkt", environ={"MLFLOW_S3_UPLOAD_EXTRA_ARGS": "[1]"})


@pytest.mark.parametrize(
    "uri", ["s3://", "s3:///prefix", "s3://b/../x", "s3://b/a?x=1", "s3://b/a#f", "gs://b/p"]
)
def test_bad_s3_uris(uri: str) -> None:
    with pytest.raises(ValueError):
        parse_s3_uri(uri)


def test_factory_picks_the_backend(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for uri, root in (
        (str(tmp_path / "a"), tmp_path / "a"),
        (f"file://{tmp_path}/b", tmp_path / "b"),
        (f"file://localhost{tmp_path}/c%20d", tmp_path / "c d"),
        ("rel/dir", tmp_path / "rel" / "dir"),
    ):
        store = artifact_store_for(uri)
        assert isinstance(store, LocalArtifactStore), uri
        assert store.root == root.resolve(), uri
    s3_store = artifact_store_for("s3://bkt/pre")
    assert isinstance(s3_store, S3ArtifactStore)
    assert (s3_store.bucket, s3_store.prefix) == ("bkt", "pre")
    for bad in ("", "gs://bkt/x", "mlflow-artifacts:/x", "file://remotehost/x", "s3://"):
        with pytest.raises(ValueError):
            artifact_store_for(bad)


async def test_local_start_creates_the_root(tmp_path: Path) -> None:
    async with open_artifact_store(str(tmp_path / "new" / "root")) as store:
        assert isinstance(store, LocalArtifactStore)
        assert store.root.is_dir()

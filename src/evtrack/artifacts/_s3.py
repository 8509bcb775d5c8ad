"""An ``ArtifactStore`` on an S3 bucket prefix (``--artifacts-uri s3://bucket/prefix``).

This is what ``mlflow server --artifacts-destination s3://...`` does, behind the same proxy
routes: the client never talks to S3, the server streams bytes between HTTP and S3. It must
behave exactly like ``LocalArtifactStore`` as seen through ``ArtifactStore`` (the shared
test suite in ``tests/artifacts_s3`` runs both), which S3 does not give for free:

* S3 has no directories. A "directory" is any key prefix ending in ``/`` that has objects
  under it; listing uses ``Delimiter="/"`` so that ``CommonPrefixes`` are the directories.
  Zero-byte "folder marker" keys (``dir/``, as the S3 console creates) are never files.
* Nothing stops S3 from holding ``a`` and ``a/b`` at once, which a filesystem cannot. Uploads
  refuse both shapes up front (as the local store does) so that the MLflow client's "an
  empty listing means this is a file" logic keeps working; keys written by other tools are
  tolerated: a path that is an object lists as empty even if keys sit under it.
* Atomicity is S3's: ``PutObject`` and ``CompleteMultipartUpload`` make an object visible
  whole or not at all. What remains is never leaving a multipart upload dangling, because
  its parts are invisible yet billed forever; every failure and cancellation aborts it.

Memory stays bounded whatever the artifact size: uploads buffer at most a few parts
(``part_size`` each), downloads hold one ``CHUNK_SIZE`` chunk at a time.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import os
import urllib.parse
from collections.abc import AsyncIterator, Coroutine, Mapping, Sequence
from contextlib import AsyncExitStack
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, Self

import structlog
from botocore.exceptions import ClientError

from evtrack.artifacts._paths import invalid_path, normalize_artifact_path
from evtrack.artifacts._store import CHUNK_SIZE, FileInfo
from evtrack.errors import EvtrackError, invalid, not_found

if TYPE_CHECKING:
    from aiobotocore.response import StreamingBody
    from aiobotocore.session import AioSession
    from types_aiobotocore_s3 import S3Client
    from types_aiobotocore_s3.type_defs import CompletedPartTypeDef, ObjectIdentifierTypeDef

log = structlog.get_logger("evtrack.artifacts")

MiB = 1024 * 1024

DEFAULT_PART_SIZE = 8 * MiB
"""Bodies below this go up as one ``PutObject``; larger ones as parts of (at least) this size.

8 MiB is what boto3's transfer manager uses: few enough requests for throughput, small
enough that a server with many concurrent uploads does not hold much of any of them.
"""

MIN_PART_SIZE = 5 * MiB
"""S3's minimum size for every part but the last."""

MAX_PARTS = 10_000
"""S3's maximum number of parts in one multipart upload."""

MAX_PART_SIZE = 512 * MiB
"""Where part growth stops (see ``_part_size``); S3 itself allows up to 5 GiB."""

_PARTS_PER_STEP = 1000
"""Part size doubles after every this many parts (see ``_part_size``)."""

_CLEANUP_TIMEOUT_S = 30.0
"""How long ``close`` waits for multipart aborts still in flight before giving up on them."""

# Error codes S3 (and S3-compatible servers) use for "no such object". A HEAD has no body,
# so botocore reports the bare status code. NoSuchBucket is deliberately absent: a missing
# bucket is a misconfiguration, not a missing artifact, and must not turn into a 404.
_NOT_FOUND_CODES = frozenset({"NoSuchKey", "404", "NotFound"})

AddressingStyle = Literal["auto", "virtual", "path"]


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix/`` ⇒ ``("bucket", "some/prefix")``.

    The prefix is reduced to its non-empty segments, so ``s3://b/p``, ``s3://b/p/`` and
    ``s3://b//p`` all name the same keys, just as artifact paths are canonicalised.
    """
    parts = urllib.parse.urlsplit(uri)
    if parts.scheme != "s3" or not parts.netloc:
        raise ValueError(f"Not an S3 URI (expected s3://bucket/prefix): {uri!r}")
    if parts.query or parts.fragment:
        raise ValueError(f"An S3 artifacts URI takes no query or fragment: {uri!r}")
    prefix = "/".join(s for s in parts.path.split("/") if s)
    try:
        plain = not prefix or normalize_artifact_path(prefix) == prefix
    except EvtrackError:
        plain = False
    if not plain:  # "..", backslashes, percent-escapes: keys must be what the URI says
        raise ValueError(f"S3 artifacts prefix is not a plain path: {uri!r}")
    return parts.netloc, prefix


def _part_size(base: int, part_number: int) -> int:
    """The size to cut part ``part_number`` (1-based) at, for a body of unknown length.

    The request body's length is not known up front (chunked uploads), and S3 allows at most
    10,000 parts, so a fixed 8 MiB would cap artifacts at ~78 GiB. Doubling every 1,000 parts
    keeps the usual case (anything under ~8 GiB) at ``base`` and still reaches about 2.4 TiB
    before ``MAX_PARTS``, while memory grows only for the rare huge artifact.
    """
    return min(MAX_PART_SIZE, base << ((part_number - 1) // _PARTS_PER_STEP))


def _error_code(err: ClientError) -> str:
    return str(err.response.get("Error", {}).get("Code", ""))


def _is_not_found(err: ClientError) -> bool:
    return _error_code(err) in _NOT_FOUND_CODES


def _env_flag(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


class S3ArtifactStore:
    """Artifacts as objects under ``s3://bucket/prefix/``; implements ``ArtifactStore``.

    One aiobotocore client (one connection pool) is opened by ``start`` and shared by every
    request until ``close``; use ``async with`` or call both. Paths map to keys as
    ``<prefix>/<rel_path>``; every path is re-validated here, so no key can leave the prefix
    even if a caller forgot to normalise.

    Credentials, region and TLS settings come from botocore's usual chain (environment,
    ``AWS_PROFILE``, config files, instance/container roles); see ``from_uri`` for the
    endpoint and MLflow-compatible settings.
    """

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        region_name: str | None = None,
        verify: bool | str | None = None,
        addressing_style: AddressingStyle | None = None,
        part_size: int = DEFAULT_PART_SIZE,
        max_inflight_parts: int = 2,
        max_pool_connections: int = 32,
        upload_extra_args: Mapping[str, Any] | None = None,
        list_page_size: int = 1000,
        delete_batch_size: int = 1000,
        session: AioSession | None = None,
    ) -> None:
        """Configure, without any I/O; ``start`` opens the client.

        ``max_inflight_parts`` parts upload concurrently while the next one fills, so an
        upload holds at most ``(max_inflight_parts + 1) * part_size`` bytes. The page and
        batch sizes exist for tests (S3's maxima are the right values otherwise).
        """
        if not bucket:
            raise ValueError("S3 bucket name must not be empty")
        if part_size < MIN_PART_SIZE:
            raise ValueError(f"part_size must be at least {MIN_PART_SIZE} (S3's minimum)")
        if max_inflight_parts < 1:
            raise ValueError("max_inflight_parts must be at least 1")
        if not 1 <= list_page_size <= 1000 or not 1 <= delete_batch_size <= 1000:
            raise ValueError("list_page_size and delete_batch_size must be within 1..1000")
        self._bucket = bucket
        self._prefix = "/".join(s for s in prefix.split("/") if s)
        self._base = f"{self._prefix}/" if self._prefix else ""
        self._endpoint_url = endpoint_url
        self._region_name = region_name
        self._verify = verify
        self._addressing_style = addressing_style
        self._part_size = part_size
        self._max_inflight = max_inflight_parts
        self._max_pool_connections = max_pool_connections
        self._extra_args: dict[str, Any] = dict(upload_extra_args or {})
        self._page_size = list_page_size
        self._delete_batch = delete_batch_size
        self._session = session
        self._stack: AsyncExitStack | None = None
        self._s3: S3Client | None = None
        self._checksums = False
        # Multipart aborts that outlived the request that started them (it was cancelled
        # twice); ``close`` waits for them so the client is not shut under their feet.
        self._cleanups: set[asyncio.Task[None]] = set()

    @classmethod
    def from_uri(
        cls, uri: str, *, environ: Mapping[str, str] | None = None, **options: Any
    ) -> S3ArtifactStore:
        """A store for ``s3://bucket/prefix``, configured from the environment like MLflow.

        The endpoint is ``MLFLOW_S3_ENDPOINT_URL`` (MLflow's name, so existing MinIO/Ceph
        deployments keep working), else ``AWS_ENDPOINT_URL_S3``, else ``AWS_ENDPOINT_URL``,
        else AWS itself. ``MLFLOW_S3_IGNORE_TLS=true`` disables certificate checks,
        ``MLFLOW_BOTO_CLIENT_ADDRESSING_STYLE`` picks path/virtual addressing, and
        ``MLFLOW_S3_UPLOAD_EXTRA_ARGS`` (JSON, e.g. ``{"ServerSideEncryption": "aws:kms"}``)
        is added to every upload. Credentials and region are left to botocore.
        ``options`` override any of these (they are ``__init__``'s keyword arguments).
        """
        env = os.environ if environ is None else environ
        bucket, prefix = parse_s3_uri(uri)
        kwargs: dict[str, Any] = {}
        endpoint = (
            env.get("MLFLOW_S3_ENDPOINT_URL")
            or env.get("AWS_ENDPOINT_URL_S3")
            or env.get("AWS_ENDPOINT_URL")
        )
        if endpoint:
            kwargs["endpoint_url"] = endpoint
        if _env_flag(env.get("MLFLOW_S3_IGNORE_TLS")):
            kwargs["verify"] = False
        style = env.get("MLFLOW_BOTO_CLIENT_ADDRESSING_STYLE")
        if style:
            if style not in ("auto", "virtual", "path"):
                raise ValueError(f"Invalid MLFLOW_BOTO_CLIENT_ADDRESSING_STYLE: {style!r}")
            kwargs["addressing_style"] = style
        extra = env.get("MLFLOW_S3_UPLOAD_EXTRA_ARGS")
        if extra:
            parsed = json.loads(extra)
            if not isinstance(parsed, dict):
                raise ValueError("MLFLOW_S3_UPLOAD_EXTRA_ARGS must be a JSON object")
            kwargs["upload_extra_args"] = parsed
        kwargs.update(options)
        return cls(bucket, prefix, **kwargs)

    @property
    def bucket(self) -> str:
        return self._bucket

    @property
    def prefix(self) -> str:
        """The key prefix without slashes at either end (``""``: the bucket root)."""
        return self._prefix

    @property
    def uri(self) -> str:
        return f"s3://{self._bucket}/{self._prefix}"

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self, *, check: bool = True) -> None:
        """Open the shared client; with ``check``, fail now if the bucket is unreachable.

        The check is a one-key ``ListObjectsV2`` under the prefix rather than ``HeadBucket``
        so it works with IAM policies scoped to the prefix, and it needs exactly the
        permission listings need anyway. Failing at start-up beats failing the first upload.
        """
        if self._s3 is not None:
            return
        # Imported here: aiobotocore costs ~0.5 s to import, which every CLI command and
        # every server with a local store would otherwise pay for nothing.
        from aiobotocore.config import AioConfig
        from aiobotocore.session import get_session

        config = AioConfig(
            max_pool_connections=self._max_pool_connections,
            retries={"mode": "standard"},
            s3={"addressing_style": self._addressing_style} if self._addressing_style else None,
        )
        session = self._session or get_session()
        stack = AsyncExitStack()
        try:
            client = await stack.enter_async_context(
                session.create_client(
                    "s3",
                    endpoint_url=self._endpoint_url,
                    region_name=self._region_name,
                    verify=self._verify,
                    config=config,
                )
            )
            if check:
                try:
                    await client.list_objects_v2(Bucket=self._bucket, Prefix=self._base, MaxKeys=1)
                except ClientError as err:
                    raise RuntimeError(
                        f"Cannot use artifact store {self.uri}: {_error_code(err) or err}"
                    ) from err
        except BaseException:
            await stack.aclose()
            raise
        # Mirror boto3's transfer manager: with flexible checksums on (botocore's default),
        # multipart uploads declare CRC32 up front and pass each part's checksum to
        # Complete; S3 rejects parts whose checksum type the upload was not created with.
        # AWS_REQUEST_CHECKSUM_CALCULATION=when_required turns it off for S3 look-alikes
        # that do not support it.
        self._checksums = (
            getattr(client.meta.config, "request_checksum_calculation", None) == "when_supported"
        )
        self._stack, self._s3 = stack, client

    async def close(self) -> None:
        """Wait (bounded) for pending multipart aborts, then release the connection pool."""
        if self._cleanups:
            _, still_running = await asyncio.wait(set(self._cleanups), timeout=_CLEANUP_TIMEOUT_S)
            if still_running:
                log.warning("artifacts.s3.cleanup_timeout", pending=len(still_running))
        stack, self._stack, self._s3 = self._stack, None, None
        if stack is not None:
            await stack.aclose()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def _client(self) -> S3Client:
        if self._s3 is None:
            raise RuntimeError("S3ArtifactStore is not started: await start() first")
        return self._s3

    # --- path mapping ---------------------------------------------------------------------

    def _key(self, rel_path: str) -> str:
        """The object key for a canonical path (``""`` ⇒ the prefix itself, unslashed).

        Re-validating costs nothing and makes the store safe on its own: ``..`` has no
        meaning to S3 but does to some S3-compatible servers and proxies in front of them.
        """
        if rel_path != normalize_artifact_path(rel_path, allow_root=True):
            raise invalid_path()
        key = self._base + rel_path
        assert key.startswith(self._base), key
        return key

    def _dir_prefix(self, rel_dir: str) -> str:
        """The key prefix whose direct children are the entries of directory ``rel_dir``."""
        return self._key(rel_dir) + "/" if rel_dir else self._base

    # --- ArtifactStore --------------------------------------------------------------------

    async def put(self, rel_path: str, chunks: AsyncIterator[bytes]) -> int:
        """Upload as one ``PutObject`` below ``part_size``, else as a multipart upload.

        The choice is made on the fly (request bodies may be chunked, of unknown length):
        bytes are buffered until a part's worth has arrived, and only then is a multipart
        upload started, so small artifacts (most of MLflow's) cost a single request. Parts
        are at least ``part_size``; a chunk larger than that becomes one larger part.
        """
        if not rel_path:
            raise invalid_path()
        key = self._key(rel_path)
        await self._check_put_target(rel_path)
        upload: _MultipartUpload | None = None
        pending: list[bytes] = []
        buffered = 0
        total = 0
        try:
            async for chunk in chunks:
                if not chunk:
                    continue
                pending.append(chunk)
                buffered += len(chunk)
                total += len(chunk)
                cut = upload.next_part_size if upload is not None else self._part_size
                if buffered >= cut:
                    part = b"".join(pending)
                    pending.clear()
                    buffered = 0
                    if upload is None:
                        upload = await self._begin_multipart(key)
                    await upload.add_part(part)
                    del part
            rest = b"".join(pending)
            pending.clear()
            if upload is None:
                await self._client.put_object(
                    Bucket=self._bucket, Key=key, Body=rest, **self._extra_args
                )
            else:
                if rest:
                    await upload.add_part(rest)
                del rest
                await upload.complete()
        except BaseException:
            if upload is not None:
                await self._abort(upload)
            raise
        return total

    async def open(self, rel_path: str) -> tuple[int, AsyncIterator[bytes]]:
        """``GetObject`` now (so a 404 happens before any response header is sent), body
        streamed later. A "directory" has no object at its own key, hence NotFound too."""
        if not rel_path:
            raise _no_such(rel_path)
        key = self._key(rel_path)
        try:
            resp = await self._client.get_object(Bucket=self._bucket, Key=key)
        except ClientError as err:
            if _is_not_found(err):
                raise _no_such(rel_path) from None
            raise
        return resp["ContentLength"], _ObjectStream(resp["Body"], resp["ContentLength"])

    @property
    def location(self) -> str:
        return f"s3://{self._bucket}/{self._prefix}"

    async def probe(self) -> None:
        """One small request that fails when the bucket cannot be reached or read (health)."""
        await self._client.list_objects_v2(Bucket=self._bucket, Prefix=self._base, MaxKeys=1)

    async def list(self, rel_dir: str) -> list[FileInfo]:
        """``ListObjectsV2`` with ``Delimiter="/"``, all pages: prefixes are directories.

        A missing path and a file path both list as empty, with no special casing: nothing
        lies under ``<file>/``.
        """
        prefix = self._dir_prefix(rel_dir)
        paginator = self._client.get_paginator("list_objects_v2")
        infos: list[FileInfo] = []
        async for page in paginator.paginate(
            Bucket=self._bucket,
            Prefix=prefix,
            Delimiter="/",
            PaginationConfig={"PageSize": self._page_size},
        ):
            for common in page.get("CommonPrefixes", []):
                name = common.get("Prefix", "")[len(prefix) :].removesuffix("/")
                if self._listable(rel_dir, name):
                    infos.append(FileInfo(name, True, None))
            for obj in page.get("Contents", []):
                name = obj.get("Key", "")[len(prefix) :]
                if self._listable(rel_dir, name):
                    infos.append(FileInfo(name, False, obj.get("Size", 0)))
        # Only a non-empty answer needs the extra request: when the path is also an object
        # (keys written by another tool), it is a file, as ``open`` says, and lists as empty.
        if infos and rel_dir and await self._object_exists(self._key(rel_dir)):
            return []
        infos.sort(key=lambda i: i.path)
        return infos

    async def delete(self, rel_path: str) -> None:
        """Delete the key and every key under ``<key>/``, in ``DeleteObjects`` batches.

        Not atomic (S3 has no such operation): a concurrent listing can see part of the tree
        gone, and a failure midway leaves the rest, which a retried delete then removes.
        """
        if not rel_path:
            raise invalid_path()  # never the whole prefix
        key = self._key(rel_path)
        # S3 answers 204 for a missing key, so "missing is a no-op" comes for free.
        await self._client.delete_object(Bucket=self._bucket, Key=key)
        paginator = self._client.get_paginator("list_objects_v2")
        batch: list[ObjectIdentifierTypeDef] = []
        async for page in paginator.paginate(
            Bucket=self._bucket,
            Prefix=key + "/",
            PaginationConfig={"PageSize": self._page_size},
        ):
            for obj in page.get("Contents", []):
                batch.append({"Key": obj["Key"]})
                if len(batch) >= self._delete_batch:
                    await self._delete_batch_now(batch)
                    batch = []
        if batch:
            await self._delete_batch_now(batch)

    # --- helpers --------------------------------------------------------------------------

    def _listable(self, rel_dir: str, name: str) -> bool:
        """Whether a listed name is one a client could ask for again and get this entry.

        Keys from other tools can hold names this server would refuse (``..``, ``a//b``,
        backslashes, a folder marker's empty name); advertising them would only produce
        400s on download. The local store hides escaping symlinks for the same reason.
        """
        if not name or "/" in name:
            return False
        rel = f"{rel_dir}/{name}" if rel_dir else name
        try:
            return normalize_artifact_path(rel) == rel
        except EvtrackError:
            return False

    async def _object_exists(self, key: str) -> bool:
        try:
            await self._client.head_object(Bucket=self._bucket, Key=key)
        except ClientError as err:
            if _is_not_found(err):
                return False
            raise
        return True

    async def _has_children(self, key: str) -> bool:
        resp = await self._client.list_objects_v2(Bucket=self._bucket, Prefix=key + "/", MaxKeys=1)
        return resp.get("KeyCount", 0) > 0

    async def _check_put_target(self, rel_path: str) -> None:
        """Refuse what a filesystem would: writing onto a directory, or beneath a file.

        S3 would happily store both, and the artifact tree would then have a name that is a
        file and a directory at once, which MLflow's client cannot download. The checks run
        concurrently (one LIST, one HEAD per ancestor: one round trip); like any check
        before a write they are not atomic with it, which only matters for racing writers.
        """
        segments = rel_path.split("/")
        ancestors = ["/".join(segments[:i]) for i in range(1, len(segments))]
        *parents, is_dir = await asyncio.gather(
            *(self._object_exists(self._key(a)) for a in ancestors),
            self._has_children(self._key(rel_path)),
        )
        if any(parents):
            raise invalid(f"Cannot write artifact '{rel_path}': a parent path is a file")
        if is_dir:
            raise _is_directory(rel_path)

    async def _begin_multipart(self, key: str) -> _MultipartUpload:
        args = dict(self._extra_args)
        if self._checksums:
            args.setdefault("ChecksumAlgorithm", "CRC32")
        checksum = str(args["ChecksumAlgorithm"]) if "ChecksumAlgorithm" in args else None

        async def create() -> _MultipartUpload:
            resp = await self._client.create_multipart_upload(Bucket=self._bucket, Key=key, **args)
            return _MultipartUpload(
                self._client,
                self._bucket,
                key,
                resp["UploadId"],
                base_part_size=self._part_size,
                max_inflight=self._max_inflight,
                checksum=checksum,
            )

        # Shielded: if the request is cancelled while S3 is creating the upload, the upload
        # may exist without us ever learning its id. Let the call finish, then abort it.
        task = asyncio.get_running_loop().create_task(create())
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:

            async def abort_once_created() -> None:
                try:
                    upload = await task
                except (Exception, asyncio.CancelledError):
                    return  # never created: nothing to clean up
                await upload.abort()

            await self._cleanup(abort_once_created())
            raise

    async def _abort(self, upload: _MultipartUpload) -> None:
        await self._cleanup(upload.abort())

    async def _cleanup(self, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` (an abort) to completion, even when called from a cancelled task.

        It runs as its own task, tracked until done: if the waiting request is cancelled
        again, the abort still finishes, and ``close`` waits for it rather than shutting the
        client under its feet. The request waits too, so that once ``put`` has failed
        nothing of it is left in S3.
        """
        task = asyncio.get_running_loop().create_task(work)
        self._cleanups.add(task)
        task.add_done_callback(self._cleanups.discard)
        await asyncio.shield(task)

    async def _delete_batch_now(self, batch: Sequence[ObjectIdentifierTypeDef]) -> None:
        resp = await self._client.delete_objects(
            Bucket=self._bucket, Delete={"Objects": batch, "Quiet": True}
        )
        errors = resp.get("Errors", [])
        if errors:
            first = errors[0]
            raise RuntimeError(
                f"S3 refused to delete {len(errors)} object(s), e.g. "
                f"{first.get('Key')!r}: {first.get('Code')} {first.get('Message')}"
            )


class _MultipartUpload:
    """One multipart upload in progress: parts go up concurrently, in bounded number.

    ``add_part`` returns as soon as the part is in flight, unless ``max_inflight`` are
    already, in which case it first waits for the oldest: that wait is the back-pressure
    that keeps memory bounded and slows the client down to S3's pace.
    """

    def __init__(
        self,
        client: S3Client,
        bucket: str,
        key: str,
        upload_id: str,
        *,
        base_part_size: int,
        max_inflight: int,
        checksum: str | None,
    ) -> None:
        self._client = client
        self._bucket = bucket
        self._key = key
        self.upload_id = upload_id
        self._base_part_size = base_part_size
        self._max_inflight = max_inflight
        self._checksum = checksum
        self._inflight: collections.deque[asyncio.Task[CompletedPartTypeDef]] = collections.deque()
        self._done: list[CompletedPartTypeDef] = []
        self._next_number = 1

    @property
    def next_part_size(self) -> int:
        return _part_size(self._base_part_size, self._next_number)

    async def add_part(self, data: bytes) -> None:
        if self._next_number > MAX_PARTS:
            raise invalid("Artifact is too large for this server's S3 multipart upload")
        while len(self._inflight) >= self._max_inflight:
            await self._reap_oldest()
        number = self._next_number
        self._next_number += 1
        self._inflight.append(asyncio.get_running_loop().create_task(self._upload(number, data)))

    async def _upload(self, number: int, data: bytes) -> CompletedPartTypeDef:
        if self._checksum is not None:
            resp = await self._client.upload_part(
                Bucket=self._bucket,
                Key=self._key,
                UploadId=self.upload_id,
                PartNumber=number,
                Body=data,
                ChecksumAlgorithm="CRC32",
            )
        else:
            resp = await self._client.upload_part(
                Bucket=self._bucket,
                Key=self._key,
                UploadId=self.upload_id,
                PartNumber=number,
                Body=data,
            )
        part: CompletedPartTypeDef = {"ETag": resp["ETag"], "PartNumber": number}
        if self._checksum is not None and "ChecksumCRC32" in resp:
            part["ChecksumCRC32"] = resp["ChecksumCRC32"]
        return part

    async def _reap_oldest(self) -> None:
        task = self._inflight[0]
        part = await task
        self._inflight.popleft()
        self._done.append(part)

    async def complete(self) -> None:
        while self._inflight:
            await self._reap_oldest()
        parts = sorted(self._done, key=lambda p: p.get("PartNumber", 0))
        await self._client.complete_multipart_upload(
            Bucket=self._bucket,
            Key=self._key,
            UploadId=self.upload_id,
            MultipartUpload={"Parts": parts},
        )

    async def abort(self) -> None:
        """Stop the parts in flight, then abort the upload so S3 discards every part.

        The parts are cancelled and awaited first: S3 may keep a part whose upload was still
        running when the abort arrived.
        """
        for task in self._inflight:
            task.cancel()
        await asyncio.gather(*self._inflight, return_exceptions=True)
        self._inflight.clear()
        try:
            await self._client.abort_multipart_upload(
                Bucket=self._bucket, Key=self._key, UploadId=self.upload_id
            )
        except Exception as err:
            # Nothing better to do than say so: the bucket's AbortIncompleteMultipartUpload
            # lifecycle rule is the backstop for exactly this case.
            log.warning(
                "artifacts.s3.abort_failed",
                key=self._key,
                upload_id=self.upload_id,
                error=repr(err),
            )


class _ObjectStream:
    """The body of a ``GetObject``, as exactly ``size`` bytes in ``CHUNK_SIZE`` pieces.

    A class rather than an async generator so that ``aclose`` releases the HTTP connection
    even when called before the first chunk was read (a generator that never started would
    not run its ``finally``, and the pooled connection would leak until garbage collection).
    """

    def __init__(self, body: StreamingBody, size: int) -> None:
        self._body = body
        self._remaining = size
        self._closed = False

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> bytes:
        if self._remaining <= 0:
            await self.aclose()
            raise StopAsyncIteration
        try:
            chunk = await self._body.read(min(CHUNK_SIZE, self._remaining))
        except BaseException:
            await self.aclose()
            raise
        if not chunk:
            await self.aclose()
            # Never send fewer bytes than Content-Length promised without failing loudly.
            raise OSError("artifact shrank while it was being read")
        self._remaining -= len(chunk)
        return chunk

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            with contextlib.suppress(Exception):
                self._body.close()


def _no_such(rel_path: str) -> Exception:
    # Same text as LocalArtifactStore: clients and tests see one behaviour for both stores.
    return not_found(f"No such artifact: '{rel_path}'")


def _is_directory(rel_path: str) -> Exception:
    return invalid(f"Artifact path refers to a directory, not a file: '{rel_path}'")

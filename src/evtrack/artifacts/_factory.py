"""Pick and run the artifact store named by ``--artifacts-uri``.

Construction is synchronous and does no I/O, so the app can put the store in place while
it is being built; opening (connection pool, reachability check) and closing are separate
async steps so they can live in the app's start-up/shutdown hooks. Callers never need to
know which backend they got: local stores simply have nothing to open or close.
"""

from __future__ import annotations

import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from evtrack.artifacts._local import LocalArtifactStore
from evtrack.artifacts._s3 import S3ArtifactStore
from evtrack.artifacts._store import ArtifactStore


def artifact_store_for(uri: str) -> ArtifactStore:
    """The store for ``uri``, not yet started (see ``start_artifact_store``).

    * a path (``/srv/artifacts``, ``~/artifacts``, ``./artifacts``) or ``file://`` URI ⇒
      ``LocalArtifactStore`` on that directory, ``~`` expanded and made absolute, so a
      later ``chdir`` cannot move it;
    * ``s3://bucket/prefix`` ⇒ ``S3ArtifactStore.from_uri`` (endpoint and credentials
      from the environment).

    Anything else (``gs://``, ``mlflow-artifacts:``...) is a ``ValueError`` at start-up
    rather than a surprise on the first upload.
    """
    if not uri:
        raise ValueError("artifacts URI must not be empty")
    scheme = urllib.parse.urlsplit(uri).scheme.lower()
    if scheme == "s3":
        return S3ArtifactStore.from_uri(uri)
    if scheme == "file":
        return LocalArtifactStore(_file_uri_path(uri))
    if scheme and len(scheme) > 1:  # one letter is a Windows drive ("C:\\...")
        raise ValueError(
            f"Unsupported artifacts URI {uri!r}: use a local path, file:// or s3://bucket/prefix"
        )
    return LocalArtifactStore(Path(uri).expanduser().resolve())


def _file_uri_path(uri: str) -> Path:
    parts = urllib.parse.urlsplit(uri)
    if parts.netloc not in ("", "localhost"):
        raise ValueError(f"file:// artifacts URI must name a local path: {uri!r}")
    return Path(urllib.request.url2pathname(parts.path)).expanduser().resolve()


async def start_artifact_store(store: ArtifactStore) -> None:
    """Make ``store`` ready to serve: create a local root, open and check an S3 client.

    Creating the local root up front (as the app did before) makes a read-only or mistyped
    path fail at start-up; for S3 a missing bucket or bad credentials fail here too. A local
    store also starts removing the temp files of uploads killed with an earlier server
    (see ``_leftovers``); S3 needs no such sweep, every failed upload aborts its multipart.
    """
    if isinstance(store, S3ArtifactStore | LocalArtifactStore):
        await store.start()


async def close_artifact_store(store: ArtifactStore) -> None:
    """Release what ``start_artifact_store`` acquired; safe to call on any store, twice."""
    if isinstance(store, S3ArtifactStore | LocalArtifactStore):
        await store.close()


@asynccontextmanager
async def open_artifact_store(uri: str) -> AsyncIterator[ArtifactStore]:
    """``artifact_store_for`` + start + close, for scripts, CLI commands and tests."""
    store = artifact_store_for(uri)
    await start_artifact_store(store)
    try:
        yield store
    finally:
        await close_artifact_store(store)


def artifact_store_cleanup_ctx(store: ArtifactStore) -> Callable[[object], AsyncIterator[None]]:
    """An aiohttp ``cleanup_ctx`` entry that starts ``store`` and closes it on shutdown.

    Typed on ``object`` so this package does not depend on aiohttp; aiohttp passes the app.
    """

    async def lifecycle(_app: object) -> AsyncIterator[None]:
        await start_artifact_store(store)
        try:
            yield
        finally:
            await close_artifact_store(store)

    return lifecycle

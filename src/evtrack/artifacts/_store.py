"""The storage-neutral artifact store interface the HTTP layer talks to.

Paths are canonical relative POSIX strings from ``normalize_artifact_path`` (no leading
slash, no ``.``/``..``, no empty segments; ``""`` is the root). They are the same strings
for a local directory and an S3 prefix, so the API layer never learns which one it has.

Everything streams: artifacts are models and data sets of any size, and a server that
buffered a whole file would fall over on the first multi-gigabyte upload.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

CHUNK_SIZE = 1024 * 1024
"""Streaming granularity: large enough to amortise a thread hop, small enough to not matter."""


@dataclass(frozen=True, slots=True)
class FileInfo:
    """One entry of a directory listing, shaped like MLflow's ``FileInfo``.

    ``path`` is the entry's name relative to the listed directory (its basename), which is
    what the ``mlflow-artifacts`` list endpoint returns. ``file_size`` is ``None`` for
    directories, which MLflow's client reads as "no size".
    """

    path: str
    is_dir: bool
    file_size: int | None = None


@runtime_checkable
class ArtifactStore(Protocol):
    """Where artifact bytes live. Implementations must be safe to call concurrently."""

    async def put(self, rel_path: str, chunks: AsyncIterator[bytes]) -> int:
        """Store ``chunks`` as the file at ``rel_path``, replacing any previous version.

        Returns the number of bytes written. Atomic: readers see the old version or the
        complete new one, and an upload that fails or is aborted (the iterator raises, or
        the task is cancelled) leaves nothing behind. Raises ``EvtrackError`` 400 when
        ``rel_path`` names a directory or lies under a file.
        """
        ...

    async def open(self, rel_path: str) -> tuple[int, AsyncIterator[bytes]]:
        """Open the file at ``rel_path`` for streaming: its size and an iterator of chunks.

        Raises ``EvtrackError`` RESOURCE_DOES_NOT_EXIST when there is no file there
        (missing, or a directory). The caller must exhaust the iterator or ``aclose()`` it
        (when it has one) so the underlying handle is released promptly.
        """
        ...

    async def list(self, rel_dir: str) -> list[FileInfo]:
        """The direct children of ``rel_dir``, sorted by name.

        Empty for a missing path and for a file path: MLflow's client relies on an empty
        answer to tell "this is a file" apart from "this is a directory".
        """
        ...

    async def delete(self, rel_path: str) -> None:
        """Remove the file or the whole directory tree at ``rel_path``; missing is a no-op."""
        ...

"""An ``ArtifactStore`` on a local directory (what ``mlflow server --artifacts-destination``
does with a path), for single-node deployments and tests.

Blocking file I/O runs in the default thread pool so a slow disk never stalls the event
loop, and data moves in ``CHUNK_SIZE`` pieces so memory stays bounded whatever the file size.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import secrets
import shutil
import stat
import sys
import threading
from collections.abc import AsyncIterator, Callable
from functools import partial
from pathlib import Path
from typing import IO, Any, TypeVar

import structlog

from evtrack.artifacts._leftovers import (
    STALE_UPLOAD_AGE_S,
    TEMP_PREFIX,
    TEMP_SUFFIX,
    remove_stale_uploads,
)
from evtrack.artifacts._paths import contained, invalid_path
from evtrack.artifacts._store import CHUNK_SIZE, FileInfo
from evtrack.errors import ErrorCode, EvtrackError, invalid, not_found

if sys.platform != "win32":
    import fcntl

_T = TypeVar("_T")

log = structlog.get_logger("evtrack.artifacts")


class _ThreadFile:
    """A file object used from the thread pool, closed safely even on cancellation.

    When the awaiting task is cancelled, the worker thread is still inside ``read``/``write``
    on the file. Closing it under the thread's feet could let the fd number be reused by
    another open and the late write land in an unrelated file, so closing (and the cleanup
    that must follow it) is deferred until the in-flight call has returned.
    """

    def __init__(self, f: IO[bytes]) -> None:
        self._f = f
        self._pending: asyncio.Future[Any] | None = None
        self._closed = False

    async def run(self, fn: Callable[[IO[bytes]], _T]) -> _T:
        fut: asyncio.Future[_T] = asyncio.get_running_loop().run_in_executor(None, fn, self._f)
        self._pending = fut
        # shield: a cancellation interrupts our wait, not the bookkeeping of the thread's call
        result = await asyncio.shield(fut)
        self._pending = None
        return result

    def close(self, then: Callable[[], None] | None = None) -> None:
        """Close now if idle, otherwise as soon as the in-flight call returns; then ``then``."""
        if self._closed:
            return
        self._closed = True

        def finish() -> None:
            try:
                self._f.close()
            finally:
                if then is not None:
                    then()

        pending = self._pending
        if pending is not None and not pending.done():
            pending.add_done_callback(lambda _: finish())
        else:
            finish()


def _create_temp(parent: Path) -> tuple[int, str]:
    """A fresh temp file beside the destination, so the final rename stays on one filesystem.

    Not ``tempfile.mkstemp``: that creates mode 0600, and the artifact would keep it after
    the rename; 0666 filtered by the umask gives the permissions a plain write would.
    """
    while True:
        path = str(parent / f"{TEMP_PREFIX}{secrets.token_hex(8)}{TEMP_SUFFIX}")
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
        except FileExistsError:
            continue
        if sys.platform != "win32":
            # Held until the file is closed (or the process dies): "a live upload owns this".
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return fd, path


def _write_all(data: bytes, f: IO[bytes]) -> int:
    f.write(data)  # a buffered writer writes everything or raises
    return len(data)


def _flush_and_sync(f: IO[bytes]) -> None:
    f.flush()
    os.fsync(f.fileno())


# No space left, quota exceeded, or a file larger than the file system (or RLIMIT_FSIZE)
# allows: the store cannot take this upload, whatever the client does.
_NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


def _unlink_quietly(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


class LocalArtifactStore:
    """Artifacts as files under ``root``; implements ``ArtifactStore``.

    Every path is re-checked with ``contained`` (symlinks resolved) even though the API layer
    has validated it already: a symlink inside the root is invisible to string checks.
    """

    def __init__(self, root: Path, *, stale_upload_age_s: float = STALE_UPLOAD_AGE_S) -> None:
        self._root = Path(root)
        self._stale_upload_age_s = stale_upload_age_s
        self._sweep: asyncio.Task[None] | None = None
        self._stop_sweep = threading.Event()

    @property
    def root(self) -> Path:
        return self._root

    async def start(self) -> None:
        """Create the root (a read-only or mistyped path fails at start-up), then remove
        killed uploads' leftovers in the background: walking a large tree must not delay
        start-up."""
        await asyncio.to_thread(self._root.mkdir, parents=True, exist_ok=True)
        if self._sweep is None:
            self._stop_sweep.clear()
            self._sweep = asyncio.create_task(self._remove_leftovers())

    async def close(self) -> None:
        """Stop the leftover sweep (it ends at its next directory) and wait for it."""
        sweep, self._sweep = self._sweep, None
        if sweep is not None:
            self._stop_sweep.set()
            with contextlib.suppress(Exception):
                await sweep

    async def _remove_leftovers(self) -> None:
        try:
            removed = await asyncio.to_thread(
                remove_stale_uploads,
                self._root,
                older_than_s=self._stale_upload_age_s,
                stop=self._stop_sweep,
            )
        except OSError as exc:
            log.warning("artifacts.leftovers.failed", root=str(self._root), error=str(exc))
            return
        log.info(
            "artifacts.leftovers.removed",
            root=str(self._root),
            removed=removed,
            older_than_s=self._stale_upload_age_s,
        )

    def _leaf(self, rel_path: str) -> Path:
        """The path of ``rel_path`` with its parent resolved but its last component not.

        Writes and deletes act on the directory entry itself: replacing or deleting a
        symlink must never touch what it points to.
        """
        if not rel_path:
            raise invalid_path()
        parent_rel, _, name = rel_path.rpartition("/")
        return contained(self._root, parent_rel) / name

    async def put(self, rel_path: str, chunks: AsyncIterator[bytes]) -> int:
        """Store ``chunks`` at ``rel_path``: complete or not at all (a temp file renamed into
        place; removed on any failure). A full disk is a clear error, not a server fault."""
        try:
            return await self._put(rel_path, chunks)
        except OSError as exc:
            if exc.errno not in _NO_SPACE:
                raise
            log.warning("artifacts.no_space", root=str(self._root), path=rel_path, error=str(exc))
            raise EvtrackError(
                ErrorCode.RESOURCE_EXHAUSTED,
                f"Cannot store artifact '{rel_path}': the artifact store is out of space "
                f"({os.strerror(exc.errno)}). Nothing was stored; upload again once space "
                "is freed.",
            ) from None

    async def _put(self, rel_path: str, chunks: AsyncIterator[bytes]) -> int:
        target = self._leaf(rel_path)
        parent = target.parent
        try:
            await asyncio.to_thread(parent.mkdir, parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            raise invalid(f"Cannot write artifact '{rel_path}': a parent path is a file") from None
        # mkdir may have followed a symlink created since the first check.
        if contained(self._root, rel_path.rpartition("/")[0]) != parent:
            raise invalid_path()
        if await asyncio.to_thread(target.is_dir):
            raise _is_directory(rel_path)

        fd, tmp = await asyncio.to_thread(_create_temp, parent)
        tf = _ThreadFile(os.fdopen(fd, "wb"))
        complete = False
        written = 0
        try:
            buf = bytearray()
            async for chunk in chunks:
                buf += chunk
                if len(buf) >= CHUNK_SIZE:
                    written += await tf.run(partial(_write_all, bytes(buf)))
                    buf = bytearray()
            if buf:
                written += await tf.run(partial(_write_all, bytes(buf)))
            # fsync before rename: otherwise a crash can leave the new name pointing at an
            # empty file on filesystems that reorder metadata ahead of data.
            await tf.run(_flush_and_sync)
            complete = True
        finally:
            # No await in here: this also runs on cancellation, where a further await could
            # be interrupted in turn and leak the partial file.
            tf.close(then=None if complete else partial(_unlink_quietly, tmp))
        try:
            await asyncio.to_thread(os.replace, tmp, target)
        except IsADirectoryError:
            _unlink_quietly(tmp)
            raise _is_directory(rel_path) from None
        except BaseException:
            _unlink_quietly(tmp)
            raise
        return written

    async def open(self, rel_path: str) -> tuple[int, AsyncIterator[bytes]]:
        if not rel_path:
            raise _no_such(rel_path)
        path = contained(self._root, rel_path)

        def _open() -> tuple[IO[bytes], int] | None:
            try:
                # stat before open: opening a FIFO planted under the root would block.
                if not stat.S_ISREG(os.stat(path).st_mode):
                    return None
                f = open(path, "rb")  # noqa: SIM115 - handed to the iterator, closed there
            except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
                return None
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode):
                f.close()
                return None
            return f, st.st_size

        opened = await asyncio.to_thread(_open)
        if opened is None:
            raise _no_such(rel_path)
        f, size = opened
        return size, _read_chunks(_ThreadFile(f), size)

    async def list(self, rel_dir: str) -> list[FileInfo]:
        path = contained(self._root, rel_dir)
        real_root = self._root.resolve()

        def _scan() -> list[FileInfo]:
            try:
                entries = list(os.scandir(path))
            except (FileNotFoundError, NotADirectoryError):
                return []
            infos: list[FileInfo] = []
            for entry in entries:
                if entry.name.startswith(TEMP_PREFIX):
                    continue
                try:
                    if entry.is_symlink() and not Path(os.path.realpath(entry.path)).is_relative_to(
                        real_root
                    ):
                        continue  # would be refused on download anyway; don't advertise it
                    if entry.is_dir():
                        infos.append(FileInfo(entry.name, True, None))
                    elif entry.is_file():
                        infos.append(FileInfo(entry.name, False, entry.stat().st_size))
                except OSError:
                    continue  # vanished or dangling while listing
            infos.sort(key=lambda i: i.path)
            return infos

        return await asyncio.to_thread(_scan)

    async def delete(self, rel_path: str) -> None:
        target = self._leaf(rel_path)

        def _delete() -> None:
            try:
                st = os.lstat(target)
            except (FileNotFoundError, NotADirectoryError):
                return
            if stat.S_ISDIR(st.st_mode):
                shutil.rmtree(target)
            else:
                _unlink_quietly(str(target))

        await asyncio.to_thread(_delete)


async def _read_chunks(tf: _ThreadFile, size: int) -> AsyncIterator[bytes]:
    """Yield exactly ``size`` bytes; fail loudly if the file is shorter than it was at open.

    Never sending more than the announced size keeps ``Content-Length`` honest; failing on
    a short file makes the server drop the connection, so the client sees a truncated
    transfer instead of a silently short artifact.
    """
    try:
        remaining = size
        while remaining > 0:
            n = min(CHUNK_SIZE, remaining)
            chunk = await tf.run(partial(_read, n))
            if not chunk:
                raise OSError("artifact shrank while it was being read")
            remaining -= len(chunk)
            yield chunk
    finally:
        tf.close()


def _read(n: int, f: IO[bytes]) -> bytes:
    return f.read(n)


def _no_such(rel_path: str) -> Exception:
    return not_found(f"No such artifact: '{rel_path}'")


def _is_directory(rel_path: str) -> Exception:
    return invalid(f"Artifact path refers to a directory, not a file: '{rel_path}'")

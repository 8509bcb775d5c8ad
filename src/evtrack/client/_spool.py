"""The spool directory: one folder per client process, its lock, its segments and acks.

Layout::

    <spool dir>/
        <client id>/             one per Client (a forked child gets its own)
            lock                 flock()ed by the live owner for as long as it runs
            meta.json            server URL, declared user, pid, host, creation time
            seg-00000001.log     framed records (see ``_format``), pre-allocated, mmapped
            seg-00000001.ack     "<acked offset> <in-flight start> <in-flight end>"
            artifacts/           files copied here by log_artifact until uploaded
        rejected/                batches the server refused (400), kept for inspection

Who may deliver a client folder is decided by its lock alone: a live owner holds an exclusive
``flock`` on ``lock``; the kernel drops it when the owner dies, however it dies, so whoever
next takes the lock (another client's sender, ``evtrack sync``) knows the owner is gone and
nobody else is sending the same records. A folder is created under a dot-name and renamed
into place only once its lock is held, so a half-made folder is never mistaken for an orphan.

The spool must be on a local file system: ``flock`` over NFS is not reliable.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import mmap
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evtrack.client._format import DATA_START, check_file_header, file_header

REJECTED = "rejected"
ARTIFACTS = "artifacts"
LOCK = "lock"
META = "meta.json"
_MAP_POPULATE = getattr(mmap, "MAP_POPULATE", 0)


def segment_path(folder: Path, seq: int) -> Path:
    return folder / f"seg-{seq:08d}.log"


def ack_path(folder: Path, seq: int) -> Path:
    return folder / f"seg-{seq:08d}.ack"


def list_segments(folder: Path) -> list[int]:
    seqs = []
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return []
    for name in names:
        if name.startswith("seg-") and name.endswith(".log"):
            with contextlib.suppress(ValueError):
                seqs.append(int(name[4:-4]))
    return sorted(seqs)


@dataclass
class AckState:
    """How far a segment is delivered, and the range being sent (if any).

    The in-flight range is written *before* its request goes out. After a crash it is sent
    again exactly as it was, with the same idempotency key, so a request that the server
    applied but whose answer was lost is answered from the server's idempotency table
    instead of being applied twice.
    """

    acked: int = DATA_START
    inflight: tuple[int, int] | None = None


def read_ack(path: Path) -> AckState:
    try:
        fields = path.read_text().split()
    except FileNotFoundError:
        return AckState()
    try:
        acked, start, end = (int(x) for x in fields[:3])
    except ValueError:
        return AckState()
    inflight = (start, end) if end > start >= acked else None
    return AckState(max(acked, DATA_START), inflight)


def write_ack(path: Path, state: AckState) -> None:
    """Replace the ack file atomically (write a temporary file, then rename over it).

    No fsync: a process crash cannot lose a rename that returned. After a power loss the
    rename may be lost, and the records are sent again: the idempotency keys make that
    harmless (the server remembers keys forever).
    """
    start, end = state.inflight or (0, 0)
    tmp = path.with_suffix(".ack.tmp")
    tmp.write_text(f"{state.acked} {start} {end}\n")
    os.replace(tmp, path)


def spool_usage(root: Path) -> int:
    """Bytes the spool holds for delivery (segments and artifacts; not ``rejected/``)."""
    total = 0
    try:
        folders = list(os.scandir(root))
    except FileNotFoundError:
        return 0
    for folder in folders:
        if not folder.is_dir(follow_symlinks=False) or folder.name == REJECTED:
            continue
        total += _tree_size(folder.path)
    return total


def _tree_size(path: str) -> int:
    total = 0
    try:
        entries = list(os.scandir(path))
    except (FileNotFoundError, NotADirectoryError):
        return 0
    for entry in entries:
        try:
            if entry.is_dir(follow_symlinks=False):
                total += _tree_size(entry.path)
            else:
                total += entry.stat(follow_symlinks=False).st_size
        except FileNotFoundError:
            continue
    return total


def client_folders(root: Path) -> list[Path]:
    """Client spool folders under ``root`` (half-made dot-folders and ``rejected/`` excluded)."""
    try:
        entries = list(os.scandir(root))
    except FileNotFoundError:
        return []
    return sorted(
        Path(e.path)
        for e in entries
        if e.is_dir(follow_symlinks=False) and not e.name.startswith(".") and e.name != REJECTED
    )


def clean_staging(root: Path, older_than_s: float = 3600.0) -> None:
    """Remove half-made client folders (``.<id>.new``) left by a crash during creation.
    They never hold records: segments are only created after the rename."""
    try:
        entries = list(os.scandir(root))
    except FileNotFoundError:
        return
    now = time.time()
    for entry in entries:
        if not (entry.name.startswith(".") and entry.name.endswith(".new")):
            continue
        try:
            if now - entry.stat(follow_symlinks=False).st_mtime < older_than_s:
                continue
        except FileNotFoundError:
            continue
        folder = LockedFolder.try_lock(Path(entry.path))
        if folder is not None:
            shutil.rmtree(entry.path, ignore_errors=True)
            folder.release()


class LockedFolder:
    """A client spool folder whose lock this process holds."""

    def __init__(self, path: Path, lock_fd: int) -> None:
        self.path = path
        self.lock_fd: int | None = lock_fd

    @property
    def client_id(self) -> str:
        return self.path.name

    @property
    def artifacts(self) -> Path:
        return self.path / ARTIFACTS

    @classmethod
    def create(cls, root: Path, client_id: str, meta: dict[str, Any]) -> LockedFolder:
        root.mkdir(parents=True, exist_ok=True)
        staging = root / f".{client_id}.new"
        staging.mkdir()
        fd = os.open(staging / LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            (staging / META).write_text(json.dumps(meta))
            final = root / client_id
            os.rename(staging, final)
        except BaseException:
            os.close(fd)
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return cls(final, fd)

    @classmethod
    def try_lock(cls, path: Path) -> LockedFolder | None:
        """Lock an existing folder if its owner is gone; None while a live process holds it."""
        try:
            fd = os.open(path / LOCK, os.O_RDWR | os.O_CLOEXEC)
        except (FileNotFoundError, NotADirectoryError):
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                return None
            raise
        if not (path / LOCK).exists():  # removed by whoever held it before us
            os.close(fd)
            return None
        return cls(path, fd)

    def meta(self) -> dict[str, Any]:
        try:
            data = json.loads((self.path / META).read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def release(self) -> None:
        """Give up ownership (the folder stays, for a later client or ``evtrack sync``)."""
        if self.lock_fd is not None:
            os.close(self.lock_fd)
            self.lock_fd = None

    def forget_after_fork(self) -> None:
        """In a forked child: drop the inherited descriptor *without* unlocking, which
        would release the parent's lock (flock locks belong to the shared open file)."""
        if self.lock_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self.lock_fd)
            self.lock_fd = None

    def remove(self) -> None:
        """Delete the folder (everything in it is delivered), then release the lock."""
        for name in os.listdir(self.path) if self.path.exists() else []:
            if name == LOCK:
                continue
            target = self.path / name
            if target.is_dir():
                shutil.rmtree(target, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    target.unlink()
        with contextlib.suppress(FileNotFoundError):
            (self.path / LOCK).unlink()
        with contextlib.suppress(OSError):
            self.path.rmdir()
        self.release()


class SegmentFull(Exception):
    """No space for a new segment: the spool cap is reached or the disk is full."""


class SegmentWriter:
    """The segment a client appends to: pre-allocated (so a full disk shows up here, as an
    error, rather than as SIGBUS on a page fault later) and mapped with MAP_POPULATE (so the
    log calls never take a page fault to fault the pages in)."""

    __slots__ = ("fd", "keys", "mm", "path", "pos", "runs", "seq", "size")

    def __init__(self, path: Path, seq: int, fd: int, mm: mmap.mmap, size: int) -> None:
        self.path = path
        self.seq = seq
        self.fd = fd
        self.mm = mm
        self.size = size
        self.pos = DATA_START
        self.keys: dict[str, int] = {}
        self.runs: dict[str, int] = {}

    @classmethod
    def create(cls, folder: Path, seq: int, size: int, *, spare: bool = False) -> SegmentWriter:
        """A new segment file. A ``spare`` (prepared ahead by the sender thread) gets a
        temporary name that delivery ignores, and takes its real name in ``activate``, so a
        spare that loses a race with the writer never collides with a real segment."""
        path = folder / f"spare-{seq:08d}.tmp" if spare else segment_path(folder, seq)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        try:
            try:
                os.posix_fallocate(fd, 0, size)
            except OSError as exc:
                if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                    raise SegmentFull(str(exc)) from exc
                if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                    raise
                os.ftruncate(fd, size)  # file systems without fallocate
            mm = mmap.mmap(fd, size, flags=mmap.MAP_SHARED | _MAP_POPULATE)
            mm[:DATA_START] = file_header()
        except BaseException:
            os.close(fd)
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            raise
        return cls(path, seq, fd, mm, size)

    def activate(self, folder: Path) -> None:
        """Give a spare its real segment name (delivery sees it from now on)."""
        target = segment_path(folder, self.seq)
        if self.path != target:
            os.rename(self.path, target)
            self.path = target

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.mm.close()
        with contextlib.suppress(OSError):
            os.close(self.fd)


class SegmentReader:
    """A read-only view of a segment (the sender's own mapping, separate from the writer's,
    so either side may close its view at any time)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            size = os.fstat(fd).st_size
            self.mm = mmap.mmap(fd, size, prot=mmap.PROT_READ) if size else None
        finally:
            os.close(fd)
        self.size = size
        self.valid = self.mm is not None and check_file_header(self.mm[:DATA_START])

    def close(self) -> None:
        if self.mm is not None:
            with contextlib.suppress(Exception):
                self.mm.close()
            self.mm = None

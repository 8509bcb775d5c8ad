"""Remove the temp files that killed uploads left in a local artifact store.

An upload is written to ``<dir>/.evtrack-upload-<random>.part`` and renamed into place when
complete; a failed or cancelled upload removes its temp file itself. A server killed
mid-upload (SIGKILL, OOM, power loss) cannot, and its ``.part`` file would stay forever,
invisible in listings but using disk.

A temp file is a leftover when both hold:

* no live upload holds its lock: every upload keeps an exclusive ``flock`` on its temp file
  for as long as it writes, and the kernel drops the lock when the process dies. This is
  what protects the uploads of *other* live servers sharing the directory (several API
  nodes on one volume), and of this one;
* it was not modified for :data:`STALE_UPLOAD_AGE_S`. This closes the instant between a
  temp file's creation and its lock, covers filesystems where ``flock`` is not shared
  between hosts (some NFS set-ups), and the instant between the upload closing its file and
  renaming it. An upload writes its file continually, so a live one is never that old.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from pathlib import Path

if sys.platform != "win32":
    import fcntl

# Uploads in flight live next to their destination under this prefix (same filesystem, so
# the final rename is atomic); listings hide them.
TEMP_PREFIX = ".evtrack-upload-"
TEMP_SUFFIX = ".part"

STALE_UPLOAD_AGE_S = 3600.0
"""A temp file untouched this long (and unlocked) belongs to no live upload."""


def remove_stale_uploads(
    root: Path, *, older_than_s: float = STALE_UPLOAD_AGE_S, stop: threading.Event | None = None
) -> int:
    """Walk ``root`` and delete leftover upload temp files; return how many went.

    Blocking (run it in a thread); ``stop`` ends the walk early (at shutdown). Symlinks to
    directories are not followed, so nothing outside the root is touched.
    """
    removed = 0
    cutoff = time.time() - older_than_s
    for dirpath, _dirs, files in os.walk(root):
        if stop is not None and stop.is_set():
            break
        for name in files:
            if name.startswith(TEMP_PREFIX) and name.endswith(TEMP_SUFFIX):
                removed += _remove_if_stale(os.path.join(dirpath, name), cutoff)
    return removed


def _remove_if_stale(path: str, cutoff: float) -> int:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return 0  # gone already (its upload finished), or a symlink: not ours
    try:
        st = os.fstat(fd)
        if st.st_mtime > cutoff:
            return 0
        if sys.platform != "win32":
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return 0  # a live upload (here or on another server) holds it
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
            return 1
        return 0
    finally:
        os.close(fd)

"""A server killed mid-upload leaves a ``.part`` file; the next start-up removes it."""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Callable
from pathlib import Path

from _support.server import EvtrackServer

from evtrack.artifacts._local import TEMP_PREFIX

TWO_HOURS = 2 * 3600


def _part(directory: Path, name: str, age_s: float) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{TEMP_PREFIX}{name}.part"
    path.write_bytes(b"half an upload")
    then = time.time() - age_s
    os.utime(path, (then, then))
    return path


def test_start_up_removes_stale_upload_leftovers_only(
    evtrack_server_factory: Callable[..., EvtrackServer], tmp_path: Path
) -> None:
    root = tmp_path / "artifacts"
    stale = _part(root / "1" / "abc" / "artifacts", "stale", TWO_HOURS)
    stale_top = _part(root, "staletop", TWO_HOURS)
    fresh = _part(root / "1" / "abc" / "artifacts", "fresh", 5)
    # Old, but a live upload (another server sharing the directory) holds its lock.
    held = _part(root / "2", "held", TWO_HOURS)
    artifact = root / "1" / "abc" / "artifacts" / "model.pkl"
    artifact.write_bytes(b"kept")
    os.utime(artifact, (time.time() - TWO_HOURS,) * 2)

    with open(held, "rb") as holder:
        fcntl.flock(holder.fileno(), fcntl.LOCK_EX)
        server = evtrack_server_factory(artifacts_root=root)
        deadline = time.monotonic() + 10
        while "artifacts.leftovers.removed" not in server.stderr_path.read_text():
            assert time.monotonic() < deadline, server.log_tail()
            time.sleep(0.1)

    log = server.stderr_path.read_text()
    assert '"removed": 2' in log, log
    assert not stale.exists()
    assert not stale_top.exists()
    assert fresh.exists()
    assert held.exists()
    assert artifact.read_bytes() == b"kept"

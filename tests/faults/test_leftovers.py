"""What a killed upload or a killed rebuild leaves behind is cleaned up at start-up, and
nothing that belongs to live work is.

* An upload is written to a locked ``.part`` file and renamed when complete. The server is
  SIGKILLed mid-upload for real here: the file stays, a start-up right after keeps it (it is
  recent: on a shared volume it could be another node's), and the first start-up once it is
  stale removes it. (``tests/artifacts/test_leftovers.py`` covers the rules in detail.)
* ``evtrack projections rebuild`` replays the log into a shadow schema (``<schema>__rebuild``
  with a checkpoint ``<name>__rebuild``) and swaps it in at the end. Killed before the swap,
  it leaves both; the projector that next takes the projection's lease removes them, unless
  a rebuild is still running (it holds a lock for as long as it runs).

The rebuild is stopped just before its swap deterministically: the test holds the live
checkpoint row locked, which the swap waits for.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import requests
from _support.aio import run_sync
from _support.server import EvtrackServer

from evtrack.artifacts._local import TEMP_PREFIX
from evtrack.projections.registry import all_projections

from ._load import Answers, BatchWriter, create_experiment, create_run, wait_until
from ._read_models import snapshot

TWO_HOURS = 2 * 3600


def _parts(root: Path) -> list[Path]:
    return [p for p in root.rglob(f"{TEMP_PREFIX}*") if p.is_file()]


def test_a_killed_upload_leaves_a_part_file_that_a_later_start_up_removes(
    evtrack_server: EvtrackServer,
) -> None:
    server = evtrack_server
    declared, sent = 8 * 1024 * 1024, 3 * 1024 * 1024
    sock = socket.create_connection((server.host, server.port), timeout=10)
    sock.sendall(
        (
            "PUT /api/2.0/mlflow-artifacts/artifacts/0/run/artifacts/model.bin HTTP/1.1\r\n"
            f"Host: {server.host}\r\nContent-Length: {declared}\r\n\r\n"
        ).encode()
        + os.urandom(sent)
    )
    root = server.artifacts_root
    wait_until(lambda: any(p.stat().st_size > 0 for p in _parts(root)), 10, "the upload")
    server.kill()
    sock.close()
    [part] = _parts(root)
    assert not (part.parent / "model.bin").exists()

    server.restart()  # right away: the file is recent, so it may be another node's
    wait_until(lambda: "artifacts.leftovers.removed" in server.stderr_path.read_text(), 10, "sweep")
    assert part.exists()

    then = time.time() - TWO_HOURS  # the next start-up, two hours later
    os.utime(part, (then, then))
    server.restart()
    wait_until(lambda: "artifacts.leftovers.removed" in server.stderr_path.read_text(), 10, "sweep")
    assert '"removed": 1' in server.stderr_path.read_text()
    assert _parts(root) == []


# --------------------------------------------------------------------------- rebuilds


def _with_application(dsn: str, name: str) -> str:
    return f"{dsn}{'&' if '?' in dsn else '?'}application_name={name}"


def _rebuild(dsn: str, name: str, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "evtrack",
                "projections",
                "rebuild",
                "metrics",
                "--database-url",
                _with_application(dsn, name),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )


class _CheckpointHolder:
    """Holds the live ``metrics`` checkpoint row locked: a rebuild's swap waits for it."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.conn: Any = None

    def __enter__(self) -> _CheckpointHolder:
        async def hold() -> Any:
            conn = await asyncpg.connect(self.dsn)
            await conn.execute("BEGIN")
            await conn.execute(
                "SELECT 1 FROM projection_checkpoints WHERE name = 'metrics' FOR UPDATE"
            )
            return conn

        self.conn = _loop_call(hold)
        return self

    def __exit__(self, *exc: object) -> None:
        async def release() -> None:
            await self.conn.close()  # rolls back

        _loop_call(release)


_LOOP: Any = None


def _loop_call(factory: Callable[[], Any]) -> Any:
    """Run on one long-lived loop (a held connection must stay on the loop that opened it)."""
    import asyncio
    import threading

    global _LOOP
    if _LOOP is None:
        _LOOP = asyncio.new_event_loop()
        threading.Thread(target=_LOOP.run_forever, daemon=True).start()
    return asyncio.run_coroutine_threadsafe(factory(), _LOOP).result(30)


def _query(dsn: str, sql: str, *args: Any) -> Any:
    async def run() -> Any:
        conn = await asyncpg.connect(dsn)
        try:
            return await conn.fetchval(sql, *args)
        finally:
            await conn.close()

    return run_sync(run)


def _blocked_at_swap(dsn: str, application: str) -> bool:
    return bool(
        _query(
            dsn,
            """SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE application_name = $1
               AND wait_event_type = 'Lock')""",
            application,
        )
    )


def _leftovers(dsn: str) -> tuple[bool, bool]:
    """(shadow schema exists, shadow checkpoint exists) of the metrics projection."""
    schema = _query(
        dsn, "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = 'rm_metrics__rebuild')"
    )
    checkpoint = _query(
        dsn,
        "SELECT EXISTS (SELECT 1 FROM projection_checkpoints WHERE name = 'metrics__rebuild')",
    )
    return bool(schema), bool(checkpoint)


def _some_data(url: str) -> None:
    experiment_id = create_experiment(url, "rebuild-leftovers")
    answers = Answers()
    writer = BatchWriter([url], create_run(url, experiment_id), answers, max_batches=20)
    writer.run()
    assert answers.statuses() == {200}


def test_a_killed_rebuild_is_cleaned_at_start_up_and_a_running_one_is_not(
    evtrack_server: EvtrackServer, tmp_path: Path
) -> None:
    server, dsn = evtrack_server, evtrack_server.dsn
    _some_data(server.url)
    wait_until(
        lambda: requests.get(f"{server.url}/ready", timeout=5).status_code == 200, 30, "ready"
    )
    before = snapshot(dsn)

    # A rebuild killed just before its swap leaves its shadow schema and checkpoint.
    with _CheckpointHolder(dsn):
        killed = _rebuild(dsn, "rebuild-killed", tmp_path / "killed.log")
        wait_until(lambda: _blocked_at_swap(dsn, "rebuild-killed"), 60, "the rebuild's swap")
        killed.send_signal(signal.SIGKILL)
        assert killed.wait(10) == -signal.SIGKILL
    assert _leftovers(dsn) == (True, True)

    # The projector that takes the lease at the next start-up removes them.
    server.restart()
    wait_until(lambda: _leftovers(dsn) == (False, False), 30, "the leftovers to go")
    assert '"projector.rebuild_leftovers_removed"' in server.stderr_path.read_text()
    assert snapshot(dsn) == before

    # A rebuild that is running keeps its shadow schema through a start-up, and a second
    # rebuild of the same read model is refused while it runs.
    with _CheckpointHolder(dsn):
        running = _rebuild(dsn, "rebuild-running", tmp_path / "running.log")
        wait_until(lambda: _blocked_at_swap(dsn, "rebuild-running"), 60, "the rebuild's swap")
        server.restart()
        wait_until(
            lambda: (
                server.stderr_path.read_text().count('"projector.lease_acquired"')
                == len(all_projections())
            ),
            30,
            "the projectors to start",
        )
        assert _leftovers(dsn) == (True, True)
        second = subprocess.run(
            [
                sys.executable,
                "-m",
                "evtrack",
                "projections",
                "rebuild",
                "metrics",
                "--database-url",
                dsn,
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert second.returncode == 1, second.stdout + second.stderr
        assert "already running" in second.stderr
    assert running.wait(60) == 0, (tmp_path / "running.log").read_text()[-3000:]
    assert _leftovers(dsn) == (False, False)
    assert snapshot(dsn) == before

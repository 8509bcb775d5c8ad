"""A projector worker is SIGKILLed in the middle of a batch; a standby worker takes over, and
the read models end up equal to a fresh rebuild from the log (invariants 1 and 3).

Worker A (``evtrack projections run``) owns every projection's lease (a session advisory
lock); worker B runs beside it, waiting for leases. While writers keep the projectors busy,
A is killed at a moment one of its connections holds an open transaction that has already
written (a batch applied but not committed). PostgreSQL rolls that transaction back and
drops A's locks with its connections; B acquires the leases and carries on from the last
committed checkpoint. Nothing may be lost or applied twice: the read models are compared
table by table with ``evtrack projections rebuild all``.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
from _support.aio import run_sync
from _support.server import EvtrackServer

from evtrack.projections.registry import all_projections

from ._load import (
    Answers,
    BatchWriter,
    RegistryWriter,
    create_experiment,
    create_model,
    create_run,
    wait_until,
)
from ._read_models import compare_with_rebuild, wait_caught_up
from ._tally import tally


def _worker(dsn: str, name: str, log: Path) -> subprocess.Popen[bytes]:
    separator = "&" if "?" in dsn else "?"
    with open(log, "wb") as out:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "evtrack",
                "projections",
                "run",
                "--database-url",
                f"{dsn}{separator}application_name={name}",  # tells its sessions apart
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def _leases(log: Path) -> int:
    return log.read_text(errors="replace").count('"projector.lease_acquired"')


def _open_write_transaction(dsn: str, application: str) -> dict[str, Any] | None:
    """A session of ``application`` inside a transaction that has written to a read model
    (it holds a row-exclusive lock on a table of a projection's schema: only INSERT, UPDATE,
    DELETE and COPY take one)."""

    async def query() -> dict[str, Any] | None:
        conn = await asyncpg.connect(dsn)
        try:
            row = await conn.fetchrow(
                """SELECT a.pid, a.backend_xid::text AS xid, a.state,
                          n.nspname || '.' || c.relname AS wrote, left(a.query, 60) AS query
                   FROM pg_stat_activity a
                   JOIN pg_locks l ON l.pid = a.pid AND l.mode = 'RowExclusiveLock'
                   JOIN pg_class c ON c.oid = l.relation AND c.relkind = 'r'
                   JOIN pg_namespace n ON n.oid = c.relnamespace
                   WHERE a.application_name = $1 AND a.backend_xid IS NOT NULL
                     AND n.nspname = ANY($2::text[])
                   LIMIT 1""",
                application,
                [p.schema_name for p in all_projections()],
            )
            return None if row is None else dict(row)
        finally:
            await conn.close()

    return run_sync(query)


def _xact_status(dsn: str, xid: str) -> str:
    """committed, aborted or in progress (the 32-bit xid placed in the current epoch)."""

    async def query() -> str:
        conn = await asyncpg.connect(dsn)
        try:
            return str(
                await conn.fetchval(
                    """SELECT pg_xact_status((((pg_current_xact_id()::text::bigint >> 32) << 32)
                                              | $1::bigint)::text::xid8)""",
                    int(xid),
                )
            )
        finally:
            await conn.close()

    return run_sync(query)


def test_a_projector_killed_mid_batch_is_taken_over_and_equals_a_rebuild(
    evtrack_server_factory: Callable[..., EvtrackServer],
    fresh_database_dsn: str,
    tmp_path: Path,
) -> None:
    dsn = fresh_database_dsn
    projections = len(all_projections())
    log_a, log_b = tmp_path / "worker-a.log", tmp_path / "worker-b.log"
    worker_a = _worker(dsn, "worker-a", log_a)
    workers = [worker_a]
    answers = Answers()
    load: list[Any] = []
    try:
        server = evtrack_server_factory(extra_args=["--no-projectors"])
        wait_until(lambda: _leases(log_a) == projections, 30, "worker A to own every lease")
        worker_b = _worker(dsn, "worker-b", log_b)
        workers.append(worker_b)

        experiment_id = create_experiment(server.url, "projector-kill")
        runs = [create_run(server.url, experiment_id) for _ in range(3)]
        create_model(server.url, "takeover")
        writers = [
            BatchWriter([server.url], runs[0], answers, kind="log_batch", size=500, pause=0),
            BatchWriter([server.url], runs[1], answers, kind="ingest", size=20_000, pause=0),
            BatchWriter([server.url], runs[2], answers, kind="ingest", size=5_000, pause=0),
        ]
        registry = RegistryWriter([server.url], "takeover", runs[0], answers, versions=20)
        load = [*writers, registry]
        for thread in load:
            thread.start()
        wait_until(lambda: writers[1].acknowledged >= 60_000, 60, "ingest to get going")

        # Kill A while one of its sessions is inside a batch that has written to a read model.
        # It is frozen (SIGSTOP) before its transaction is checked again, so it cannot commit
        # between the check and the kill; one that committed meanwhile is let go and retried.
        deadline = time.monotonic() + 30
        while True:
            assert time.monotonic() < deadline, "worker A never seen inside a batch"
            caught = _open_write_transaction(dsn, "worker-a")
            if caught is None:
                continue
            worker_a.send_signal(signal.SIGSTOP)
            if _xact_status(dsn, caught["xid"]) == "in progress":
                break
            worker_a.send_signal(signal.SIGCONT)
        worker_a.send_signal(signal.SIGKILL)
        assert worker_a.wait(10) == -signal.SIGKILL
        wait_until(lambda: _xact_status(dsn, caught["xid"]) != "in progress", 10, "rollback")
        status = _xact_status(dsn, caught["xid"])
        print(f"worker A killed inside transaction {caught}: {status}")
        assert status == "aborted", caught

        killed_at = time.monotonic()
        wait_until(lambda: _leases(log_b) == projections, 30, "worker B to take every lease")
        took_over_in = time.monotonic() - killed_at
        # Writes go on under the new owner for a moment, then stop.
        ingested = writers[1].acknowledged
        wait_until(lambda: writers[1].acknowledged > ingested + 20_000, 30, "ingest after")
        for thread in load:
            thread.stop.set()
        for thread in load:
            thread.join(60)
        wait_caught_up(dsn)
        print(f"worker B took every lease {took_over_in:.1f}s after the kill")

        assert answers.unexpected == [], answers.unexpected[:5]
        tally(
            "projector worker SIGKILL mid-batch, standby takes over",
            dsn,
            runs,
            sent=sum(w.sent for w in writers),
            acknowledged=sum(w.acknowledged for w in writers),
        ).check()
        versions = sorted(registry.created)
        assert versions == list(range(1, len(versions) + 1))

        worker_b.send_signal(signal.SIGTERM)
        assert worker_b.wait(30) == 0, log_b.read_text()[-3000:]
        figures = compare_with_rebuild(dsn)
        print(f"read models equal a fresh rebuild: {figures}")
    finally:
        for thread in load:
            thread.stop.set()
            if isinstance(thread, BatchWriter):
                thread.give_up.set()
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait(10)

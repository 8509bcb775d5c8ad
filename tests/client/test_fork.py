"""Fork safety: a child gets its own spool folder, segment and sender; both sides arrive."""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path

from _support.server import EvtrackServer

from evtrack.client import Client, Run
from evtrack.client._spool import LockedFolder, client_folders

from ._helpers import create_experiment, history, logged_points, wait_for


def test_os_fork_child_logs_through_its_own_spool(
    evtrack_server: EvtrackServer, spool: Path
) -> None:
    url = evtrack_server.url
    client = Client(url, spool_dir=spool, batch_interval=0.1)
    try:
        run = client.start_run(experiment_id=create_experiment(url))
        for i in range(1000):
            run.log_metric("parent", float(i), step=i)
        parent_id = client.client_id
        [parent_folder] = client_folders(spool)
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: log through the inherited client, then leave
            code = 1
            try:
                os.close(read)
                for i in range(500):
                    run.log_metric("child", float(i), step=i)
                os.write(write, client.client_id.encode())
                code = 0 if client.close(30) else 2
            finally:
                os._exit(code)
        os.close(write)
        for i in range(1000, 2000):  # the parent keeps logging meanwhile
            run.log_metric("parent", float(i), step=i)
        child_id = os.read(read, 64).decode()
        os.close(read)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert child_id and child_id != parent_id
        # The child closed its inherited copy of our lock without releasing it.
        assert LockedFolder.try_lock(parent_folder) is None
        assert client.flush(30)
    finally:
        client.close(10)
    assert logged_points(evtrack_server.dsn, run.run_id)[0] == 2500
    assert len(history(url, run.run_id, "parent")) == 2000
    assert len(history(url, run.run_id, "child")) == 500


def _child(run: Run, n: int) -> None:
    for i in range(n):
        run.log_metric("worker", float(i), step=i)
    # No close(): a multiprocessing child ends with os._exit, skipping atexit; the client
    # registered a multiprocessing finalizer for that.


def test_multiprocessing_fork_children_deliver_at_exit(
    evtrack_server: EvtrackServer, spool: Path
) -> None:
    url = evtrack_server.url
    client = Client(url, spool_dir=spool)
    try:
        run = client.start_run(experiment_id=create_experiment(url))
        run.log_metric("parent", 1.0)
        ctx = multiprocessing.get_context("fork")
        workers = [ctx.Process(target=_child, args=(run, 300)) for _ in range(3)]
        for w in workers:
            w.start()
        for w in workers:
            w.join(60)
            assert w.exitcode == 0
        # Delivered by the children themselves (adoption would take a minute to kick in).
        wait_for(
            lambda: logged_points(evtrack_server.dsn, run.run_id)[0] >= 900,
            15,
            "the children's points",
        )
        assert client.flush(30)
    finally:
        client.close(10)
    assert logged_points(evtrack_server.dsn, run.run_id)[0] == 901
    assert client_folders(spool) == []

"""The server is SIGKILLed while clients write: nothing acknowledged is lost, nothing doubled.

Two kinds of writers, each killed under twice mid-stream:

* ``evtrack.client``: log calls spool locally; the sender posts ranges to the native ingest
  route under an ``Idempotency-Key`` naming the range and resends a range until it gets an
  answer. A request the dying server had committed but not answered is resent, and the
  restarted server answers it from its idempotency table.
* the official mlflow client's ``log_batch`` in loops, with its own retries on (connection
  errors and 5xx are retried by urllib3), and the loop resending a batch whose retries ran
  out. The key is derived from the request body, so a resent batch is applied once.

Points sent, acknowledged and stored are counted for each (see ``_tally``).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
import requests
from _support.server import EvtrackServer

from evtrack.client import Client

from ._tally import stored_points, tally

KILLS = 2


def _experiment(url: str) -> str:
    answer = requests.post(
        f"{url}/api/2.0/mlflow/experiments/create",
        json={"name": f"kill-{uuid.uuid4().hex[:12]}"},
        timeout=30,
    )
    answer.raise_for_status()
    return str(answer.json()["experiment_id"])


def _run(url: str, experiment_id: str) -> str:
    answer = requests.post(
        f"{url}/api/2.0/mlflow/runs/create", json={"experiment_id": experiment_id}, timeout=30
    )
    answer.raise_for_status()
    return str(answer.json()["run"]["info"]["run_id"])


def _kill_while(
    server: EvtrackServer, writing: Callable[[], bool], progress: Callable[[], int]
) -> list[int]:
    """SIGKILL the server ``KILLS`` times while ``writing()``, each time once ``progress()``
    has moved since the last restart (so requests are flowing); restart it after each kill.
    Returns the progress seen at each kill."""
    seen = []
    for _ in range(KILLS):
        before = progress()
        deadline = time.monotonic() + 30
        while progress() <= before:
            assert time.monotonic() < deadline, "no progress between kills"
            time.sleep(0.02)
        assert writing(), "the writers finished before the kill: make them write longer"
        time.sleep(0.15)  # inside a stream of requests, not at its first one
        seen.append(progress())
        server.kill()
        server.restart()
    return seen


def test_sigkill_during_native_client_ingest(evtrack_server: EvtrackServer, tmp_path: Path) -> None:
    server = evtrack_server
    experiment_id = _experiment(server.url)
    n = 240_000
    client = Client(
        server.url,
        spool_dir=tmp_path / "spool",
        batch_max_points=4000,
        batch_interval=0.02,
        retry_max_delay=0.2,
        request_timeout=10,
    )
    done = threading.Event()
    try:
        run = client.start_run(experiment_id=experiment_id)

        def log() -> None:
            # ~8 s of logging at a steady pace, so both kills land in the middle of it.
            for i in range(n):
                run.log_metric("loss", float(i), step=i)
                if i % 2000 == 1999:
                    time.sleep(0.065)
            done.set()

        writer = threading.Thread(target=log, daemon=True)
        writer.start()
        at_kill = _kill_while(
            server, lambda: not done.is_set(), lambda: client.stats().delivered_points
        )
        writer.join(60)
        assert client.flush(120), "not everything was acknowledged after the restarts"
        acknowledged = client.stats().delivered_points
    finally:
        client.close(10)
    assert all(0 < k < n for k in at_kill), at_kill
    tally(
        "server SIGKILL x2 during evtrack.client ingest",
        server.dsn,
        [run.run_id],
        sent=n,
        acknowledged=acknowledged,
    ).check()


def test_sigkill_during_retried_mlflow_log_batch_loops(
    evtrack_server: EvtrackServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    # The client's own retries on (the suite turns them off), backing off 0, 2, 4 s: a
    # restart is bridged by them, or else by the loop below.
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "3")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_JITTER", "0.2")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
    server = evtrack_server
    experiment_id = _experiment(server.url)
    writers, batches, size = 4, 60, 500
    run_ids = [_run(server.url, experiment_id) for _ in range(writers)]
    acknowledged = [0] * writers
    resent = [0] * writers
    finished = [False] * writers
    give_up = threading.Event()  # the test failed: writers must not retry for ever

    def loop(w: int) -> None:
        client = MlflowClient(server.url)
        for b in range(batches):
            metrics = [
                Metric("loss", float(b * size + i), 1_700_000_000_000 + b, b * size + i)
                for i in range(size)
            ]
            while not give_up.is_set():
                try:
                    client.log_batch(run_ids[w], metrics=metrics)
                except Exception:
                    resent[w] += 1  # the client's retries ran out: send the same batch again
                    time.sleep(0.5)
                    continue
                acknowledged[w] += size
                break
            time.sleep(0.02)
        finished[w] = True

    threads = [threading.Thread(target=loop, args=(w,), daemon=True) for w in range(writers)]
    for thread in threads:
        thread.start()
    try:
        at_kill = _kill_while(server, lambda: not all(finished), lambda: sum(acknowledged))
        for thread in threads:
            thread.join(120)
    finally:
        give_up.set()
    assert all(finished), "a writer did not finish"
    sent = writers * batches * size
    assert all(0 < k < sent for k in at_kill), at_kill
    print(f"batches resent after the client's own retries ran out: {sum(resent)}")
    tally(
        "server SIGKILL x2 during retried mlflow log_batch loops",
        server.dsn,
        run_ids,
        sent=sent,
        acknowledged=sum(acknowledged),
    ).check()
    # Each acknowledged batch is one event: a resent batch was answered from its key.
    assert stored_points(server.dsn, run_ids).events == writers * batches

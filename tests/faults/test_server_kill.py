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


def _kill_twice(server: EvtrackServer, progress: Callable[[], int], between: int) -> list[int]:
    """SIGKILL the server ``KILLS`` times, each time once ``progress()`` (acknowledged
    points) has moved ``between`` since the last restart, so requests are flowing; restart it
    after each kill. The writers go on all along. Returns the progress seen at each kill."""
    seen = []
    for _ in range(KILLS):
        before = progress()
        deadline = time.monotonic() + 60
        while progress() < before + between:
            assert time.monotonic() < deadline, "no progress between kills"
            time.sleep(0.02)
        time.sleep(0.15)  # inside a stream of requests, not at its first one
        seen.append(progress())
        server.kill()
        server.restart()
    # And once more after the last restart: the writers got through.
    before = progress()
    deadline = time.monotonic() + 60
    while progress() <= before:
        assert time.monotonic() < deadline, "no progress after the last restart"
        time.sleep(0.02)
    return seen


def test_sigkill_during_native_client_ingest(evtrack_server: EvtrackServer, tmp_path: Path) -> None:
    server = evtrack_server
    experiment_id = _experiment(server.url)
    client = Client(
        server.url,
        spool_dir=tmp_path / "spool",
        batch_max_points=4000,
        batch_interval=0.02,
        retry_max_delay=0.2,
        request_timeout=10,
    )
    stop = threading.Event()
    logged = [0]
    try:
        run = client.start_run(experiment_id=experiment_id)

        def log() -> None:
            # A steady stream (~30,000 points/s) until the kills are over.
            step = 0
            while not stop.is_set():
                for _ in range(2000):
                    run.log_metric("loss", float(step), step=step)
                    step += 1
                logged[0] = step
                time.sleep(0.065)

        writer = threading.Thread(target=log, daemon=True)
        writer.start()
        try:
            at_kill = _kill_twice(server, lambda: client.stats().delivered_points, 40_000)
        finally:
            stop.set()
            writer.join(30)
        assert client.flush(120), "not everything was acknowledged after the restarts"
        acknowledged = client.stats().delivered_points
    finally:
        client.close(10)
    sent = logged[0]
    assert all(0 < k < sent for k in at_kill), at_kill
    tally(
        "server SIGKILL x2 during evtrack.client ingest",
        server.dsn,
        [run.run_id],
        sent=sent,
        acknowledged=acknowledged,
    ).check()


def test_sigkill_during_retried_mlflow_log_batch_loops(
    evtrack_server: EvtrackServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    # The client's own retries on (the suite turns them off), backing off 0 then 2 s: a
    # restart is bridged by them, or else by the loop below.
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_JITTER", "0.2")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
    server = evtrack_server
    experiment_id = _experiment(server.url)
    writers, size = 4, 500
    run_ids = [_run(server.url, experiment_id) for _ in range(writers)]
    acknowledged = [0] * writers
    batches = [0] * writers
    resent = [0] * writers
    stop = threading.Event()  # the kills are over: finish the batch in hand
    give_up = threading.Event()  # the test failed: writers must not retry for ever

    def loop(w: int) -> None:
        client = MlflowClient(server.url)
        b = 0
        while not stop.is_set():
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
            b += 1
            batches[w] = b
            time.sleep(0.02)

    threads = [threading.Thread(target=loop, args=(w,), daemon=True) for w in range(writers)]
    for thread in threads:
        thread.start()
    try:
        at_kill = _kill_twice(server, lambda: sum(acknowledged), 20 * size)
        stop.set()
        for thread in threads:
            thread.join(120)
    finally:
        give_up.set()
    assert not any(thread.is_alive() for thread in threads), "a writer did not finish"
    sent = sum(batches) * size
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
    assert stored_points(server.dsn, run_ids).events == sum(batches)

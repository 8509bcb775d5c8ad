"""PostgreSQL goes away and comes back: answers are 503 with Retry-After meanwhile, never a
500, the log says so once, and the server recovers by itself with nothing acknowledged lost
(invariant 12)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests
from _support.postgres import private_embedded_postgres
from _support.server import EvtrackServer

from evtrack._embedded_postgres import EmbeddedPostgres, start_embedded_postgres


@pytest.fixture
def private_postgres() -> Iterator[tuple[Path, list[EmbeddedPostgres]]]:
    """A PostgreSQL of this test's own, which it may stop and start (the shared one, never)."""
    with private_embedded_postgres() as found:
        yield found


def _log_metric(base: str, run_id: str, step: int) -> requests.Response:
    return requests.post(
        f"{base}/runs/log-metric",
        json={"run_id": run_id, "key": "loss", "value": float(step), "timestamp": 1, "step": step},
        timeout=10,
    )


def test_a_database_restart_is_a_503_then_recovers_with_nothing_lost(
    private_postgres: tuple[Path, list[EmbeddedPostgres]],
    evtrack_server_factory: Callable[..., EvtrackServer],
) -> None:
    data_dir, handles = private_postgres
    server = evtrack_server_factory(dsn=handles[0].dsn)
    base = server.url + "/api/2.0/mlflow"
    exp = requests.post(f"{base}/experiments/create", json={"name": "outage"}).json()
    run = requests.post(f"{base}/runs/create", json={"experiment_id": exp["experiment_id"]})
    run_id = run.json()["run"]["info"]["run_id"]
    acknowledged = []
    for step in range(3):
        _log_metric(base, run_id, step).raise_for_status()
        acknowledged.append(step)

    handles[0].stop()  # the database goes away
    answers = [_log_metric(base, run_id, 100 + i) for i in range(5)]
    answers += [requests.get(f"{base}/runs/get", params={"run_id": run_id}, timeout=10)]
    for answer in answers:
        assert answer.status_code == 503, answer.text
        assert answer.headers["Retry-After"] == "1"
        assert answer.json()["error_code"] == "TEMPORARILY_UNAVAILABLE"

    handles.append(start_embedded_postgres(data_dir))  # and comes back
    deadline = time.monotonic() + 30
    step = 3
    while True:
        answer = _log_metric(base, run_id, step)
        if answer.status_code == 200:
            acknowledged.append(step)
            break
        assert answer.status_code == 503, answer.text
        assert time.monotonic() < deadline, "the server did not recover by itself"
        time.sleep(0.2)

    history = requests.get(
        f"{base}/metrics/get-history", params={"run_id": run_id, "metric_key": "loss"}, timeout=15
    )
    assert history.status_code == 200, history.text
    assert sorted(m["step"] for m in history.json()["metrics"]) == acknowledged

    log = server.stderr_path.read_text() + server.stdout_path.read_text()
    assert log.count('"database.unavailable"') == 1, log[-3000:]
    assert log.count('"database.recovered"') == 1, log[-3000:]
    assert '"request.failed"' not in log and "Traceback" not in log.split("database.unavailable")[1]

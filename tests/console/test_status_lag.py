"""The status page when a projector stops: its read models fall behind, then show as lagging
(and the node as not ready), live; when a projector runs again, they catch up on the page."""

from __future__ import annotations

import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
import requests
from _support.server import EvtrackServer

from .conftest import Browsing

STALL_AFTER_S = 1


def _worker(dsn: str, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "evtrack", "projections", "run", "--database-url", dsn],
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def _stop(worker: subprocess.Popen[bytes]) -> None:
    if worker.poll() is None:
        worker.send_signal(signal.SIGTERM)
        worker.wait(20)


@pytest.fixture
def projected(
    evtrack_server_factory: Any, fresh_database_dsn: str, tmp_path: Path
) -> Iterator[tuple[EvtrackServer, list[subprocess.Popen[bytes]]]]:
    """A server whose read models are kept by a separate ``evtrack projections run``."""
    server = evtrack_server_factory(
        extra_args=("--no-projectors", "--ready-stall-after", str(STALL_AFTER_S))
    )
    workers = [_worker(fresh_database_dsn, tmp_path / "worker.log")]
    try:
        yield server, workers
    finally:
        for worker in workers:
            _stop(worker)


def _ingest(server: EvtrackServer, run_id: str, start: bool) -> None:
    record: dict[str, Any] = {
        "run_id": run_id,
        "metrics": {"keys": ["loss"], "values": [0.5], "timestamps": [1], "steps": [0]},
    }
    if start:
        record["start"] = {"experiment_name": "lag", "run_name": "r"}
    response = requests.post(
        f"{server.url}/api/2.0/evtrack/ingest",
        data=msgspec.msgpack.encode([record]),
        headers={"Content-Type": "application/msgpack"},
        timeout=30,
    )
    assert response.status_code == 200, response.text


def _states(browsing: Browsing, watched: Any) -> dict[str, str]:
    found: dict[str, str] = watched.page.locator("#read-models tr[data-read-model]").evaluate_all(
        "rows => Object.fromEntries(rows.map(r => [r.dataset.readModel, r.dataset.state]))"
    )
    return found


def test_a_stopped_projector_shows_as_lagging(
    projected: tuple[EvtrackServer, list[subprocess.Popen[bytes]]],
    fresh_database_dsn: str,
    browser: Any,
    screenshots: Path,
    tmp_path: Path,
) -> None:
    server, workers = projected
    browsing = Browsing(browser, server, screenshots)
    try:
        run_id = uuid.uuid4().hex
        _ingest(server, run_id, start=True)
        watched = browsing.page(None)
        watched.goto("/console/status")
        page = watched.page
        page.wait_for_function(
            """() => [...document.querySelectorAll('#read-models tr[data-read-model]')]
                     .every(r => r.dataset.state === 'ok')"""
        )

        _stop(workers[0])  # the only projector
        _ingest(server, run_id, start=False)
        page.wait_for_selector('#read-models tr[data-read-model="metrics"][data-state="lagging"]')
        states = _states(browsing, watched)
        assert states["metrics"] == "lagging" and states["runs"] == "lagging", states
        assert page.locator("#ready").inner_text().startswith("Not ready")
        behind = page.locator('tr[data-read-model="metrics"] td').first.inner_text()
        assert int(behind) >= 1
        browsing.shot(watched, "status-lagging")

        workers.append(_worker(fresh_database_dsn, tmp_path / "worker.log"))
        page.wait_for_function(
            """() => [...document.querySelectorAll('#read-models tr[data-read-model]')]
                     .every(r => r.dataset.state === 'ok')""",
            timeout=30_000,
        )
        assert page.locator("#ready").inner_text() == "Ready"
        watched.check()
    finally:
        browsing.close()

"""Against a running server: an unappliable event in the log does not stop reads.

Two poisons: a RunDataLogged injected straight into the log whose metric timestamp is 2**63
(no int64 column holds it: it stays parked), and a tag value that a read-model constraint
refuses (the "fix" drops the constraint, and retry-parked applies it).
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import msgspec
import requests
from _support.server import EvtrackServer


def _cli(dsn: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "evtrack", "projections", *args, "--database-url", dsn],
        capture_output=True,
        text=True,
        timeout=60,
    )


def _parked_column(status_output: str) -> dict[str, int]:
    """projection -> the 'parked' column of `evtrack projections status`."""
    lines = status_output.splitlines()
    header = lines[0].split()
    column = header.index("parked")
    counts = {}
    for line in lines[1:]:
        if not line.strip():
            break
        cells = line.split()
        counts[cells[0]] = int(cells[column])
    return counts


def _post(base: str, route: str, body: dict[str, Any]) -> dict[str, Any]:
    answer = requests.post(f"{base}/{route}", json=body, timeout=30)
    assert answer.status_code == 200, answer.text
    result: dict[str, Any] = answer.json()
    return result


def _timed_get(base: str, route: str, **params: str) -> tuple[float, dict[str, Any]]:
    started = time.monotonic()
    answer = requests.get(
        f"{base}/{route}", params=params, headers={"X-Request-Id": "fresh"}, timeout=30
    )
    assert answer.status_code == 200, answer.text
    return time.monotonic() - started, answer.json()


def _tags(run: dict[str, Any]) -> dict[str, str]:
    return {t["key"]: t["value"] for t in run["run"]["data"].get("tags", [])}


async def test_an_unappliable_event_is_parked_reads_stay_fresh_and_retry_applies_it(
    evtrack_server: EvtrackServer, tmp_path: Path
) -> None:
    # Blocking HTTP and CLI calls are fine here: the server is another process.
    base = f"{evtrack_server.url}/api/2.0/mlflow"
    dsn = evtrack_server.dsn
    exp = _post(base, "experiments/create", {"name": f"parking-{uuid.uuid4().hex}"})
    poisoned, healthy = (
        _post(base, "runs/create", {"experiment_id": exp["experiment_id"]})["run"]["info"]["run_id"]
        for _ in range(2)
    )
    _timed_get(base, "runs/get", run_id=poisoned)  # the read models are installed

    db = await asyncpg.connect(dsn)
    try:
        # A read model that cannot hold one value (think: a constraint added by a bug).
        await db.execute(
            "ALTER TABLE rm_runs.tags ADD CONSTRAINT test_refuses CHECK (value <> 'x')"
        )
        payload = msgspec.msgpack.encode(
            {
                "type": "RunDataLogged",
                "run_id": poisoned,
                "metrics": {"keys": ["m"], "values": [1.0], "timestamps": [2**63], "steps": [0]},
            }
        )
        await db.execute(
            """INSERT INTO events (stream_id, stream_position, event_type, schema_version,
                                   payload, actor, metadata)
               VALUES ('injected-1', 1, 'RunDataLogged', 1, $1, 'intruder', '{}')""",
            payload,
        )
    finally:
        await db.close()
    _post(base, "runs/set-tag", {"run_id": poisoned, "key": "refused", "value": "x"})

    # (a) Other runs stay fresh: each write is read back at once, well under the 10 s bound.
    for i in range(5):
        _post(
            base,
            "runs/log-metric",
            {"run_id": healthy, "key": "loss", "value": float(i), "timestamp": 1000 + i, "step": i},
        )
        elapsed, history = _timed_get(
            base, "metrics/get-history", run_id=healthy, metric_key="loss"
        )
        assert len(history["metrics"]) == i + 1
        assert elapsed < 2.0, elapsed
        elapsed, run = _timed_get(base, "runs/get", run_id=healthy)
        assert run["run"]["data"]["metrics"][0]["value"] == float(i)
        assert elapsed < 2.0, elapsed
    elapsed, run = _timed_get(base, "runs/get", run_id=poisoned)
    assert elapsed < 2.0 and "refused" not in _tags(run)

    # (b) Status reports them: runs parked both; metrics and logged_models the overflowing
    # point, which the event type's own constraints no longer let them decode.
    status = _cli(dsn, "status", "--parked")
    assert status.returncode == 0, status.stderr
    counts = _parked_column(status.stdout)
    assert counts["runs"] == 2, status.stdout
    assert counts["metrics"] == 1, status.stdout
    assert counts["logged_models"] == 1, status.stdout
    assert counts["experiments"] == 0, status.stdout
    assert "parked events: 4" in status.stdout
    assert "CheckViolationError" in status.stdout
    assert "injected-1" in status.stdout
    # Logged once per parked event, not in a loop.
    time.sleep(1.0)
    log = evtrack_server.stderr_path.read_text() + evtrack_server.stdout_path.read_text()
    assert len(re.findall(r"projector\.event_parked", log)) == 4, log[-3000:]

    # (c) The fix, then the retry: the tag applies and leaves the parked table; the int64
    # overflow cannot, and stays with its attempts counted.
    db = await asyncpg.connect(dsn)
    try:
        await db.execute("ALTER TABLE rm_runs.tags DROP CONSTRAINT test_refuses")
    finally:
        await db.close()
    retried = _cli(dsn, "retry-parked", "runs")
    assert retried.returncode == 1, retried.stdout + retried.stderr  # one still parked
    assert "runs: applied 1, still parked 1" in retried.stdout
    _, run = _timed_get(base, "runs/get", run_id=poisoned)
    assert _tags(run)["refused"] == "x"
    status = _cli(dsn, "status", "--parked")
    assert _parked_column(status.stdout)["runs"] == 1
    assert "CheckViolationError" not in status.stdout
    runs_line = next(
        line
        for line in status.stdout.splitlines()
        if line.startswith("runs ") and "position" in line
    )
    assert "attempts 2" in runs_line, status.stdout
    # The server went on all along.
    _post(base, "runs/set-tag", {"run_id": healthy, "key": "after", "value": "retry"})
    elapsed, run = _timed_get(base, "runs/get", run_id=healthy)
    assert _tags(run)["after"] == "retry" and elapsed < 2.0

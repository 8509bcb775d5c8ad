"""Helpers for the client tests: ground truth is read from the server's event log.

Counting points in ``RunDataLogged`` events (not in the points read model, which stores
identical points once) is what proves "no duplicates": a batch applied twice would show up
as twice the points in the log even if the read model hid it.
"""

from __future__ import annotations

import math
import os
import struct
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import asyncpg
import numpy as np
import pytest
import requests
from _support.aio import run_sync

from evtrack.client import Run
from evtrack.events import RunDataLogged, decode_event
from evtrack.wire.ingest import IngestPackedMetrics

REPO = Path(__file__).resolve().parents[2]


def logged_points(dsn: str, run_id: str) -> tuple[int, int]:
    """(metric points, RunDataLogged events) the log holds for ``run_id``."""

    async def query() -> tuple[int, int]:
        conn = await asyncpg.connect(dsn)
        try:
            rows = await conn.fetch(
                """SELECT event_type, schema_version, payload FROM events
                   WHERE stream_id = $1 AND event_type = 'RunDataLogged'""",
                f"run-{run_id}",
            )
        finally:
            await conn.close()
        points = 0
        for row in rows:
            event = decode_event(row["event_type"], row["schema_version"], row["payload"])
            assert isinstance(event, RunDataLogged)
            if event.metrics is not None:
                points += len(event.metrics.keys)
            if event.packed_metrics is not None:
                points += len(event.packed_metrics)
        return points, len(rows)

    return run_sync(query)


class Point(NamedTuple):
    key: str
    value: float
    timestamp: int
    step: int


def packed_points(packed: IngestPackedMetrics) -> list[Point]:
    """The points of a packed record, checking that its arrays agree in length."""
    index = np.frombuffer(packed.key_index, dtype="<u4").tolist()
    values = np.frombuffer(packed.values, dtype="<f8").tolist()
    timestamps = np.frombuffer(packed.timestamps, dtype="<i8").tolist()
    steps = np.frombuffer(packed.steps, dtype="<i8").tolist()
    assert len(index) == len(values) == len(timestamps) == len(steps)
    return [
        Point(packed.names[i], v, t, s)
        for i, v, t, s in zip(index, values, timestamps, steps, strict=True)
    ]


SPECIAL_VALUES = (math.nan, math.inf, -math.inf, -0.0, 5e-324, 1.7976931348623157e308)


def log_mixed(runs: list[Run], steps: int, long_runs: int = 6000) -> dict[str, list[Point]]:
    """Log a spool that exercises every way points are framed, and return each run's points
    in logging order. First the runs take turns, step by step, with single points (``m``
    frames; three keys), ``log_metrics`` of four keys and of two keys (``M`` frames of two
    shapes; one key shared with the single points) and of one key (also an ``m`` frame), values
    including NaN, infinities, -0.0 and subnormals. Then one run logs ``long_runs`` single
    points in a row and the next ``long_runs // 3`` three-key calls (pieces longer than a
    decoding piece). Every (key, step) of a run is logged once, so the read model, which
    keeps identical points once, must hold all of them."""
    expected: dict[str, list[Point]] = {run.run_id: [] for run in runs}

    def log(run: Run, metrics: dict[str, float], step: int, ts: int, single: bool = False) -> None:
        if single:
            [(key, value)] = metrics.items()
            run.log_metric(key, value, step=step, timestamp=ts)
        else:
            run.log_metrics(metrics, step=step, timestamp=ts)
        expected[run.run_id].extend(Point(k, v, ts, step) for k, v in metrics.items())

    for step in range(steps):
        for j, run in enumerate(runs):
            ts = 1_700_000_000_000 + 7 * step + j
            special = SPECIAL_VALUES[(step // 4) % len(SPECIAL_VALUES)]
            shape = (step + j) % 4
            if shape == 0:
                value = special if step % 3 == 0 else step / 3 + j
                log(run, {f"k{step % 3}": value}, step, ts, single=True)
            elif shape == 1:
                log(run, {f"g{i}": step * 10.0 + i + j for i in range(4)}, step, ts)
            elif shape == 2:
                log(run, {"k0": -float(step), "h": special}, step, ts)
            else:
                log(run, {"solo": float(step)}, step, ts)
    first, second = runs[0], runs[1 % len(runs)]
    for i in range(long_runs):
        step = steps + i
        log(first, {"long": i * 0.25}, step, 1_800_000_000_000 + i, single=True)
    for i in range(long_runs // 3):
        step = steps + long_runs + i
        metrics = {"x": float(i), "y": -float(i), "z": SPECIAL_VALUES[i % 6]}
        log(second, metrics, step, 1_800_000_000_000 + i)
    return expected


def value_bits(points: list[Point]) -> list[tuple[str, bytes, int, int]]:
    """Points with values as their IEEE bits: NaN equals NaN, -0.0 differs from 0.0."""
    return [(p.key, struct.pack("<d", p.value), p.timestamp, p.step) for p in points]


def history(url: str, run_id: str, key: str) -> list[dict[str, Any]]:
    response = requests.get(
        f"{url}/api/2.0/mlflow/metrics/get-history",
        params={"run_id": run_id, "metric_key": key, "max_results": "1000000"},
        timeout=60,
    )
    response.raise_for_status()
    return list(response.json().get("metrics", []))


def get_run(url: str, run_id: str) -> dict[str, Any]:
    response = requests.get(f"{url}/api/2.0/mlflow/runs/get", params={"run_id": run_id}, timeout=60)
    response.raise_for_status()
    run: dict[str, Any] = response.json()["run"]
    return run


def create_experiment(url: str) -> str:
    """A fresh experiment, created over the MLflow API (see test_start_creates_experiment
    for why the client's get-or-create by name is not used here)."""
    response = requests.post(
        f"{url}/api/2.0/mlflow/experiments/create",
        json={"name": f"client-{uuid.uuid4().hex[:12]}"},
        timeout=30,
    )
    response.raise_for_status()
    return str(response.json()["experiment_id"])


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.1)


def python_script(body: str) -> list[str]:
    return [sys.executable, "-c", textwrap.dedent(body)]


def child_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def evtrack_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "evtrack", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=child_env(),
    )

"""The soak's load: paced threads that drive one evtrack server the way users do, a recorder
of every operation's latency and error, and samplers of the server's memory and CPU.

Used by ``soak.py`` (see there for what is measured and why the load runs at fixed rates).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import math
import os
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import requests

# --------------------------------------------------------------------------- recording


@dataclass
class Recorder:
    """Every operation's (time since start, name, seconds, error or None); thread-safe."""

    t0: float
    ops: list[tuple[float, str, float]] = field(default_factory=list)
    errors: list[tuple[float, str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def timed(self, name: str, call: Callable[[], Any]) -> Any:
        started = time.monotonic()
        try:
            result = call()
        except Exception as exc:
            self.error(name, f"{type(exc).__name__}: {exc}")
            return None
        finished = time.monotonic()
        with self.lock:
            self.ops.append((started - self.t0, name, finished - started))
        return result

    def error(self, name: str, message: str) -> None:
        with self.lock:
            self.errors.append((time.monotonic() - self.t0, name, message[:500]))


def ok(answer: requests.Response) -> requests.Response:
    if answer.status_code != 200:
        raise RuntimeError(f"HTTP {answer.status_code}: {answer.text[:300]}")
    return answer


class Paced(threading.Thread):
    """Calls ``step()`` every ``interval`` seconds (not faster; late steps are not made up)
    until ``stop`` is set."""

    def __init__(self, name: str, interval: float, stop: threading.Event) -> None:
        super().__init__(daemon=True, name=name)
        self.interval = interval
        self.stop = stop
        self.crashed: BaseException | None = None

    def step(self) -> None:
        raise NotImplementedError

    def run(self) -> None:
        due = time.monotonic()
        try:
            while not self.stop.is_set():
                self.step()
                due = max(due + self.interval, time.monotonic())
                self.stop.wait(max(0.0, due - time.monotonic()))
        except BaseException as exc:  # a bug in the load itself: reported as an error
            self.crashed = exc


# --------------------------------------------------------------------------- the load


class NativeIngest(Paced):
    def __init__(
        self,
        url: str,
        experiment_id: str,
        rec: Recorder,
        stop: threading.Event,
        spool: Path,
        rate: float,
    ) -> None:
        super().__init__("native", 0.1, stop)
        from evtrack.client import Client

        self.rec = rec
        self.client = Client(url, spool_dir=spool, batch_interval=0.2, retry_max_delay=1.0)
        self.runs = [
            self.client.start_run(experiment_id=experiment_id, run_name=f"native-{i}")
            for i in range(4)
        ]
        self.per_step = max(4, int(rate * self.interval))
        self.step_no = 0
        self.sent = 0
        self.last_flush = time.monotonic()

    def step(self) -> None:
        for i in range(self.per_step):
            run = self.runs[i % len(self.runs)]
            run.log_metric("loss", 1.0 / (1 + self.step_no), step=self.step_no)
            self.step_no += 1
        self.sent += self.per_step
        if time.monotonic() - self.last_flush >= 2.0:
            self.last_flush = time.monotonic()
            flushed = self.rec.timed("native_flush", lambda: self.client.flush(30))
            if flushed is False:
                self.rec.error("native_flush", "not acknowledged within 30 s")

    def finish(self) -> dict[str, int]:
        if not self.client.flush(60):
            self.rec.error("native_flush", "final flush not acknowledged within 60 s")
        stats = self.client.stats()
        self.client.close(10)
        if stats.dropped or stats.rejected_points:
            self.rec.error("native", f"dropped {stats.dropped}, rejected {stats.rejected_points}")
        return {"sent": self.sent, "acknowledged": stats.delivered_points}

    @property
    def run_ids(self) -> list[str]:
        return [run.run_id for run in self.runs]


class LogBatch(Paced):
    def __init__(
        self,
        n: int,
        url: str,
        experiment_id: str,
        rec: Recorder,
        stop: threading.Event,
        interval: float,
    ) -> None:
        super().__init__(f"log_batch-{n}", interval, stop)
        from mlflow import MlflowClient

        self.rec = rec
        self.client = MlflowClient(url)
        self.run_ids = [
            self.client.create_run(experiment_id, run_name=f"batch-{n}-{i}").info.run_id
            for i in range(2)
        ]
        self.i = 0
        self.sent = 0
        self.acknowledged = 0

    def step(self) -> None:
        from mlflow.entities import Metric, Param, RunTag

        run_id = self.run_ids[self.i % 2]
        first = (self.i // 2) * 50
        now = int(time.time() * 1000)
        metrics = [
            Metric(key, float(s % 97) / (1 + k), now, s)
            for s in range(first, first + 50)
            for k, key in enumerate(("loss", "acc"))
        ]
        # A tag now and then: a batch with tags gets no derived idempotency key (tags are
        # upserts), so most batches carry none, as a training loop's metric batches do.
        tags = [RunTag("phase", str(self.i % 5))] if self.i % 10 == 0 else []
        self.i += 1
        self.sent += len(metrics)
        done = self.rec.timed(
            "log_batch",
            lambda: (
                self.client.log_batch(
                    run_id,
                    metrics=metrics,
                    params=[Param("lr", "0.01")],  # the same value each time: allowed, bounded
                    tags=tags,
                )
                or True
            ),
        )
        if done:
            self.acknowledged += len(metrics)


class Search(Paced):
    def __init__(
        self,
        url: str,
        experiment_id: str,
        run_ids: list[str],
        rec: Recorder,
        stop: threading.Event,
        interval: float,
    ) -> None:
        super().__init__("search", interval, stop)
        from mlflow import MlflowClient

        self.url = url
        self.rec = rec
        self.client = MlflowClient(url)
        self.experiment_id = experiment_id
        self.run_ids = run_ids
        self.session = requests.Session()
        self.i = 0

    def step(self) -> None:
        run_id = self.run_ids[self.i % len(self.run_ids)]
        kind = self.i % 3
        self.i += 1
        if kind == 0:
            self.rec.timed(
                "search_runs",
                lambda: self.client.search_runs(
                    [self.experiment_id],
                    filter_string="metrics.loss >= 0 and params.lr = '0.01'",
                    order_by=["metrics.loss DESC"],
                    max_results=20,
                ),
            )
        elif kind == 1:
            self.rec.timed("get_run", lambda: self.client.get_run(run_id))
        else:
            self.rec.timed(
                "history_page",
                lambda: ok(
                    self.session.get(
                        f"{self.url}/api/2.0/mlflow/metrics/get-history",
                        params={"run_id": run_id, "metric_key": "loss", "max_results": 100},
                        timeout=60,
                    )
                ),
            )


class Registry(Paced):
    KEEP = 10

    def __init__(
        self, url: str, run_id: str, rec: Recorder, stop: threading.Event, interval: float
    ) -> None:
        super().__init__("registry", interval, stop)
        from mlflow import MlflowClient

        self.rec = rec
        self.client = MlflowClient(url)
        self.run_id = run_id
        self.name = f"soak-{uuid.uuid4().hex[:8]}"
        self.client.create_registered_model(self.name)
        self.live: list[str] = []
        self.i = 0

    def step(self) -> None:
        c, name = self.client, self.name
        created = self.rec.timed(
            "create_version",
            lambda: c.create_model_version(name, f"runs:/{self.run_id}/model", self.run_id),
        )
        if created is None:
            return
        version = str(created.version)
        self.live.append(version)
        stage = ("Staging", "Production")[self.i % 2]
        self.i += 1
        self.rec.timed(
            "transition",
            lambda: c.transition_model_version_stage(name, version, stage, True),
        )
        self.rec.timed("set_alias", lambda: c.set_registered_model_alias(name, "live", version))
        got = self.rec.timed("get_by_alias", lambda: c.get_model_version_by_alias(name, "live"))
        if got is not None and str(got.version) != version:
            self.rec.error("get_by_alias", f"alias points at {got.version}, set to {version}")
        self.rec.timed("search_versions", lambda: c.search_model_versions(f"name='{name}'"))
        while len(self.live) > self.KEEP:
            old = self.live.pop(0)
            self.rec.timed("delete_version", lambda old=old: c.delete_model_version(name, old))


class Artifacts(Paced):
    SIZE = 256 * 1024

    def __init__(
        self,
        url: str,
        experiment_id: str,
        run_id: str,
        rec: Recorder,
        stop: threading.Event,
        interval: float,
    ) -> None:
        super().__init__("artifacts", interval, stop)
        self.base = (
            f"{url}/api/2.0/mlflow-artifacts/artifacts/{experiment_id}/{run_id}/artifacts/soak"
        )
        self.rec = rec
        self.session = requests.Session()
        self.i = 0

    def step(self) -> None:
        data = os.urandom(self.SIZE)
        url = f"{self.base}/blob-{self.i % 4}.bin"
        self.i += 1
        if self.rec.timed("upload", lambda: ok(self.session.put(url, data=data, timeout=60))):
            got = self.rec.timed("download", lambda: ok(self.session.get(url, timeout=60)))
            if (
                got is not None
                and hashlib.sha256(got.content).digest() != hashlib.sha256(data).digest()
            ):
                self.rec.error("download", "downloaded bytes differ from the upload")
            self.rec.timed("delete", lambda: ok(self.session.delete(url, timeout=60)))


class Control(Paced):
    """The machine's own noise, measured beside the load: ``GET /health`` (the server's
    event loop, no database) and ``SELECT 1`` on a connection of its own (PostgreSQL and the
    scheduler). Shown in the table, left out of "all requests": when these slow down as much
    as the real operations, the neighbours did, not evtrack."""

    def __init__(self, url: str, db_url: str, rec: Recorder, stop: threading.Event) -> None:
        super().__init__("control", 0.25, stop)
        self.url, self.db_url, self.rec = url, db_url, rec
        self.session = requests.Session()
        self.loop = asyncio.new_event_loop()
        self.conn: Any = self.loop.run_until_complete(asyncpg.connect(db_url))

    def step(self) -> None:
        self.rec.timed(
            "control_health", lambda: ok(self.session.get(f"{self.url}/health", timeout=30))
        )
        self.rec.timed(
            "control_select_1", lambda: self.loop.run_until_complete(self.conn.fetchval("SELECT 1"))
        )

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.loop.run_until_complete(self.conn.close())
        self.loop.close()


class Sampler(threading.Thread):
    """Every second: the server's RSS, its CPU seconds so far, and the machine's busy and
    total CPU time (so a slower last window can be told apart from busier neighbours)."""

    TICK = os.sysconf("SC_CLK_TCK")

    def __init__(self, pid: int, t0: float, stop: threading.Event) -> None:
        super().__init__(daemon=True, name="sampler")
        self.pid, self.t0, self.stop = pid, t0, stop
        self.samples: list[tuple[float, int]] = []  # (t, rss bytes)
        self.cpu: list[tuple[float, float, float, float]] = []  # (t, server, busy, total) s

    def _machine(self) -> tuple[float, float]:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
        idle = fields[3] + fields[4]  # idle + iowait
        return (sum(fields) - idle) / self.TICK, sum(fields) / self.TICK

    def run(self) -> None:
        while not self.stop.is_set():
            with contextlib.suppress(OSError, ValueError, IndexError):
                now = time.monotonic() - self.t0
                for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        self.samples.append((now, int(line.split()[1]) * 1024))
                stat = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
                server = (int(stat[11]) + int(stat[12])) / self.TICK  # utime + stime
                self.cpu.append((now, server, *self._machine()))
            self.stop.wait(1.0)

    def usage(self, start: float, end: float) -> dict[str, float]:
        """Server CPU (% of one core) and machine CPU (% busy) between two times."""
        inside = [c for c in self.cpu if start <= c[0] <= end]
        if len(inside) < 2:
            return {"server_cpu_pct": math.nan, "machine_busy_pct": math.nan}
        (t0, s0, b0, a0), (t1, s1, b1, a1) = inside[0], inside[-1]
        return {
            "server_cpu_pct": 100 * (s1 - s0) / (t1 - t0),
            "machine_busy_pct": 100 * (b1 - b0) / max(1e-9, a1 - a0),
        }

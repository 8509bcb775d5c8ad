"""Writers and readers that keep a server busy while a test breaks something, and remember
every answer they got.

Writers send batches of metric points with unique steps (so stored points can be checked for
duplicates) and resend a batch until it is acknowledged, honouring ``Retry-After``; they send
no ``Idempotency-Key``, so a resent batch is recognised by the key the server derives from
its body. Every status is recorded, so a test can assert that a fault produced only the
answers it should (503 with ``Retry-After`` during a database outage, never a 500).
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec
import requests

RETRYABLE = {409, 429, 503}


@dataclass
class Answers:
    """Every answer the load got, by (what, status); thread-safe."""

    counts: collections.Counter[tuple[str, int]] = field(default_factory=collections.Counter)
    unexpected: list[str] = field(default_factory=list)  # bodies of answers no test wants
    without_retry_after: int = 0  # 503/429 answers lacking Retry-After
    connection_errors: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, what: str, answer: requests.Response) -> None:
        with self.lock:
            self.counts[(what, answer.status_code)] += 1
            if answer.status_code in (429, 503) and "Retry-After" not in answer.headers:
                self.without_retry_after += 1
            if answer.status_code >= 500 and answer.status_code != 503:
                self.unexpected.append(f"{what} {answer.status_code}: {answer.text[:300]}")

    def failed(self, what: str, exc: Exception) -> None:
        with self.lock:
            self.connection_errors += 1
            self.unexpected.append(f"{what}: {type(exc).__name__}: {exc}"[:300])

    def statuses(self) -> set[int]:
        with self.lock:
            return {status for _, status in self.counts}

    def count(self, status: int) -> int:
        with self.lock:
            return sum(n for (_, s), n in self.counts.items() if s == status)

    def summary(self) -> str:
        with self.lock:
            return ", ".join(f"{w} {s}: {n}" for (w, s), n in sorted(self.counts.items()))


def _wait_retry_after(answer: requests.Response, cap: float = 1.0) -> None:
    try:
        delay = float(answer.headers.get("Retry-After", "0.2"))
    except ValueError:
        delay = 0.2
    time.sleep(min(max(delay, 0.05), cap))


class BatchWriter(threading.Thread):
    """Logs batches of ``size`` points to ``run_id`` until stopped, each acknowledged.

    ``kind`` is ``log_batch`` (the MLflow route, JSON) or ``ingest`` (the native route,
    MessagePack). With several ``urls`` (API nodes) the batches go to each in turn.
    """

    def __init__(
        self,
        urls: Sequence[str],
        run_id: str,
        answers: Answers,
        *,
        kind: str = "log_batch",
        size: int = 200,
        key: str = "loss",
        first_step: int = 0,
        pause: float = 0.01,
        max_batches: int | None = None,
    ) -> None:
        super().__init__(daemon=True, name=f"{kind}-{run_id[:8]}")
        self.urls = list(urls)
        self.run_id = run_id
        self.answers = answers
        self.kind = kind
        self.size = size
        self.key = key
        self.step = first_step
        self.pause = pause
        self.max_batches = max_batches
        self.sent = 0  # points in batches sent at least once
        self.acknowledged = 0  # points in batches answered 200
        self.stop = threading.Event()  # finish the batch in hand, then return
        self.give_up = threading.Event()  # the test failed: return now
        self.session = requests.Session()

    def _body(self, steps: range) -> tuple[bytes, str]:
        if self.kind == "ingest":
            record: dict[str, Any] = {
                "run_id": self.run_id,
                "metrics": {
                    "keys": [self.key] * len(steps),
                    "values": [float(s) for s in steps],
                    "timestamps": [1_700_000_000_000 + s for s in steps],
                    "steps": list(steps),
                },
            }
            return msgspec.msgpack.encode([record]), "application/msgpack"
        metrics = [
            {"key": self.key, "value": float(s), "timestamp": 1_700_000_000_000 + s, "step": s}
            for s in steps
        ]
        return msgspec.json.encode({"run_id": self.run_id, "metrics": metrics}), "application/json"

    def _path(self) -> str:
        if self.kind == "ingest":
            return "/api/2.0/evtrack/ingest"
        return "/api/2.0/mlflow/runs/log-batch"

    def run(self) -> None:
        batches = 0
        while not self.stop.is_set() and not self.give_up.is_set():
            if self.max_batches is not None and batches >= self.max_batches:
                return
            steps = range(self.step, self.step + self.size)
            body, content_type = self._body(steps)
            self.sent += self.size
            url = self.urls[batches % len(self.urls)] + self._path()
            while not self.give_up.is_set():
                try:
                    answer = self.session.post(
                        url, data=body, headers={"Content-Type": content_type}, timeout=30
                    )
                except requests.RequestException as exc:
                    self.answers.failed(self.kind, exc)
                    time.sleep(0.2)
                    continue
                self.answers.record(self.kind, answer)
                if answer.status_code == 200:
                    self.acknowledged += self.size
                    break
                if answer.status_code in RETRYABLE:
                    _wait_retry_after(answer)
                    continue
                time.sleep(0.2)  # unexpected: recorded above; resend the same batch
            self.step += self.size
            batches += 1
            time.sleep(self.pause)


class Reader(threading.Thread):
    """Reads a run the MLflow way in a loop (get, history page, search) until stopped."""

    def __init__(
        self, urls: Sequence[str], run_id: str, experiment_id: str, answers: Answers
    ) -> None:
        super().__init__(daemon=True, name=f"reader-{run_id[:8]}")
        self.urls = list(urls)
        self.run_id = run_id
        self.experiment_id = experiment_id
        self.answers = answers
        self.stop = threading.Event()
        self.session = requests.Session()
        self.reads = 0

    def run(self) -> None:
        i = 0
        while not self.stop.is_set():
            base = self.urls[i % len(self.urls)] + "/api/2.0/mlflow"
            i += 1
            calls = (
                ("get", "GET", f"{base}/runs/get", {"params": {"run_id": self.run_id}}),
                (
                    "history",
                    "GET",
                    f"{base}/metrics/get-history",
                    {"params": {"run_id": self.run_id, "metric_key": "loss", "max_results": 100}},
                ),
                (
                    "search",
                    "POST",
                    f"{base}/runs/search",
                    {"json": {"experiment_ids": [self.experiment_id], "max_results": 10}},
                ),
            )
            for what, method, url, kwargs in calls:
                try:
                    answer = self.session.request(method, url, timeout=30, **kwargs)
                except requests.RequestException as exc:
                    self.answers.failed(what, exc)
                    time.sleep(0.2)
                    continue
                self.answers.record(what, answer)
                self.reads += 1
                if answer.status_code in (429, 503):
                    _wait_retry_after(answer, cap=0.3)
            time.sleep(0.01)


def create_experiment(url: str, name: str) -> str:
    answer = requests.post(
        f"{url}/api/2.0/mlflow/experiments/create", json={"name": name}, timeout=30
    )
    answer.raise_for_status()
    return str(answer.json()["experiment_id"])


def create_run(url: str, experiment_id: str) -> str:
    answer = requests.post(
        f"{url}/api/2.0/mlflow/runs/create", json={"experiment_id": experiment_id}, timeout=30
    )
    answer.raise_for_status()
    return str(answer.json()["run"]["info"]["run_id"])


def wait_until(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


class RegistryWriter(threading.Thread):
    """Registers versions of one model, moves them between stages and points an alias at
    them, round-robin over ``urls``, until stopped or ``versions`` versions are made.

    Every answer must be 200 (recorded in ``answers``); the version numbers the server gave
    are kept, so a test can check they are unique and dense across concurrent writers.
    """

    STAGES = ("Staging", "Production", "Archived", "Production")

    def __init__(
        self,
        urls: Sequence[str],
        model: str,
        run_id: str,
        answers: Answers,
        *,
        versions: int,
        alias: str = "champion",
    ) -> None:
        super().__init__(daemon=True, name=f"registry-{model}")
        self.urls = list(urls)
        self.model = model
        self.run_id = run_id
        self.answers = answers
        self.versions = versions
        self.alias = alias
        self.created: list[int] = []
        self.stop = threading.Event()
        self.session = requests.Session()

    def _post(self, i: int, what: str, path: str, body: dict[str, Any]) -> dict[str, Any] | None:
        url = f"{self.urls[i % len(self.urls)]}/api/2.0/mlflow/{path}"
        try:
            answer = self.session.post(url, json=body, timeout=30)
        except requests.RequestException as exc:
            self.answers.failed(what, exc)
            return None
        self.answers.record(what, answer)
        if answer.status_code != 200:
            self.answers.unexpected.append(f"{what} {answer.status_code}: {answer.text[:300]}")
            return None
        result: dict[str, Any] = answer.json()
        return result

    def run(self) -> None:
        for i in range(self.versions):
            if self.stop.is_set():
                return
            created = self._post(
                i,
                "create_version",
                "model-versions/create",
                {"name": self.model, "source": f"runs:/{self.run_id}/model", "run_id": self.run_id},
            )
            if created is None:
                continue
            version = str(created["model_version"]["version"])
            self.created.append(int(version))
            stage = self.STAGES[i % len(self.STAGES)]
            self._post(
                i + 1,
                "transition",
                "model-versions/transition-stage",
                {
                    "name": self.model,
                    "version": version,
                    "stage": stage,
                    # Staging and Production hold one version at a time.
                    "archive_existing_versions": stage != "Archived",
                },
            )
            self._post(
                i,
                "alias",
                "registered-models/alias",
                {"name": self.model, "alias": self.alias, "version": version},
            )


def create_model(url: str, name: str) -> None:
    answer = requests.post(
        f"{url}/api/2.0/mlflow/registered-models/create", json={"name": name}, timeout=30
    )
    answer.raise_for_status()

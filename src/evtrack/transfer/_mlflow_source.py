"""Reading a live MLflow tracking server (2.x or 3.x) through its REST API.

Only documented routes: experiment, run and registry searches, metric histories (paged), the
run artifact listing, and file downloads through the ``mlflow-artifacts`` proxy (or the
server's ``get-artifact`` route for runs whose artifacts it does not proxy). Bodies are
decoded by msgspec straight into the few fields an import copies; protobuf's JSON spells
int64 as strings and NaN as ``"NaN"``, which the lax decoder turns into numbers.

Credentials for the source come from the same variables the mlflow client reads:
``MLFLOW_TRACKING_TOKEN``, or ``MLFLOW_TRACKING_USERNAME`` and ``MLFLOW_TRACKING_PASSWORD``.
"""

from __future__ import annotations

import asyncio
import os
import urllib.parse
from collections.abc import AsyncIterator
from typing import Any, TypeVar

import aiohttp
import msgspec
import numpy as np

from evtrack.transfer._series import Series

T = TypeVar("T")

HISTORY_PAGE = 25_000
"""Points per history request: MLflow's own page size for get-history."""

PROXY_SCHEME = "mlflow-artifacts:"


class SourceError(Exception):
    """The source answered with an error, or not at all; the message says which request."""


class Tag(msgspec.Struct, frozen=True):
    key: str
    value: str = ""


class Experiment(msgspec.Struct, frozen=True):
    experiment_id: str
    name: str
    artifact_location: str = ""
    lifecycle_stage: str = "active"
    creation_time: int = 0
    last_update_time: int = 0
    tags: list[Tag] = []


class RunInfo(msgspec.Struct, frozen=True):
    run_id: str
    experiment_id: str
    run_name: str = ""
    user_id: str = ""
    status: str = "RUNNING"
    start_time: int | None = None
    end_time: int | None = None
    artifact_uri: str = ""
    lifecycle_stage: str = "active"


class Metric(msgspec.Struct, frozen=True):
    key: str
    value: float = 0.0
    timestamp: int = 0
    step: int = 0


class RunData(msgspec.Struct, frozen=True):
    metrics: list[Metric] = []
    params: list[Tag] = []
    tags: list[Tag] = []


class Run(msgspec.Struct, frozen=True):
    info: RunInfo
    data: RunData = RunData()


class Alias(msgspec.Struct, frozen=True):
    alias: str
    version: str


class RegisteredModel(msgspec.Struct, frozen=True):
    name: str
    creation_timestamp: int = 0
    last_updated_timestamp: int = 0
    description: str | None = None
    tags: list[Tag] = []
    aliases: list[Alias] = []


class ModelVersion(msgspec.Struct, frozen=True):
    name: str
    version: str
    creation_timestamp: int = 0
    last_updated_timestamp: int = 0
    current_stage: str = "None"
    description: str | None = None
    source: str = ""
    run_id: str | None = None
    run_link: str | None = None
    tags: list[Tag] = []


class ArtifactFile(msgspec.Struct, frozen=True):
    path: str
    is_dir: bool = False
    file_size: int | None = None


class _Experiments(msgspec.Struct):
    experiments: list[Experiment] = []
    next_page_token: str | None = None


class _Runs(msgspec.Struct):
    runs: list[Run] = []
    next_page_token: str | None = None


class _History(msgspec.Struct):
    metrics: list[Metric] = []
    next_page_token: str | None = None


class _Models(msgspec.Struct):
    registered_models: list[RegisteredModel] = []
    next_page_token: str | None = None


class _Versions(msgspec.Struct):
    model_versions: list[ModelVersion] = []
    next_page_token: str | None = None


class _Artifacts(msgspec.Struct):
    files: list[ArtifactFile] = []


def _auth_headers() -> dict[str, str]:
    token = os.environ.get("MLFLOW_TRACKING_TOKEN")
    if token:
        return {"Authorization": f"Bearer {token}"}
    user = os.environ.get("MLFLOW_TRACKING_USERNAME")
    if user:
        basic = aiohttp.BasicAuth(user, os.environ.get("MLFLOW_TRACKING_PASSWORD", ""))
        return {"Authorization": basic.encode()}
    return {}


class MlflowSource:
    """One source server: its base URL and an HTTP session, at most ``concurrency``
    requests in flight (the source's workers are the bottleneck of an import)."""

    def __init__(self, url: str, *, concurrency: int = 8, timeout_s: float = 300.0) -> None:
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ValueError(f"the source must be an http(s) URL of an MLflow server: {url!r}")
        self.url = url.rstrip("/")
        self._limit = asyncio.Semaphore(concurrency)
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> MlflowSource:
        self._session = aiohttp.ClientSession(
            headers=_auth_headers(),
            timeout=self._timeout,
            connector=aiohttp.TCPConnector(limit=64),
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        assert self._session is not None, "use MlflowSource as an async context manager"
        return self._session

    async def _call(
        self, method: str, path: str, type_: type[T], *, params: Any = None, body: Any = None
    ) -> T:
        url = f"{self.url}/api/2.0/mlflow/{path}"
        for attempt in range(5):
            try:
                async with (
                    self._limit,
                    self.session.request(method, url, params=params, json=body) as resp,
                ):
                    raw = await resp.read()
                    if resp.status in (429, 502, 503, 504) and attempt < 4:
                        await asyncio.sleep(0.5 * 2**attempt)
                        continue
                    if resp.status != 200:
                        text = raw[:300].decode(errors="replace")
                        raise SourceError(f"{method} {path}: HTTP {resp.status}: {text}")
                    return msgspec.json.decode(raw, type=type_, strict=False)
            except (TimeoutError, aiohttp.ClientConnectionError) as exc:
                if attempt == 4:
                    raise SourceError(f"{method} {path}: {exc!r}") from exc
                await asyncio.sleep(0.5 * 2**attempt)
        raise AssertionError("unreachable")

    async def experiments(self) -> list[Experiment]:
        found: list[Experiment] = []
        token: str | None = None
        while True:
            body: dict[str, Any] = {"max_results": 1000, "view_type": "ALL"}
            if token:
                body["page_token"] = token
            page = await self._call("POST", "experiments/search", _Experiments, body=body)
            found += page.experiments
            token = page.next_page_token
            if not token:
                return found

    async def runs(self, experiment_id: str) -> AsyncIterator[list[Run]]:
        """Pages of the experiment's runs, deleted ones included."""
        token: str | None = None
        while True:
            body: dict[str, Any] = {
                "experiment_ids": [experiment_id],
                "run_view_type": "ALL",
                "max_results": 1000,
            }
            if token:
                body["page_token"] = token
            page = await self._call("POST", "runs/search", _Runs, body=body)
            yield page.runs
            token = page.next_page_token
            if not token:
                return

    async def history(self, run_id: str, key: str) -> Series:
        """Every point of one metric of one run, in the order the source returns them."""
        parts: list[list[Metric]] = []
        token: str | None = None
        while True:
            params: dict[str, Any] = {
                "run_id": run_id,
                "metric_key": key,
                "max_results": HISTORY_PAGE,
            }
            if token:
                params["page_token"] = token
            page = await self._call("GET", "metrics/get-history", _History, params=params)
            parts.append(page.metrics)
            token = page.next_page_token
            if not token:
                break
        points = [m for part in parts for m in part]
        n = len(points)
        return Series(
            key,
            np.fromiter((m.value for m in points), dtype=np.float64, count=n),
            np.fromiter((m.timestamp for m in points), dtype=np.int64, count=n),
            np.fromiter((m.step for m in points), dtype=np.int64, count=n),
        )

    async def registered_models(self) -> list[RegisteredModel]:
        found: list[RegisteredModel] = []
        token: str | None = None
        while True:
            params: dict[str, Any] = {"max_results": 1000}
            if token:
                params["page_token"] = token
            page = await self._call("GET", "registered-models/search", _Models, params=params)
            found += page.registered_models
            token = page.next_page_token
            if not token:
                return found

    async def model_versions(self, name: str) -> list[ModelVersion]:
        quoted = "'" + name.replace("\\", "\\\\").replace("'", "\\'") + "'"
        found: list[ModelVersion] = []
        token: str | None = None
        while True:
            params: dict[str, Any] = {"filter": f"name={quoted}", "max_results": 10_000}
            if token:
                params["page_token"] = token
            page = await self._call("GET", "model-versions/search", _Versions, params=params)
            found += [v for v in page.model_versions if v.name == name]
            token = page.next_page_token
            if not token:
                return found

    async def artifact_files(self, run_id: str, path: str = "") -> list[ArtifactFile]:
        """Every file under the run's artifact root (recursively), paths relative to it."""
        params = {"run_id": run_id, **({"path": path} if path else {})}
        listing = await self._call("GET", "artifacts/list", _Artifacts, params=params)
        files: list[ArtifactFile] = []
        for entry in listing.files:
            if entry.is_dir:
                files += await self.artifact_files(run_id, entry.path)
            else:
                files.append(entry)
        return files

    async def download(
        self, run: RunInfo, rel_path: str, chunk_size: int = 1 << 20
    ) -> AsyncIterator[bytes]:
        """The bytes of one artifact file, as the source stores them."""
        if run.artifact_uri.startswith(PROXY_SCHEME):
            root = run.artifact_uri[len(PROXY_SCHEME) :]
            if root.startswith("//"):
                root = root[2:].partition("/")[2]
            store_path = f"{root.strip('/')}/{rel_path}"
            url = f"{self.url}/api/2.0/mlflow-artifacts/artifacts/{urllib.parse.quote(store_path)}"
            params: dict[str, str] = {}
        else:
            url = f"{self.url}/get-artifact"
            params = {"path": rel_path, "run_uuid": run.run_id}
        async with self._limit, self.session.get(url, params=params) as resp:
            if resp.status != 200:
                text = (await resp.read())[:300].decode(errors="replace")
                raise SourceError(f"artifact {run.run_id}/{rel_path}: HTTP {resp.status}: {text}")
            async for chunk in resp.content.iter_chunked(chunk_size):
                yield chunk

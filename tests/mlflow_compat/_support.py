"""Shared helpers for the MLflow compatibility suite.

* :class:`Server` is what every test receives: the kind ("reference" or "evtrack"), the base URL
  and a raw REST helper.
* :class:`ReferenceServer` starts the pip-installed ``mlflow server`` (sqlite backend, proxied
  artifacts in a temp dir) as a subprocess on a free loopback port.
* :func:`point_client_at` / :func:`reset_client_state` configure and clean the global state of
  the official ``mlflow`` client.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

API = "/api/2.0/mlflow"
ARTIFACTS_API = "/api/2.0/mlflow-artifacts/artifacts"

# Environment every client and reference server process gets.
CLIENT_ENV = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "60",
}
_CLIENT_ENV_TO_CLEAR = ("MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_RUN_ID")


def unique(prefix: str = "t") -> str:
    """A name no other test (or earlier test session on a shared server) uses."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@dataclass
class Response:
    status: int
    body: Any  # parsed JSON, or the raw text when the body is not JSON
    content_type: str
    is_json: bool

    @property
    def error_code(self) -> str | None:
        return self.body.get("error_code") if self.is_json and isinstance(self.body, dict) else None


@dataclass
class Server:
    kind: str  # "reference" | "evtrack"
    url: str
    log_dir: str | None = None  # where the server's logs are, for failure messages
    session: requests.Session = field(default_factory=requests.Session, repr=False)

    def request(self, method: str, path: str, **kwargs: Any) -> Response:
        """Raw HTTP call. ``path`` is absolute (``/api/2.0/...``, ``/health``)."""
        kwargs.setdefault("timeout", 60)
        r = self.session.request(method, self.url + path, **kwargs)
        ctype = r.headers.get("Content-Type", "")
        try:
            body = r.json()
            is_json = True
        except ValueError:
            body = r.text
            is_json = False
        return Response(r.status_code, body, ctype, is_json)

    def get(self, endpoint: str, params: Any = None, **kwargs: Any) -> Response:
        """GET ``/api/2.0/mlflow/<endpoint>`` with a query string (as the client does)."""
        return self.request("GET", f"{API}/{endpoint}", params=params, **kwargs)

    def post(self, endpoint: str, body: Any = None, **kwargs: Any) -> Response:
        """POST ``/api/2.0/mlflow/<endpoint>`` with a JSON body (as the client does)."""
        return self.request(
            "POST", f"{API}/{endpoint}", json=body if body is not None else {}, **kwargs
        )

    def ok_post(self, endpoint: str, body: Any = None) -> Any:
        r = self.post(endpoint, body)
        assert r.status == 200, (endpoint, r.status, r.body)
        return r.body

    def ok_get(self, endpoint: str, params: Any = None) -> Any:
        r = self.get(endpoint, params)
        assert r.status == 200, (endpoint, r.status, r.body)
        return r.body


# --------------------------------------------------------------------------------------------
# Reference server
# --------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ReferenceServer:
    """``mlflow server`` 3.17.2 with a fresh sqlite DB and proxied artifacts under ``workdir``."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.log_path = workdir / "mlflow-server.log"

    def start(self, timeout: float = 150.0) -> None:
        last_error = ""
        for _attempt in range(3):  # a free port can be stolen between probe and bind
            port = free_port()
            if self._try_start(port, timeout):
                return
            last_error = self.log_path.read_text(errors="replace")[-3000:]
            self.stop()
        raise RuntimeError(f"reference mlflow server did not start:\n{last_error}")

    def _try_start(self, port: int, timeout: float) -> bool:
        self.workdir.mkdir(parents=True, exist_ok=True)
        db = self.workdir / f"mlflow-{port}.db"
        artifacts = self.workdir / "artifacts"
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
        env.update(CLIENT_ENV)
        # The job runner (huey consumers) only serves GenAI jobs and doubles startup time.
        env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
        cmd = [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--backend-store-uri",
            f"sqlite:///{db}",
            "--artifacts-destination",
            str(artifacts),
            "--serve-artifacts",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ]
        log = open(self.log_path, "ab")  # noqa: SIM115 - closed with the process
        self.proc = subprocess.Popen(
            cmd,
            cwd=self.workdir,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            with contextlib.suppress(requests.RequestException):
                if requests.get(url + "/health", timeout=2).status_code == 200:
                    self.url = url
                    return True
            time.sleep(0.2)
        return False

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        # The CLI spawns uvicorn in the same (new) session: end the whole process group we made.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


# --------------------------------------------------------------------------------------------
# Client state
# --------------------------------------------------------------------------------------------


def point_client_at(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    import mlflow

    for k, v in CLIENT_ENV.items():
        monkeypatch.setenv(k, v)
    for k in _CLIENT_ENV_TO_CLEAR:
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    mlflow.set_tracking_uri(url)


def reset_client_state() -> None:
    """No run stays active and no experiment stays selected between tests."""
    import mlflow
    from mlflow.tracking import fluent

    for _ in range(20):
        if mlflow.active_run() is None:
            break
        try:
            mlflow.end_run()
        except Exception:  # the server may already be gone; drop the local stack anyway
            fluent._active_run_stack.get().clear()  # type: ignore[attr-defined]
    fluent._active_experiment_id = None  # type: ignore[attr-defined]
    mlflow.set_tracking_uri(None)  # type: ignore[arg-type]


@contextlib.contextmanager
def using(server: Server) -> Iterator[Server]:
    """Point the fluent API / MlflowClient() at ``server`` for the duration of the block."""
    import mlflow

    old_env = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = server.url
    mlflow.set_tracking_uri(server.url)
    try:
        yield server
    finally:
        reset_client_state()
        if old_env is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = old_env
            mlflow.set_tracking_uri(old_env)


# --------------------------------------------------------------------------------------------
# Assertions
# --------------------------------------------------------------------------------------------


def error_code(exc: BaseException) -> str | None:
    """The MLflow error code name of an MlflowException / RestException."""
    return getattr(exc, "error_code", None)


@contextlib.contextmanager
def raises_mlflow(
    code: str | tuple[str, ...], match: str | None = None
) -> Iterator[pytest.ExceptionInfo[Any]]:
    """``pytest.raises(MlflowException)`` that also checks the error code (one of ``code`` when
    a tuple: used where the reference's code is an accident, documented at the call site)."""
    from mlflow.exceptions import MlflowException

    codes = (code,) if isinstance(code, str) else code
    with pytest.raises(MlflowException, match=match) as info:
        yield info
    assert error_code(info.value) in codes, (
        f"expected {codes}, got {error_code(info.value)}: {info.value}"
    )


def assert_error(resp: Response, status: int, code: str, message_contains: str | None = None):
    """A JSON MLflow error envelope with the given status and error_code."""
    assert resp.status == status, (resp.status, resp.body)
    assert resp.is_json, f"error body is not JSON: {resp.content_type} {str(resp.body)[:200]}"
    assert "application/json" in resp.content_type, resp.content_type
    assert isinstance(resp.body, dict), resp.body
    assert resp.body.get("error_code") == code, resp.body
    assert isinstance(resp.body.get("message"), str), resp.body
    if message_contains is not None:
        assert message_contains in resp.body["message"], resp.body["message"]


def dumps(obj: Any) -> str:
    return json.dumps(obj, indent=1, sort_keys=True, default=str)

"""The real ``evtrack server`` as a subprocess, for end-to-end tests.

Tests talk to it the way users do: over HTTP, with the real mlflow client, against a real
PostgreSQL. The process is started with
``python -m evtrack server --host 127.0.0.1 --port N --database-url DSN --artifacts-uri DIR``
and is considered up when ``GET /health`` answers 200.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

START_TIMEOUT_S = float(os.environ.get("EVTRACK_TEST_SERVER_START_TIMEOUT", "60"))
STOP_TIMEOUT_S = 15.0
LOG_TAIL_LINES = 80

# Settings the fixture passes as flags; inherited values would only confuse (which wins?).
_SCRUBBED_ENV = (
    "EVTRACK_DATABASE_URL",
    "EVTRACK_ARTIFACTS_URI",
    "EVTRACK_HOST",
    "EVTRACK_PORT",
)


class ServerStartError(AssertionError):
    """The server exited, or did not become healthy in time. The message has its log tail."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now (the OS picks it; the race is acceptable)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last ``lines`` lines of a log file ('' if it does not exist)."""
    try:
        data = path.read_bytes()
    except OSError:
        return ""
    text = data[-256 * 1024 :].decode("utf-8", errors="replace")
    return "\n".join(text.splitlines()[-lines:])


@dataclass
class EvtrackServer:
    """One ``evtrack server`` process (and, after :meth:`restart`, its successors).

    Attributes a test uses: ``url`` (``http://127.0.0.1:<port>``, also the MLflow tracking
    URI), ``dsn`` (its database), ``artifacts_root`` (its ``--artifacts-uri`` directory) and
    ``process`` (the ``subprocess.Popen``).
    """

    url: str
    port: int
    dsn: str
    artifacts_root: Path
    process: subprocess.Popen[bytes]
    argv: list[str]
    env: dict[str, str]
    cwd: Path
    stdout_path: Path
    stderr_path: Path
    log_dir: Path
    starts: int = 1
    # Run in the child before exec (e.g. to lower its RLIMIT_NOFILE); kept for restarts.
    preexec_fn: Callable[[], None] | None = field(default=None, repr=False)
    # Set when a test stopped or killed the server on purpose, so teardown does not report
    # the exit as a crash.
    stopped_on_purpose: bool = field(default=False, repr=False)

    @property
    def host(self) -> str:
        return "127.0.0.1"

    @property
    def tracking_uri(self) -> str:
        """The value for ``MLFLOW_TRACKING_URI`` / ``mlflow.set_tracking_uri``."""
        return self.url

    @property
    def pid(self) -> int:
        return self.process.pid

    def is_running(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        """The end of the current process's stderr and stdout, for failure messages."""
        parts = []
        for label, path in (("stderr", self.stderr_path), ("stdout", self.stdout_path)):
            text = tail(path, lines)
            parts.append(f"--- {label} ({path}) ---\n{text or '(empty)'}")
        return "\n".join(parts)

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> int:
        """SIGTERM, wait up to ``timeout`` s, then SIGKILL the process group. Returns the
        exit code (negative: killed by that signal). Idempotent."""
        self.stopped_on_purpose = True
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self._reap_group()
        return int(self.process.returncode)

    def kill(self) -> int:
        """SIGKILL the process and anything it started (a crash, as far as evtrack knows)."""
        self.stopped_on_purpose = True
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            self.process.kill()
        self.process.wait(STOP_TIMEOUT_S)
        return int(self.process.returncode)

    def _reap_group(self) -> None:
        # The server runs in its own session (process group == its pid). Children it left
        # behind (workers) would keep ports or database connections; end them too.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)

    def restart(self, timeout: float = START_TIMEOUT_S) -> None:
        """Stop the process and start the same command again (same port, database and
        artifacts), waiting until it is healthy."""
        self.stop()
        self.starts += 1
        self.stdout_path = self.log_dir / f"server-{self.port}-{self.starts}.stdout.log"
        self.stderr_path = self.log_dir / f"server-{self.port}-{self.starts}.stderr.log"
        self.process = _spawn(
            self.argv, self.env, self.cwd, self.stdout_path, self.stderr_path, self.preexec_fn
        )
        self.stopped_on_purpose = False
        wait_until_healthy(self, timeout)


def server_argv(
    *,
    port: int,
    dsn: str,
    artifacts_uri: str,
    extra_args: Sequence[str] = (),
    launcher: Sequence[str] = (),
) -> list[str]:
    """The server's command line; ``launcher`` goes before it (e.g. ``prlimit ... --``)."""
    return [
        *launcher,
        sys.executable,
        "-m",
        "evtrack",
        "server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--database-url",
        dsn,
        "--artifacts-uri",
        artifacts_uri,
        *extra_args,
    ]


def server_env(extra: Mapping[str, str | None] | None = None) -> dict[str, str]:
    """The test process's environment, minus settings given as flags, plus ``extra``
    (a value of None removes a variable)."""
    env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED_ENV}
    env["PYTHONUNBUFFERED"] = "1"
    for key, value in (extra or {}).items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def _spawn(
    argv: list[str],
    env: dict[str, str],
    cwd: Path,
    stdout_path: Path,
    stderr_path: Path,
    preexec_fn: Callable[[], None] | None = None,
) -> subprocess.Popen[bytes]:
    stdout_path.parent.mkdir(parents=True, exist_ok=True)
    with open(stdout_path, "wb") as out, open(stderr_path, "wb") as err:
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            env=env,
            cwd=cwd,
            start_new_session=True,  # its own process group, so teardown can end its children
            preexec_fn=preexec_fn,
        )


def start_server(
    *,
    dsn: str,
    artifacts_root: Path,
    log_dir: Path,
    cwd: Path,
    port: int | None = None,
    extra_args: Sequence[str] = (),
    env: Mapping[str, str | None] | None = None,
    wait: bool = True,
    timeout: float = START_TIMEOUT_S,
    launcher: Sequence[str] = (),
    preexec_fn: Callable[[], None] | None = None,
) -> EvtrackServer:
    """Start ``evtrack server`` and (unless ``wait`` is false) wait for ``/health``.
    ``preexec_fn`` runs in the child before exec (e.g. to lower its descriptor limit)."""
    port = port or free_port()
    argv = server_argv(
        port=port,
        dsn=dsn,
        artifacts_uri=str(artifacts_root),
        extra_args=extra_args,
        launcher=launcher,
    )
    full_env = server_env(env)
    stdout_path = log_dir / f"server-{port}-1.stdout.log"
    stderr_path = log_dir / f"server-{port}-1.stderr.log"
    process = _spawn(argv, full_env, cwd, stdout_path, stderr_path, preexec_fn)
    server = EvtrackServer(
        url=f"http://127.0.0.1:{port}",
        port=port,
        dsn=dsn,
        artifacts_root=artifacts_root,
        process=process,
        argv=argv,
        env=full_env,
        cwd=cwd,
        stdout_path=stdout_path,
        stderr_path=stderr_path,
        log_dir=log_dir,
        preexec_fn=preexec_fn,
    )
    if wait:
        try:
            wait_until_healthy(server, timeout)
        except BaseException:
            server.kill()
            raise
    return server


def health_status(url: str, timeout: float = 2.0) -> int | None:
    """HTTP status of ``GET {url}/health``, or None if nothing answered."""
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=timeout) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (urllib.error.URLError, OSError):
        return None


def wait_until_healthy(server: EvtrackServer, timeout: float = START_TIMEOUT_S) -> None:
    """Poll ``/health`` until it answers 200; raise :class:`ServerStartError` with the
    server's log tail if the process exits first or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    last: int | None = None
    delay = 0.05
    while True:
        code = server.process.poll()
        if code is not None:
            raise ServerStartError(
                f"evtrack server exited with code {code} before /health answered\n"
                f"command: {' '.join(server.argv)}\n{server.log_tail()}"
            )
        last = health_status(server.url)
        if last == 200:
            return
        if time.monotonic() >= deadline:
            raise ServerStartError(
                f"evtrack server did not answer GET /health with 200 within {timeout:.0f}s"
                f" (last status: {last})\ncommand: {' '.join(server.argv)}\n"
                f"{server.log_tail()}"
            )
        time.sleep(delay)
        delay = min(delay * 2, 0.5)


def module_server(
    postgres_admin_dsn: str,
    tmp_path_factory: Any,
    label: str = "server",
    *,
    extra_args: Sequence[str] = (),
    env: Mapping[str, str | None] | None = None,
) -> Iterator[EvtrackServer]:
    """A server on a database of its own, for a module-scoped fixture to ``yield from``:
    stopped, and its database dropped, when the module is done."""
    from _support import postgres as pgsupport

    name = pgsupport.new_database_name()
    dsn = pgsupport.create_database(postgres_admin_dsn, name)
    work = tmp_path_factory.mktemp(label)
    server = start_server(
        dsn=dsn,
        artifacts_root=work / "artifacts",
        log_dir=work / "logs",
        cwd=work,
        extra_args=extra_args,
        env=env,
    )
    try:
        yield server
    finally:
        server.stop()
        pgsupport.drop_database(postgres_admin_dsn, name)

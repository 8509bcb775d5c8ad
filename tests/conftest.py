"""Session-wide fixtures: PostgreSQL, fresh databases and the real evtrack server.

Fixtures (all synchronous, so sync tests using the mlflow client and async tests can share
them):

* ``postgres_admin_dsn`` (session) -> str: a superuser DSN. The local service at
  127.0.0.1:5432 if it answers within ~2 s, else an embedded pgserver in a temp directory.
  ``EVTRACK_TEST_FORCE_EMBEDDED=1`` forces the embedded one; ``EVTRACK_TEST_POSTGRES_DSN``
  names another server.
* ``make_database`` -> ``() -> str``: creates ``evtrack_test_<hex>`` databases on demand and
  returns their DSNs; all are dropped at teardown (connections terminated first).
* ``fresh_database_dsn`` -> str: one such database for the test.
* ``evtrack_server_factory`` -> ``(*, dsn=None, artifacts_root=None, extra_args=(), env=None,
  port=None, wait=True, timeout=60, launcher=(), preexec_fn=None) -> EvtrackServer``: starts
  ``python -m evtrack server`` (after ``launcher``, e.g. ``prlimit ... --``; ``preexec_fn``
  runs in the child, e.g. to lower its limits); by default on ``fresh_database_dsn`` and
  ``tmp_path/"artifacts"``, so several servers in one test (restarts, scale-out) share them.
  Every server is stopped at teardown.
* ``evtrack_server`` -> EvtrackServer: one healthy server (``.url``, ``.dsn``,
  ``.artifacts_root``, ``.process``, ``.stop()``, ``.kill()``, ``.restart()``,
  ``.log_tail()``).

When a test fails, the log tails of the servers it started are attached to its report.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import signal
import sys
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

# The mlflow client must neither phone home nor hide a server error behind its retries
# (tests of retry safety turn retries back on themselves).
os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"

_TESTS_DIR = Path(__file__).resolve().parent
_REPO_ROOT = _TESTS_DIR.parent
if str(_TESTS_DIR) not in sys.path:  # so `import _support` works in any import mode
    sys.path.insert(0, str(_TESTS_DIR))

# CI installs the package (`pip install -e '.[test]'`). A developer running pytest from a
# venv without it still gets a working run: the source tree goes on the path, for this
# process and (through PYTHONPATH) for the server subprocesses.
if importlib.util.find_spec("evtrack") is None:
    _src = str(_REPO_ROOT / "src")
    sys.path.insert(0, _src)
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (_src, os.environ.get("PYTHONPATH")) if p)
    warnings.warn(
        "evtrack is not installed in this environment; using the source tree "
        f"({_src}). Run `pip install -e '.[test]'` for the setup CI uses.",
        stacklevel=1,
    )

from _support import postgres as pgsupport  # noqa: E402
from _support.server import EvtrackServer, ServerStartError, start_server  # noqa: E402

log = logging.getLogger("evtrack.tests")

_postgres_choice_key = pytest.StashKey[str]()
_servers_key = pytest.StashKey[list[EvtrackServer]]()


# --------------------------------------------------------------------------- PostgreSQL


@pytest.fixture(scope="session")
def postgres_admin_dsn(request: pytest.FixtureRequest) -> Iterator[str]:
    """A DSN with the right to create databases; see the module docstring for the choice."""
    chosen = pgsupport.choose_test_postgres()
    request.config.stash[_postgres_choice_key] = chosen.description
    log.warning("evtrack tests use PostgreSQL: %s", chosen.description)
    try:
        yield chosen.admin_dsn
    finally:
        chosen.close()


@pytest.fixture
def make_database(postgres_admin_dsn: str) -> Iterator[Callable[[], str]]:
    """Factory: each call creates a new ``evtrack_test_<hex>`` database and returns its DSN."""
    created: list[str] = []

    def make() -> str:
        name = pgsupport.new_database_name()
        dsn = pgsupport.create_database(postgres_admin_dsn, name)
        created.append(name)
        return dsn

    yield make
    errors = []
    for name in reversed(created):
        try:
            pgsupport.drop_database(postgres_admin_dsn, name)
        except Exception as exc:  # report all, drop as many as possible
            errors.append(f"{name}: {exc!r}")
    if errors:
        pytest.fail("could not drop test databases: " + "; ".join(errors), pytrace=False)


@pytest.fixture
def fresh_database_dsn(make_database: Callable[[], str]) -> str:
    """DSN of a new, empty database that is dropped after the test."""
    return make_database()


# --------------------------------------------------------------------------- the server


@pytest.fixture
def evtrack_server_factory(
    request: pytest.FixtureRequest, tmp_path: Path, fresh_database_dsn: str
) -> Iterator[Callable[..., EvtrackServer]]:
    """Start ``evtrack server`` subprocesses; all are stopped (SIGTERM, then SIGKILL after
    15 s) at teardown. A server that died during the test fails the teardown with its log."""
    servers: list[EvtrackServer] = []
    request.node.stash[_servers_key] = servers

    def factory(
        *,
        dsn: str | None = None,
        artifacts_root: Path | None = None,
        extra_args: Sequence[str] = (),
        env: Mapping[str, str | None] | None = None,
        port: int | None = None,
        wait: bool = True,
        timeout: float | None = None,
        launcher: Sequence[str] = (),
        preexec_fn: Callable[[], None] | None = None,
    ) -> EvtrackServer:
        kwargs: dict[str, Any] = {}
        if timeout is not None:
            kwargs["timeout"] = timeout
        if preexec_fn is not None:
            kwargs["preexec_fn"] = preexec_fn
        try:
            server = start_server(
                dsn=dsn or fresh_database_dsn,
                artifacts_root=artifacts_root or tmp_path / "artifacts",
                log_dir=tmp_path / "server-logs",
                cwd=tmp_path,  # not the checkout: the installed package must be enough
                port=port,
                extra_args=extra_args,
                env=env,
                wait=wait,
                launcher=launcher,
                **kwargs,
            )
        except ServerStartError as exc:
            failure = str(exc)
        else:
            servers.append(server)
            return server
        pytest.fail(failure, pytrace=False)  # outside `except`: no chained duplicate

    yield factory

    crashed = []
    for server in servers:
        if server.stopped_on_purpose:  # the test stopped or killed it and saw the result
            server.stop()
            continue
        died_on_its_own = not server.is_running()
        code = server.stop()
        if died_on_its_own:
            crashed.append(
                f"evtrack server on port {server.port} exited with code {code} "
                f"during the test\n{server.log_tail()}"
            )
        elif code not in (0, -signal.SIGTERM):
            log.warning(
                "evtrack server on port %s exited with %s after SIGTERM\n%s",
                server.port,
                code,
                server.log_tail(),
            )
    if crashed:
        pytest.fail("\n\n".join(crashed), pytrace=False)


@pytest.fixture
def evtrack_server(evtrack_server_factory: Callable[..., EvtrackServer]) -> EvtrackServer:
    """A running, healthy ``evtrack server`` on ``fresh_database_dsn``."""
    return evtrack_server_factory()


# --------------------------------------------------------------------------- reporting


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Attach the log tails of the servers a failing test started to its report."""
    report = yield
    if report.failed and call.when == "call":
        for server in item.stash.get(_servers_key, []):
            report.sections.append(
                (f"evtrack server :{server.port} (start {server.starts})", server.log_tail())
            )
    return report


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    choice = config.stash.get(_postgres_choice_key, None)
    if choice is not None:
        terminalreporter.write_line(f"evtrack tests used PostgreSQL: {choice}")

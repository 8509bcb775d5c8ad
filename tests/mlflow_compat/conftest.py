"""Fixtures for the MLflow compatibility suite.

Every test takes ``tracking_server`` (parametrized ``["reference", "evtrack"]``): each expectation
is first proven against the pip-installed reference ``mlflow server`` and then demanded of
evtrack. ``server_pair`` gives ``(baseline, candidate)`` for differential tests: two sessions on
the reference (which proves the normalisation is sound), or reference vs. evtrack.

Reference server: ONE for this package (startup of ``mlflow server`` costs ~10 s on two cores),
shared by all modules. Tests isolate themselves with unique experiment / run names and never
assert on the global experiment list. Set ``EVTRACK_COMPAT_REFERENCE_URL`` to reuse an already
running reference server instead.

evtrack: ONE server per test module by default, started exactly like the ``evtrack_server``
fixture of ``tests/conftest.py`` (its ``_support.server.start_server`` on a fresh database of
``postgres_admin_dsn``). Starting evtrack takes ~3.5 s and the suite has ~80 tests per server,
so a fresh server per test would alone exceed the runtime target; every test here is written to
share a store (unique names, no global listings). ``EVTRACK_COMPAT_FRESH_SERVER=1`` uses the
function-scoped ``evtrack_server`` fixture instead (a fresh database per test).
``EVTRACK_COMPAT_EVTRACK_URL`` tests an already running evtrack. A fixture that breaks (the
reference server does not start, no database) fails the tests that need it; nothing here skips.
The shared server's logs are in the module's
``evtrack-compat*`` tmp dir; a failing test's report carries their tail.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from ._support import CLIENT_ENV, ReferenceServer, Server, point_client_at, reset_client_state

for _k, _v in CLIENT_ENV.items():
    os.environ.setdefault(_k, _v)

SERVER_KINDS = ["reference", "evtrack"]


@pytest.fixture(scope="package")  # stopped once this package's tests are done
def reference_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    external = os.environ.get("EVTRACK_COMPAT_REFERENCE_URL")
    if external:
        yield Server("reference", external.rstrip("/"))
        return
    ref = ReferenceServer(tmp_path_factory.mktemp("mlflow-reference"))
    ref.start()
    try:
        yield Server("reference", ref.url, log_dir=str(ref.workdir))
    finally:
        ref.stop()


@pytest.fixture(scope="module")
def evtrack_module_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """One evtrack per module, on its own fresh database (dropped afterwards)."""
    # No fallback: a fixture that cannot be set up is an error of the suite, never a skip.
    admin_dsn = request.getfixturevalue("postgres_admin_dsn")
    from _support import postgres as pg  # tests/_support, next to tests/conftest.py
    from _support.server import start_server

    name = pg.new_database_name()
    dsn = pg.create_database(admin_dsn, name)
    workdir = tmp_path_factory.mktemp("evtrack-compat")
    try:
        server = start_server(
            dsn=dsn,
            artifacts_root=workdir / "artifacts",
            log_dir=workdir / "server-logs",
            cwd=workdir,
        )
        try:
            yield Server("evtrack", server.url, log_dir=str(workdir / "server-logs"))
        finally:
            server.stop()
    finally:
        pg.drop_database(admin_dsn, name)


def _evtrack(request: pytest.FixtureRequest) -> Server:
    external = os.environ.get("EVTRACK_COMPAT_EVTRACK_URL")
    if external:  # an already running evtrack (its store is shared by the tests: fine)
        return Server("evtrack", external.rstrip("/"))
    if os.environ.get("EVTRACK_COMPAT_FRESH_SERVER", "") not in ("", "0"):
        ev = request.getfixturevalue("evtrack_server")
        return Server("evtrack", str(ev.url).rstrip("/"))
    return request.getfixturevalue("evtrack_module_server")  # type: ignore[no-any-return]


def _server(request: pytest.FixtureRequest, kind: str) -> Server:
    if kind == "reference":
        return request.getfixturevalue("reference_server")  # type: ignore[no-any-return]
    return _evtrack(request)


_used_servers_key = pytest.StashKey[list[Server]]()


def _remember(request: pytest.FixtureRequest, *servers: Server) -> None:
    request.node.stash[_used_servers_key] = list(servers)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """A failing test's report carries the log tails of the shared servers it used."""
    report = yield
    if report.failed and call.when == "call":
        for server in item.stash.get(_used_servers_key, []):
            if not server.log_dir:
                continue
            for log in sorted(Path(server.log_dir).glob("*.log")):
                lines = log.read_text(errors="replace").splitlines()[-40:]
                report.sections.append((f"{server.kind} server log {log}", "\n".join(lines)))
    return report


@pytest.fixture(params=SERVER_KINDS)
def tracking_server(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Server]:
    """The server under test; the mlflow client (fluent and MlflowClient) points at it."""
    server = _server(request, request.param)
    _remember(request, server)
    reset_client_state()
    point_client_at(monkeypatch, server.url)
    try:
        yield server
    finally:
        reset_client_state()


@pytest.fixture(params=SERVER_KINDS)
def server_pair(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Server, Server]]:
    """(baseline, candidate). ``[reference]``: the reference twice (self-consistency of the
    normalisation); ``[evtrack]``: reference vs. evtrack."""
    baseline = request.getfixturevalue("reference_server")
    candidate = baseline if request.param == "reference" else _evtrack(request)
    _remember(request, *({baseline.url: baseline, candidate.url: candidate}.values()))
    reset_client_state()
    point_client_at(monkeypatch, baseline.url)  # tests switch with _support.using(server)
    try:
        yield baseline, candidate
    finally:
        reset_client_state()


@pytest.fixture
def client(tracking_server: Server):  # type: ignore[no-untyped-def]
    from mlflow import MlflowClient

    return MlflowClient(tracking_server.url)

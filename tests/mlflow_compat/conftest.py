"""Fixtures for the MLflow compatibility suite.

Every test takes ``tracking_server`` (parametrized ``["reference", "evtrack"]``): each expectation
is first proven against the pip-installed reference ``mlflow server`` and then demanded of
evtrack. ``server_pair`` gives ``(baseline, candidate)`` for differential tests: two sessions on
the reference (which proves the normalisation is sound), or reference vs. evtrack.

Reference server: ONE per test session (startup of ``mlflow server`` costs ~10 s on two cores),
shared by all modules. Tests isolate themselves with unique experiment / run names and never
assert on the global experiment list. Set ``EVTRACK_COMPAT_REFERENCE_URL`` to reuse an already
running reference server instead.

evtrack: the function-scoped ``evtrack_server`` fixture from ``tests/conftest.py`` (a fresh
database per test). Until it exists, the evtrack parameters are skipped. Set
``EVTRACK_COMPAT_EVTRACK_URL`` to test an already running evtrack instead.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from ._support import CLIENT_ENV, ReferenceServer, Server, point_client_at, reset_client_state

for _k, _v in CLIENT_ENV.items():
    os.environ.setdefault(_k, _v)

SERVER_KINDS = ["reference", "evtrack"]


@pytest.fixture(scope="session")
def reference_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    external = os.environ.get("EVTRACK_COMPAT_REFERENCE_URL")
    if external:
        yield Server("reference", external.rstrip("/"))
        return
    ref = ReferenceServer(tmp_path_factory.mktemp("mlflow-reference"))
    ref.start()
    try:
        yield Server("reference", ref.url)
    finally:
        ref.stop()


def _evtrack(request: pytest.FixtureRequest) -> Server:
    external = os.environ.get("EVTRACK_COMPAT_EVTRACK_URL")
    if external:  # an already running evtrack (its store is shared by the tests: fine)
        return Server("evtrack", external.rstrip("/"))
    try:
        ev = request.getfixturevalue("evtrack_server")
    except pytest.FixtureLookupError:
        pytest.skip("evtrack_server fixture (tests/conftest.py) is not available yet")
    return Server("evtrack", str(ev.url).rstrip("/"))


def _server(request: pytest.FixtureRequest, kind: str) -> Server:
    if kind == "reference":
        return request.getfixturevalue("reference_server")  # type: ignore[no-any-return]
    return _evtrack(request)


@pytest.fixture(params=SERVER_KINDS)
def tracking_server(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Server]:
    """The server under test; the mlflow client (fluent and MlflowClient) points at it."""
    server = _server(request, request.param)
    point_client_at(monkeypatch, server.url)
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
    reset_client_state()
    for k in ("MLFLOW_TRACKING_URI",):
        monkeypatch.delenv(k, raising=False)
    point_client_at(monkeypatch, baseline.url)
    try:
        yield baseline, candidate
    finally:
        reset_client_state()


@pytest.fixture
def client(tracking_server: Server):  # type: ignore[no-untyped-def]
    from mlflow import MlflowClient

    return MlflowClient(tracking_server.url)

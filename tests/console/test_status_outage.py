"""The status snapshot while PostgreSQL is away: the database shows as failing and the outage
is among the last errors; when it is back, the snapshot says so by itself."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from _support.postgres import private_embedded_postgres
from _support.server import EvtrackServer

from evtrack._embedded_postgres import EmbeddedPostgres, start_embedded_postgres


@pytest.fixture
def private_postgres() -> Iterator[tuple[Path, list[EmbeddedPostgres]]]:
    """A PostgreSQL of this test's own, which it may stop and start (the shared one, never)."""
    with private_embedded_postgres() as found:
        yield found


def _until(server: EvtrackServer, check: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    deadline = time.monotonic() + 20
    while True:
        snapshot: dict[str, Any] = requests.get(
            f"{server.url}/api/2.0/evtrack/status", timeout=10
        ).json()
        if check(snapshot):
            return snapshot
        assert time.monotonic() < deadline, snapshot
        time.sleep(0.3)


def test_the_status_shows_a_database_outage(
    private_postgres: tuple[Path, list[EmbeddedPostgres]],
    evtrack_server_factory: Callable[..., EvtrackServer],
) -> None:
    data_dir, handles = private_postgres
    server = evtrack_server_factory(dsn=handles[0].dsn)
    healthy = _until(server, lambda s: s["database"]["ok"] is True)
    assert healthy["ready"] is True

    handles[0].stop()  # the database goes away
    down = _until(server, lambda s: s["database"]["ok"] is False)
    assert down["ready"] is False
    assert down["ingest"]["events_per_s"] is None  # not measured while it is away
    assert any(
        e["source"] == "database" and e["message"].startswith("unreachable") for e in down["errors"]
    ), down["errors"]

    handles.append(start_embedded_postgres(data_dir))  # and comes back
    back = _until(server, lambda s: s["database"]["ok"] is True)
    assert any("reachable again" in e["message"] for e in back["errors"]), back["errors"]

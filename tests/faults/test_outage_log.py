"""One database outage is one ``database.unavailable`` line and one ``database.recovered``,
however requests that straddle its start finish."""

from __future__ import annotations

import time

import asyncpg
from structlog.testing import capture_logs

from evtrack.application import OutageLog


def test_a_request_begun_before_the_outage_does_not_end_it() -> None:
    outages = OutageLog()
    before = time.monotonic()  # this request did its database work before the outage
    with capture_logs() as logs:
        outages.failed(asyncpg.ConnectionDoesNotExistError("connection was closed"))
        outages.succeeded(before)  # ...and is answered just after another one failed
        outages.failed(asyncpg.ConnectionDoesNotExistError("connection was closed"))
        outages.succeeded(time.monotonic())  # a request begun since: the database is back
    events = [entry["event"] for entry in logs]
    assert events == ["database.unavailable", "database.recovered"]
    assert logs[1]["requests_refused"] == 2

"""Which failures are a database outage (503, logged once) rather than a server error."""

from __future__ import annotations

import asyncpg

from evtrack.eventlog import database_unavailable


def test_a_protocol_broken_by_a_shutdown_message_is_an_outage() -> None:
    # What the next statement on a pooled connection raises after PostgreSQL sent it
    # "terminating connection due to administrator command" while it was idle.
    broken = asyncpg.InternalClientError(
        "cannot switch to state 12; another operation (2) is in progress"
    )
    assert database_unavailable(broken)
    assert database_unavailable(asyncpg.InternalClientError("not connected"))


def test_other_client_errors_are_not_outages() -> None:
    assert not database_unavailable(asyncpg.InternalClientError("unexpected codec"))
    assert not database_unavailable(
        asyncpg.OutdatedSchemaCacheError("cannot switch to state 12", schema="s", data_type="t")
    )
    assert not database_unavailable(OSError(28, "No space left on device"))

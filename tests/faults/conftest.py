"""Fixtures of the fault tests, and their figures in the terminal summary."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from _support.private_postgres import PrivatePostgres

from ._tally import TALLIES


@pytest.fixture(scope="module")
def private_postgres() -> Iterator[PrivatePostgres]:
    """A PostgreSQL of this module's own, which its tests may restart (the shared one,
    never). Each test makes its own database in it."""
    server = PrivatePostgres()
    try:
        yield server
    finally:
        server.close()


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    if TALLIES:
        terminalreporter.section("fault tests: metric points sent, acknowledged, stored")
        for tally in TALLIES:
            terminalreporter.write_line(tally.line())

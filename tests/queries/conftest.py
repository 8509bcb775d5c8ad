"""One evtrack server per test module: these tests only add data, so they can share it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from _support.server import EvtrackServer, module_server


@pytest.fixture(scope="module")
def shared_server(
    postgres_admin_dsn: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[EvtrackServer]:
    yield from module_server(postgres_admin_dsn, tmp_path_factory, "server")

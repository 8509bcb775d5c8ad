"""One evtrack server per test module: these tests only add data, so they can share it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from _support import postgres as pgsupport
from _support.server import EvtrackServer, start_server


@pytest.fixture(scope="module")
def shared_server(
    postgres_admin_dsn: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[EvtrackServer]:
    name = pgsupport.new_database_name()
    dsn = pgsupport.create_database(postgres_admin_dsn, name)
    work = tmp_path_factory.mktemp("server")
    server = start_server(
        dsn=dsn, artifacts_root=work / "artifacts", log_dir=work / "logs", cwd=work
    )
    try:
        yield server
    finally:
        server.stop()
        pgsupport.drop_database(postgres_admin_dsn, name)

"""The embedded PostgreSQL that ``evtrack server`` runs when given no database URL."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
from _support import postgres as pgsupport
from _support.postgres import embedded_temp_dir

from evtrack import _embedded_postgres as emb
from evtrack._embedded_postgres import (
    EmbeddedPostgres,
    EmbeddedPostgresError,
    default_data_dir,
    start_embedded_postgres,
)

# A second evtrack process, reduced to what matters here: start on a directory, report what
# it got, and exit normally (so pgserver's atexit hook releases its handle).
_CHILD = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    from evtrack._embedded_postgres import start_embedded_postgres
    pg = start_embedded_postgres(Path(sys.argv[1]))
    print(json.dumps({"pid": pg.pid, "dsn": pg.dsn}))
    """
)


def _start_in_child(data_dir: Path) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, str(data_dir)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    result: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


async def _query(dsn: str, sql: str) -> object:
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        return await conn.fetchval(sql)
    finally:
        await conn.close()


def _handles(data_dir: Path) -> list[int]:
    return list(json.loads((data_dir / ".handle_pids.json").read_text()))


@pytest.fixture
def data_dir() -> Iterator[Path]:
    # Not under tmp_path: see embedded_temp_dir() for why.
    root = embedded_temp_dir()
    path = root / "pgdata"
    yield path
    # Never leave a server behind, whatever the test did.
    pid_file = path / "postmaster.pid"
    if pid_file.exists():
        pid = int(pid_file.read_text().split()[0])
        if emb._is_postmaster(pid, path.resolve()):
            os.kill(pid, signal.SIGTERM)
    shutil.rmtree(root, ignore_errors=True)


async def test_start_query_share_and_stop(data_dir: Path) -> None:
    pg = start_embedded_postgres(data_dir)
    try:
        assert pg.dsn.startswith("postgresql://postgres@/evtrack?host=")
        assert await _query(pg.dsn, "SELECT current_database()") == "evtrack"
        assert await _query(pg.dsn, "SELECT 40 + 2") == 42
        await _query(pg.dsn, "CREATE TABLE kept (x int)")

        # A second process on the same directory joins the running server.
        child = _start_in_child(data_dir)
        assert child == {"pid": pg.pid, "dsn": pg.dsn}
        # ... and its exit does not stop the server we still hold.
        assert await _query(pg.dsn, "SELECT 1") == 1
        assert _handles(data_dir) == [os.getpid()]

        # A second handle in this process shares it; stopping one keeps the other usable.
        again = start_embedded_postgres(data_dir)
        assert again.pid == pg.pid and again.dsn == pg.dsn
        again.stop()
        again.stop()  # idempotent
        assert await _query(pg.dsn, "SELECT 1") == 1
    finally:
        pg.stop()

    # The last handle stopped the server.
    assert not (data_dir / "postmaster.pid").exists()
    with pytest.raises((OSError, asyncpg.PostgresError)):
        await _query(pg.dsn, "SELECT 1")

    # Starting again keeps the data, and does not trip over the existing database.
    with start_embedded_postgres(data_dir) as pg2:
        assert await _query(pg2.dsn, "SELECT count(*) FROM kept") == 0
        assert await _query(pg2.admin_dsn, "SELECT current_database()") == "postgres"
    assert not (data_dir / "postmaster.pid").exists()


async def test_a_killed_holder_does_not_keep_the_server_alive(data_dir: Path) -> None:
    # A process that died without releasing its handle (SIGKILL): its pid stays listed.
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    dead_pid = int(dead.stdout)
    pg = start_embedded_postgres(data_dir)
    handles = data_dir / ".handle_pids.json"
    handles.write_text(json.dumps([dead_pid, *_handles(data_dir)]))
    pg.stop()
    assert not (data_dir / "postmaster.pid").exists(), "server still running"


async def test_recovers_from_a_stale_postmaster_pid(data_dir: Path) -> None:
    with start_embedded_postgres(data_dir):
        pass
    # What a crash leaves behind when the old postmaster's pid now belongs to another
    # process (here: this test process, which is alive and not postgres).
    stale = [
        str(os.getpid()),
        str(data_dir.resolve()),
        "0",
        "5432",
        str(data_dir),
        "",
        "0 0",
        "ready",
    ]
    (data_dir / "postmaster.pid").write_text("\n".join(stale) + "\n")
    with start_embedded_postgres(data_dir) as pg:
        assert pg.pid != os.getpid()
        assert await _query(pg.dsn, "SELECT 1") == 1


async def test_works_inside_a_running_event_loop(data_dir: Path) -> None:
    # This test is itself a coroutine: start_embedded_postgres must not call asyncio.run
    # on this thread.
    with start_embedded_postgres(data_dir) as pg:
        assert await _query(pg.dsn, "SELECT current_user") == "postgres"


def test_rejects_paths_the_bundled_pg_ctl_cannot_quote(tmp_path: Path) -> None:
    with pytest.raises(EmbeddedPostgresError, match="EVTRACK_DATA_DIR"):
        start_embedded_postgres(tmp_path / "with space")


def test_default_data_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("EVTRACK_DATA_DIR", str(tmp_path / "evt"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert default_data_dir() == tmp_path / "evt" / "postgres"

    monkeypatch.delenv("EVTRACK_DATA_DIR")
    assert default_data_dir() == tmp_path / "xdg" / "evtrack" / "postgres"

    monkeypatch.delenv("XDG_DATA_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    expected = (
        Path("/var/lib/evtrack/postgres")
        if os.geteuid() == 0
        else tmp_path / "home" / ".local" / "share" / "evtrack" / "postgres"
    )
    assert default_data_dir() == expected


def test_handle_repr_and_types(data_dir: Path) -> None:
    with start_embedded_postgres(data_dir) as pg:
        assert isinstance(pg, EmbeddedPostgres)
        assert pg.socket_dir.is_dir()
        assert (pg.socket_dir / ".s.PGSQL.5432").is_socket()
        assert "pid=" in repr(pg)
    assert pg.stopped and "stopped" in repr(pg)


# The session's PostgreSQL fixtures (tests/conftest.py), whichever server they picked: the
# local service, or this same embedded server when there is none (EVTRACK_TEST_FORCE_EMBEDDED=1
# forces that path).


async def test_fresh_database_is_empty_and_named_for_tests(fresh_database_dsn: str) -> None:
    name = await _query(fresh_database_dsn, "SELECT current_database()")
    assert isinstance(name, str) and name.startswith("evtrack_test_")
    tables = await _query(
        fresh_database_dsn,
        "SELECT count(*) FROM pg_tables"
        " WHERE schemaname NOT IN ('pg_catalog', 'information_schema')",
    )
    assert tables == 0


async def test_databases_are_dropped_even_with_open_connections(postgres_admin_dsn: str) -> None:
    name = pgsupport.new_database_name()
    dsn = pgsupport.create_database(postgres_admin_dsn, name)
    lingering = await asyncpg.connect(dsn)  # e.g. a pool a crashed server left behind
    try:
        pgsupport.drop_database(postgres_admin_dsn, name)
    finally:
        lingering.terminate()  # the server ended it already; close() would write to it
    exists = await _query(
        postgres_admin_dsn, f"SELECT count(*) FROM pg_database WHERE datname = '{name}'"
    )
    assert exists == 0

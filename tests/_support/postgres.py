"""PostgreSQL for tests: the local service when there is one, else a throwaway embedded server.

Choice, in order:

1. ``EVTRACK_TEST_POSTGRES_DSN``: an explicit admin DSN (a superuser, or a role that may
   create databases). Used as given; tests fail if it does not answer.
2. ``EVTRACK_TEST_FORCE_EMBEDDED=1``: skip the probe and use the embedded server (this is how
   CI and developers exercise the no-service path on a machine that has a service).
3. ``postgresql://postgres@127.0.0.1:5432/postgres`` if it answers within ~2 s and may
   create databases.
4. Otherwise an embedded server from ``pgserver`` in a temporary directory, via the same
   ``evtrack._embedded_postgres`` module that ``evtrack server`` uses.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from .aio import run_sync

if TYPE_CHECKING:
    from evtrack._embedded_postgres import EmbeddedPostgres

log = logging.getLogger("evtrack.tests.postgres")

LOCAL_ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
PROBE_TIMEOUT_S = 2.0
TEST_DATABASE_PREFIX = "evtrack_test_"

_TRUTHY = {"1", "true", "yes", "on"}


def env_flag(name: str) -> bool:
    """Whether environment variable ``name`` is set to a true-ish value."""
    return os.environ.get(name, "").strip().lower() in _TRUTHY


@dataclass
class SessionPostgres:
    """The PostgreSQL a test session uses."""

    admin_dsn: str
    description: str
    embedded: EmbeddedPostgres | None = None  # set when we started one
    temp_dir: Path | None = None  # removed by close()

    def close(self) -> None:
        """Stop the embedded server (if we started one) and delete its files."""
        if self.embedded is not None:
            self.embedded.stop()
            self.embedded = None
        if self.temp_dir is not None:
            shutil.rmtree(self.temp_dir, ignore_errors=True)
            self.temp_dir = None


async def _probe(dsn: str, timeout: float) -> str | None:
    """Return None if ``dsn`` answers and may create databases, else why not."""
    try:
        conn = await asyncpg.connect(dsn, timeout=timeout)
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    try:
        row = await conn.fetchrow(
            "SELECT rolsuper, rolcreatedb FROM pg_roles WHERE rolname = current_user"
        )
        if row is None or not (row["rolsuper"] or row["rolcreatedb"]):
            return "the role may not create databases"
        return None
    finally:
        await conn.close()


def probe(dsn: str, timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """Synchronous :func:`_probe`: None when usable, otherwise the reason."""
    return run_sync(lambda: _probe(dsn, timeout))


def embedded_temp_dir() -> Path:
    """A new directory for a throwaway embedded server; the caller removes it.

    Not under pytest's ``tmp_path``: as root, pgserver runs PostgreSQL as the ``pgserver``
    user, which must traverse every parent directory, and each pytest session started as
    root resets ``/tmp/pytest-of-root`` to mode 0700. A second pytest run on the same
    machine (another developer, another worktree) would then cut a running test's server
    off from its own data directory. ``/tmp`` itself stays world-traversable.
    """
    return Path(tempfile.mkdtemp(prefix="evtrack-test-pg-"))


def start_embedded_for_tests(data_dir: Path) -> SessionPostgres:
    """Start a throwaway embedded server tuned for tests.

    Durability is switched off (``fsync``, ``synchronous_commit``, ``full_page_writes``):
    the data dies with the session, and tests that create a database each run much faster.
    ``max_connections`` is raised because tests start several server processes, each with a
    connection pool; that setting needs a restart, done once here.
    """
    from evtrack._embedded_postgres import start_embedded_postgres

    pg = start_embedded_postgres(data_dir)
    try:

        async def tune() -> None:
            conn = await asyncpg.connect(pg.admin_dsn, timeout=30)
            try:
                for setting, value in (
                    ("fsync", "off"),
                    ("synchronous_commit", "off"),
                    ("full_page_writes", "off"),
                    ("max_connections", "300"),
                ):
                    await conn.execute(f"ALTER SYSTEM SET {setting} = '{value}'")
            finally:
                await conn.close()

        run_sync(tune)
    finally:
        pg.stop()
    pg = start_embedded_postgres(data_dir)  # restart: max_connections takes effect
    return SessionPostgres(
        admin_dsn=pg.admin_dsn,
        description=f"embedded pgserver in {data_dir} (pid {pg.pid})",
        embedded=pg,
    )


def choose_test_postgres() -> SessionPostgres:
    """Pick the session's PostgreSQL (see the module docstring for the order)."""
    explicit = os.environ.get("EVTRACK_TEST_POSTGRES_DSN")
    if explicit:
        reason = probe(explicit, timeout=10.0)
        if reason is not None:
            raise RuntimeError(f"EVTRACK_TEST_POSTGRES_DSN={explicit} is not usable: {reason}")
        return SessionPostgres(explicit, f"EVTRACK_TEST_POSTGRES_DSN ({redact(explicit)})")

    if env_flag("EVTRACK_TEST_FORCE_EMBEDDED"):
        why = "EVTRACK_TEST_FORCE_EMBEDDED is set"
    else:
        reason = probe(LOCAL_ADMIN_DSN)
        if reason is None:
            return SessionPostgres(LOCAL_ADMIN_DSN, f"local service at {LOCAL_ADMIN_DSN}")
        why = f"{LOCAL_ADMIN_DSN} is not usable ({reason})"
    log.info("%s; starting an embedded PostgreSQL", why)
    temp_dir = embedded_temp_dir()
    try:
        chosen = start_embedded_for_tests(temp_dir / "pgdata")
    except BaseException:
        shutil.rmtree(temp_dir, ignore_errors=True)
        raise
    chosen.temp_dir = temp_dir
    chosen.description += f"; {why}"
    return chosen


def redact(dsn: str) -> str:
    """``dsn`` with any password replaced, for log lines."""
    parts = urlsplit(dsn)
    if parts.password is None:
        return dsn
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def dsn_for_database(admin_dsn: str, database: str) -> str:
    """``admin_dsn`` pointed at ``database`` (host, port, user and socket query unchanged)."""
    return urlunsplit(urlsplit(admin_dsn)._replace(path=f"/{database}"))


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def new_database_name() -> str:
    """A unique name, recognisable as a test's: ``evtrack_test_<12 hex digits>``."""
    return f"{TEST_DATABASE_PREFIX}{secrets.token_hex(6)}"


def create_database(admin_dsn: str, name: str | None = None) -> str:
    """Create a database and return its DSN."""
    name = name or new_database_name()

    async def create() -> None:
        conn = await asyncpg.connect(admin_dsn, timeout=30)
        try:
            await conn.execute(f"CREATE DATABASE {quote_ident(name)}")
        finally:
            await conn.close()

    run_sync(create)
    return dsn_for_database(admin_dsn, name)


def drop_database(admin_dsn: str, name: str) -> None:
    """Drop a database, first terminating whatever is still connected to it."""

    async def drop() -> None:
        conn = await asyncpg.connect(admin_dsn, timeout=30)
        try:
            # Keep new sessions out, then end the ones there (a server a test killed may
            # leave a pool behind for a moment); WITH (FORCE) covers any that slip in.
            await conn.execute(f"ALTER DATABASE {quote_ident(name)} WITH ALLOW_CONNECTIONS false")
            await conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = $1 AND pid <> pg_backend_pid()",
                name,
            )
            await conn.execute(f"DROP DATABASE IF EXISTS {quote_ident(name)} WITH (FORCE)")
        except asyncpg.InvalidCatalogNameError:
            pass  # already gone
        finally:
            await conn.close()

    run_sync(drop)


def database_name(dsn: str) -> str:
    """The database a DSN names."""
    return urlsplit(dsn).path.lstrip("/")


@contextlib.contextmanager
def private_embedded_postgres() -> Iterator[tuple[Path, list[EmbeddedPostgres]]]:
    """A PostgreSQL of one test's own, which it may stop and start (the shared one, never):
    its data directory and the handles started on it (a test appends the ones it restarts);
    every handle still running is stopped at the end and the directory removed."""
    from evtrack._embedded_postgres import start_embedded_postgres

    root = embedded_temp_dir()
    handles = [start_embedded_postgres(root / "pg")]
    try:
        yield root / "pg", handles
    finally:
        for handle in handles:
            if not handle.stopped:
                handle.stop()
        shutil.rmtree(root, ignore_errors=True)

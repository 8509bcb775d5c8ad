"""Fixtures for the search tests: a throwaway PostgreSQL database with the read-model schemas,
and a reference MLflow store (SQLite, in process) holding the same runs and experiments as the
read models (sample data in ``_search_support.py``).

The database is created with an ICU ``en-US`` default collation when the server supports it:
under that collation ``'alpha' < 'Beta'``, so any text ordering that forgot ``COLLATE "C"`` shows
up as a mismatch with MLflow (whose SQLite store orders by code point).
"""

from __future__ import annotations

import os
import secrets
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
from _search_support import Reference, SearchDb, build_reference, mirror

_REPO = Path(__file__).resolve().parents[2]
_DEFAULT_ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"


def _with_database(dsn: str, name: str) -> str:
    """``dsn`` pointing at database ``name`` (same server and credentials)."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path=f"/{name}"))


@pytest.fixture(scope="session")
def search_admin_dsn(request: pytest.FixtureRequest) -> str:
    """Superuser DSN: the shared ``postgres_admin_dsn`` fixture when the suite has one (it can
    fall back to an embedded server), else ``EVTRACK_TEST_POSTGRES_DSN`` or the local service."""
    try:
        return str(request.getfixturevalue("postgres_admin_dsn"))
    except pytest.FixtureLookupError:
        return os.environ.get("EVTRACK_TEST_POSTGRES_DSN", _DEFAULT_ADMIN_DSN)


async def _create_database(admin: asyncpg.Connection, name: str) -> bool:
    """Create ``name``; True if it got the ICU collation that makes ordering bugs visible."""
    try:
        await admin.execute(
            f'CREATE DATABASE "{name}" TEMPLATE template0 '
            "LOCALE_PROVIDER icu ICU_LOCALE 'en-US' LOCALE 'C.UTF-8'"
        )
        return True
    except asyncpg.PostgresError:
        await admin.execute(f'CREATE DATABASE "{name}"')
        return False


@pytest.fixture(scope="session")
async def search_db(search_admin_dsn: str) -> AsyncIterator[SearchDb]:
    """A fresh database with the rm_runs / rm_experiments schemas, dropped at the end."""
    name = f"evtrack_search_test_{secrets.token_hex(6)}"
    admin = await asyncpg.connect(search_admin_dsn)
    try:
        icu = await _create_database(admin, name)
        conn = await asyncpg.connect(_with_database(search_admin_dsn, name))
        try:
            for schema, path in [
                ("rm_runs", _REPO / "projections" / "runs" / "schema.sql"),
                ("rm_experiments", _REPO / "projections" / "experiments" / "schema.sql"),
            ]:
                await conn.execute(
                    f"CREATE SCHEMA {schema}; SET search_path TO {schema};\n" + path.read_text()
                )
            await conn.execute("SET search_path TO public")
            yield SearchDb(conn, icu)
        finally:
            await conn.close()
    finally:
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


@pytest.fixture(scope="session")
def reference() -> Iterator[Reference]:
    """MLflow's own SQLite store with the sample runs and experiments."""
    pytest.importorskip("mlflow")
    with tempfile.TemporaryDirectory(prefix="evtrack-search-ref-") as tmp:
        yield build_reference(Path(tmp))


@pytest.fixture(scope="session")
async def mirrored(search_db: SearchDb, reference: Reference) -> Reference:
    """The reference data, also present in the Postgres read models."""
    await mirror(search_db.conn, reference)
    return reference

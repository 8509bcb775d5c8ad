"""Fixtures for the search tests: a throwaway PostgreSQL database with the read-model schemas,
and reference MLflow stores (SQLite, in process) holding the same runs and experiments
(``_search_support.py``), and the same registry and logged models (``_registry_support.py``),
as the read models.

The database is created with an ICU ``en-US`` default collation when the server supports it:
under that collation ``'alpha' < 'Beta'``, so any text ordering that forgot ``COLLATE "C"`` shows
up as a mismatch with MLflow (whose SQLite store orders by code point).
"""

from __future__ import annotations

import os
import secrets
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest

# The sample-data modules sit next to this file and are imported by plain name; that works
# whether or not this directory is a package (``__init__.py``) under pytest's import mode.
_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

from _registry_support import (  # noqa: E402
    RegistryReference,
    build_registry_reference,
    mirror_logged_models,
    mirror_registry,
)
from _search_support import Reference, SearchDb, build_reference, mirror  # noqa: E402

_REPO = Path(__file__).resolve().parents[2]
_DEFAULT_ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"


def _registry_schema() -> Path:
    """The registry projection's schema (its folder was renamed registry -> model_registry)."""
    for folder in ("model_registry", "registry"):
        path = _REPO / "projections" / folder / "schema.sql"
        if path.exists():
            return path
    raise FileNotFoundError("projections/model_registry/schema.sql")


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
    """A fresh database with the rm_runs, rm_experiments, rm_registry and rm_logged_models
    schemas, dropped at the end."""
    name = f"evtrack_search_test_{secrets.token_hex(6)}"
    admin = await asyncpg.connect(search_admin_dsn)
    try:
        icu = await _create_database(admin, name)
        conn = await asyncpg.connect(_with_database(search_admin_dsn, name))
        try:
            for schema, path in [
                ("rm_runs", _REPO / "projections" / "runs" / "schema.sql"),
                ("rm_experiments", _REPO / "projections" / "experiments" / "schema.sql"),
                ("rm_registry", _registry_schema()),
                ("rm_logged_models", _REPO / "projections" / "logged_models" / "schema.sql"),
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
    with tempfile.TemporaryDirectory(prefix="evtrack-search-ref-") as tmp:
        yield build_reference(Path(tmp))


@pytest.fixture(scope="session")
async def mirrored(search_db: SearchDb, reference: Reference) -> Reference:
    """The reference data, also present in the Postgres read models."""
    await mirror(search_db.conn, reference)
    return reference


@pytest.fixture(scope="session")
def registry_reference() -> Iterator[RegistryReference]:
    """MLflow's own SQLite tracking and registry stores with the sample registry and models."""
    with tempfile.TemporaryDirectory(prefix="evtrack-search-registry-ref-") as tmp:
        yield build_registry_reference(Path(tmp))


@pytest.fixture(scope="session")
async def registry_mirrored(
    search_db: SearchDb, registry_reference: RegistryReference
) -> RegistryReference:
    """The reference registry and logged models, also present in the Postgres read models."""
    await mirror_registry(search_db.conn, registry_reference)
    await mirror_logged_models(search_db.conn, registry_reference)
    return registry_reference

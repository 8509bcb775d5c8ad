"""A small versioned migration runner for the event-log schema.

Migrations are the numbered ``migrations/NNNN_*.sql`` files shipped in the package, applied in
order, each in its own transaction, under an advisory lock so that several servers starting at
once apply each migration exactly once.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

from evtrack.eventlog._db import Conn

_LOCK_KEY = 0x65767472  # "evtr": serialises concurrent upgraders


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def available_migrations() -> list[Migration]:
    found = []
    for entry in resources.files("evtrack.eventlog").joinpath("migrations").iterdir():
        if entry.name.endswith(".sql"):
            number, _, rest = entry.name.partition("_")
            found.append(Migration(int(number), rest.removesuffix(".sql"), entry.read_text()))
    return sorted(found, key=lambda m: m.version)


async def applied_versions(conn: Conn) -> set[int]:
    exists = await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
    if not exists:
        return set()
    return {row[0] for row in await conn.fetch("SELECT version FROM schema_migrations")}


async def upgrade(conn: Conn) -> list[Migration]:
    """Apply every migration not yet applied; return the ones this call applied."""
    applied: list[Migration] = []
    await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_KEY)
    try:
        await conn.execute(
            """CREATE TABLE IF NOT EXISTS schema_migrations (
                   version    integer PRIMARY KEY,
                   name       text NOT NULL,
                   applied_at timestamptz NOT NULL DEFAULT now())"""
        )
        done = await applied_versions(conn)
        for migration in available_migrations():
            if migration.version in done:
                continue
            async with conn.transaction():
                await conn.execute(migration.sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                    migration.version,
                    migration.name,
                )
            applied.append(migration)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_KEY)
    return applied

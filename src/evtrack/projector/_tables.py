"""The projector's own tables: checkpoints and parked events.

They are the projector's bookkeeping, not the log's, so this package creates them (the log
knows nothing of its readers). ``projection_checkpoints`` was first created by the event
log's migration 0001, which stays as history; creating it here too is a no-op there and
makes a database whose log was set up another way complete. Both tables live next to the
``events`` table (whatever the caller's ``search_path`` is at the time).
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import Any

import asyncpg

from evtrack.eventlog import Conn, LogPosition

CHECKPOINT_CURSOR_SQL = """SELECT transaction_id AS tx, global_position AS gp
    FROM projection_checkpoints WHERE name = $1 FOR UPDATE"""
"""The projector's cursor into the log: its checkpoint row, locked until the transaction that
applies the page after it (and moves it) commits, so no two owners apply one page twice."""

_TABLES_SQL = """
CREATE TABLE IF NOT EXISTS "{schema}".projection_checkpoints (
    name            text        PRIMARY KEY,
    transaction_id  xid8        NOT NULL DEFAULT '0',
    global_position bigint      NOT NULL DEFAULT 0,
    schema_hash     text        NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now()
);
-- Events a projection could not apply and stepped over (see _parking.py); its checkpoint is
-- past them. Keyed by checkpoint name, so a rebuild's shadow has its own until the swap.
CREATE TABLE IF NOT EXISTS "{schema}".parked_events (
    projection      text        NOT NULL,
    transaction_id  xid8        NOT NULL,
    global_position bigint      NOT NULL,
    stream_id       text        NOT NULL,
    event_type      text        NOT NULL,
    error           text        NOT NULL,
    first_parked_at timestamptz NOT NULL DEFAULT now(),
    last_attempt_at timestamptz NOT NULL DEFAULT now(),
    attempts        integer     NOT NULL DEFAULT 1,
    PRIMARY KEY (projection, transaction_id, global_position)
);
"""

_TABLES_LOCK = zlib.crc32(b"evtrack-projector-tables")


async def ensure_tables(conn: Conn) -> None:
    """Create the projector's tables if they are missing (idempotent, safe to race)."""
    present = await conn.fetchval(
        """SELECT to_regclass('projection_checkpoints') IS NOT NULL
                  AND to_regclass('parked_events') IS NOT NULL"""
    )
    if present:
        return
    async with conn.transaction():
        # CREATE TABLE IF NOT EXISTS is not safe against a concurrent creator.
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _TABLES_LOCK)
        schema = await conn.fetchval(
            """SELECT COALESCE(
                   (SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                    WHERE c.oid = to_regclass('events')),
                   current_schema())"""
        )
        await conn.execute(_TABLES_SQL.format(schema=schema.replace('"', '""')))


async def checkpoint_position(conn: Conn, name: str) -> LogPosition | None:
    row = await conn.fetchrow(
        "SELECT transaction_id, global_position FROM projection_checkpoints WHERE name = $1", name
    )
    return None if row is None else LogPosition(row["transaction_id"], row["global_position"])


async def read_checkpoints(
    conn: Conn | asyncpg.Pool[Any], names: Sequence[str]
) -> dict[str, LogPosition]:
    """Where each of ``names`` has got (names without a checkpoint are left out)."""
    rows = await conn.fetch(
        """SELECT name, transaction_id, global_position FROM projection_checkpoints
           WHERE name = ANY($1::text[])""",
        list(names),
    )
    return {r["name"]: LogPosition(r["transaction_id"], r["global_position"]) for r in rows}


async def checkpoint_rows(conn: Conn) -> dict[str, asyncpg.Record]:
    """Every checkpoint row (name, position, schema_hash, updated_at), for status reports."""
    return {r["name"]: r for r in await conn.fetch("SELECT * FROM projection_checkpoints")}

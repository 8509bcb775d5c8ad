"""The event log as an archive: read it out whole, and load it into an empty database.

An archive holds the events, each with its stream, position, type, schema version, stored
payload, actor, metadata and recording time, in log order; and the write side's bookkeeping
that goes with them (stream heads with their snapshots, unique names, the experiment id
sequence). Idempotency keys are not part of it: they are answers to requests of the past.
Read models are not either: they are folds of the log, which projectors rebuild.

Reading happens in one repeatable-read snapshot, so the events and the heads agree even
while servers write. Loading keeps the order (each batch is one transaction, so the new
transaction ids follow the archive's order) and every field but the position in the log,
which the new database numbers itself.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from evtrack.eventlog._db import Conn


class ArchivedEvent(msgspec.Struct, frozen=True, array_like=True):
    stream_id: str
    stream_position: int
    event_type: str
    schema_version: int
    payload: bytes
    actor: str
    metadata: dict[str, Any]
    recorded_at_us: int  # microseconds since the epoch, UTC


class StreamHeadRow(msgspec.Struct, frozen=True, array_like=True):
    stream_id: str
    version: int
    state: bytes | None


class NameRow(msgspec.Struct, frozen=True, array_like=True):
    scope: str
    name: str
    owner: str


class WriteModel(msgspec.Struct, frozen=True):
    streams: list[StreamHeadRow]
    names: list[NameRow]
    sequences: dict[str, int]


SEQUENCES = ("experiment_ids",)

_EPOCH_US = "(extract(epoch FROM recorded_at) * 1000000)::bigint"


@dataclass
class LogReader:
    """The log of one snapshot: ``events()`` in log order, then ``write_model()``."""

    conn: Conn
    page_size: int = 2000

    async def count(self) -> int:
        n: int = await self.conn.fetchval("SELECT count(*) FROM events")
        return n

    async def events(self) -> AsyncIterator[list[ArchivedEvent]]:
        after: tuple[Any, int] | None = None
        while True:
            rows = await self.conn.fetch(
                f"""SELECT transaction_id, global_position, stream_id, stream_position,
                           event_type, schema_version, payload, actor, metadata::text AS meta,
                           {_EPOCH_US} AS at_us
                    FROM events
                    WHERE $1::xid8 IS NULL OR (transaction_id, global_position) > ($1, $2)
                    ORDER BY transaction_id, global_position
                    LIMIT $3""",
                None if after is None else after[0],
                0 if after is None else after[1],
                self.page_size,
            )
            if not rows:
                return
            after = (rows[-1]["transaction_id"], rows[-1]["global_position"])
            yield [
                ArchivedEvent(
                    r["stream_id"],
                    r["stream_position"],
                    r["event_type"],
                    r["schema_version"],
                    bytes(r["payload"]),
                    r["actor"],
                    msgspec.json.decode(r["meta"]),
                    r["at_us"],
                )
                for r in rows
            ]

    async def write_model(self) -> WriteModel:
        streams = await self.conn.fetch(
            "SELECT stream_id, version, state FROM streams ORDER BY stream_id"
        )
        names = await self.conn.fetch(
            "SELECT scope, name, owner FROM unique_names ORDER BY scope, name"
        )
        sequences = {}
        for sequence in SEQUENCES:
            value = await self.conn.fetchval(
                """SELECT COALESCE(last_value, 0) FROM pg_sequences
                   WHERE sequencename = $1 AND schemaname = current_schema()""",
                sequence,
            )
            sequences[sequence] = int(value or 0)
        return WriteModel(
            [StreamHeadRow(r["stream_id"], r["version"], r["state"]) for r in streams],
            [NameRow(r["scope"], r["name"], r["owner"]) for r in names],
            sequences,
        )


async def last_restored(conn: Conn) -> tuple[int, tuple[str, int, bytes, int] | None]:
    """How many events the log holds, and the stream, position, payload and recording time
    of its last one in log order: a load cut short is told from a database with a log of
    its own by that event being the archive's event at the same place."""
    count: int = await conn.fetchval("SELECT count(*) FROM events")
    row = await conn.fetchrow(
        f"""SELECT stream_id, stream_position, payload, {_EPOCH_US} AS at_us FROM events
            ORDER BY transaction_id DESC, global_position DESC LIMIT 1"""
    )
    if row is None:
        return count, None
    return count, (row["stream_id"], row["stream_position"], bytes(row["payload"]), row["at_us"])


async def append_archived(conn: Conn, events: Sequence[ArchivedEvent]) -> None:
    """Append ``events`` in one transaction, in their order, as they were recorded."""
    if not events:
        return
    async with conn.transaction():
        await conn.execute(
            """INSERT INTO events (stream_id, stream_position, event_type, schema_version,
                                   payload, actor, metadata, recorded_at)
               SELECT s, p, t, v, b, a, m::jsonb, to_timestamp(at_us / 1000000.0)
               FROM unnest($1::text[], $2::bigint[], $3::text[], $4::int2[], $5::bytea[],
                           $6::text[], $7::text[], $8::bigint[])
                    WITH ORDINALITY AS x(s, p, t, v, b, a, m, at_us, ord)
               ORDER BY ord""",
            [e.stream_id for e in events],
            [e.stream_position for e in events],
            [e.event_type for e in events],
            [e.schema_version for e in events],
            [e.payload for e in events],
            [e.actor for e in events],
            [msgspec.json.encode(e.metadata).decode() for e in events],
            [e.recorded_at_us for e in events],
        )


async def restore_write_model(conn: Conn, model: WriteModel) -> None:
    """Stream heads, unique names and sequences as archived, in one transaction."""
    async with conn.transaction():
        await conn.execute(
            """INSERT INTO streams (stream_id, version, state)
               SELECT * FROM unnest($1::text[], $2::bigint[], $3::bytea[])
               ON CONFLICT (stream_id) DO UPDATE
               SET version = excluded.version, state = excluded.state""",
            [s.stream_id for s in model.streams],
            [s.version for s in model.streams],
            [s.state for s in model.streams],
        )
        await conn.execute(
            """INSERT INTO unique_names (scope, name, owner)
               SELECT * FROM unnest($1::text[], $2::text[], $3::text[])
               ON CONFLICT (scope, name) DO UPDATE SET owner = excluded.owner""",
            [n.scope for n in model.names],
            [n.name for n in model.names],
            [n.owner for n in model.names],
        )
        for sequence, value in model.sequences.items():
            if sequence in SEQUENCES and value > 0:
                await conn.execute("SELECT setval($1::regclass, $2::bigint)", sequence, value)

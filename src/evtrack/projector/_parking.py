"""Parking: a projection steps over an event it cannot apply instead of stopping.

A batch normally applies in one plain transaction. When it fails because of one of its
events (a handler bug, an old event no read model can hold), the runtime rolls back and
applies the page again in :func:`apply_isolating`: halves within savepoints, down to the
events that fail on their own, which are recorded in ``parked_events`` in the same
transaction that applies the rest and moves the checkpoint past all of them. Exactly-once
holds for what is applied, and the read model is the fold of the log minus the parked
events, until :func:`retry_parked` applies them (or a rebuild replays everything).

Failures that are not the event's fault (connection loss, a schema swapped by a rebuild,
deadlocks, a missing table) are not parked: the batch is retried as a whole.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg
import structlog

from evtrack.eventlog import Conn, LogPosition, RecordedEvent, read_positions
from evtrack.projector._projection import Projection
from evtrack.projector._tables import ensure_tables

log = structlog.get_logger("evtrack.projector")

_NOT_THE_EVENTS_FAULT: tuple[type[BaseException], ...] = (
    OSError,  # includes TimeoutError
    asyncio.CancelledError,
    asyncpg.InterfaceError,  # connection closed or in a bad state
    asyncpg.InternalClientError,
    asyncpg.PostgresConnectionError,  # 08
    asyncpg.InvalidCachedStatementError,  # a rebuild swapped the schema under prepared statements
    asyncpg.TransactionRollbackError,  # 40: deadlock, serialization failure
    asyncpg.InsufficientResourcesError,  # 53: disk full, out of memory, too many connections
    asyncpg.OperatorInterventionError,  # 57: cancelled, admin shutdown
    asyncpg.PostgresSystemError,  # 58: I/O error
    asyncpg.LockNotAvailableError,
    asyncpg.SyntaxOrAccessError,  # 42: missing table or column, privileges: the schema's fault
    asyncpg.InternalServerError,  # XX
)


def is_parkable(exc: BaseException) -> bool:
    """Whether ``exc`` may be caused by the event being applied (then park, else retry)."""
    return isinstance(exc, Exception) and not isinstance(exc, _NOT_THE_EVENTS_FAULT)


def describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


@dataclass(frozen=True, slots=True)
class Parked:
    """An event a projection stepped over, and why."""

    projection: str
    position: LogPosition
    stream_id: str
    event_type: str
    error: str
    first_parked_at: datetime | None = None
    attempts: int = 1


async def apply_isolating(
    conn: Conn, projection: Projection, records: Sequence[RecordedEvent], *, known_bad: bool
) -> list[tuple[RecordedEvent, BaseException]]:
    """Apply ``records`` in log order, each part within a savepoint, and return the events
    that fail on their own (with their error), applying everything else.

    Bisection keeps the cost near two re-applications of the page for one bad event, and
    preserves order: a left half is finished before its right half starts. ``known_bad``
    skips the first try of the whole (it just failed). Errors that are not the event's
    fault propagate (see :func:`is_parkable`).
    """
    relevant = [r for r in records if r.event is not None or r.decode_error is not None]
    failed: list[tuple[RecordedEvent, BaseException]] = []
    await _isolate(conn, projection, relevant, known_bad, failed)
    return failed


async def _isolate(
    conn: Conn,
    projection: Projection,
    records: Sequence[RecordedEvent],
    known_bad: bool,
    failed: list[tuple[RecordedEvent, BaseException]],
) -> None:
    if not records:
        return
    if not known_bad or len(records) == 1:
        try:
            async with conn.transaction():  # a savepoint
                await projection.apply(conn, records)
            return
        except Exception as exc:
            if not is_parkable(exc):
                raise
            if len(records) == 1:
                failed.append((records[0], exc))
                return
    mid = len(records) // 2
    await _isolate(conn, projection, records[:mid], False, failed)
    await _isolate(conn, projection, records[mid:], False, failed)


async def park(
    conn: Conn, checkpoint: str, failed: Sequence[tuple[RecordedEvent, BaseException]]
) -> list[Parked]:
    """Record ``failed`` as parked for ``checkpoint`` (in the caller's transaction)."""
    parked = [
        Parked(checkpoint, r.position, r.stream_id, r.event_type, describe(exc))
        for r, exc in failed
    ]
    if parked:
        await conn.executemany(
            """INSERT INTO parked_events AS p
                   (projection, transaction_id, global_position, stream_id, event_type, error)
               VALUES ($1, $2, $3, $4, $5, $6)
               ON CONFLICT (projection, transaction_id, global_position) DO UPDATE
               SET error = excluded.error, attempts = p.attempts + 1, last_attempt_at = now()""",
            [
                (
                    p.projection,
                    p.position.transaction_id,
                    p.position.global_position,
                    p.stream_id,
                    p.event_type,
                    p.error,
                )
                for p in parked
            ],
        )
    return parked


def log_parked(parked: Sequence[Parked]) -> None:
    """Once per parked event, after the transaction that parked it committed."""
    for p in parked:
        log.error(
            "projector.event_parked",
            projection=p.projection,
            global_position=p.position.global_position,
            transaction_id=p.position.transaction_id,
            stream_id=p.stream_id,
            event_type=p.event_type,
            error=p.error,
        )


async def list_parked(conn: Conn, name: str | None = None) -> list[Parked]:
    """Parked events (of projection ``name``, or all), by projection and in log order."""
    rows = await conn.fetch(
        """SELECT * FROM parked_events WHERE $1::text IS NULL OR projection = $1
           ORDER BY projection, transaction_id, global_position""",
        name,
    )
    return [_from_row(r) for r in rows]


async def parked_counts(conn: Conn) -> dict[str, int]:
    rows = await conn.fetch("SELECT projection, count(*) FROM parked_events GROUP BY projection")
    return {r[0]: r[1] for r in rows}


async def recent_parked(conn: Conn, limit: int) -> list[Parked]:
    """The ``limit`` events parked last (newest first): what a status page lists as errors."""
    rows = await conn.fetch(
        """SELECT * FROM parked_events
           ORDER BY first_parked_at DESC, transaction_id DESC, global_position DESC
           LIMIT $1""",
        limit,
    )
    return [_from_row(r) for r in rows]


@dataclass(frozen=True, slots=True)
class RetryOutcome:
    applied: list[Parked]
    still_parked: list[Parked]


async def retry_parked(conn: Conn, projection: Projection) -> RetryOutcome:
    """Apply ``projection``'s parked events again, in log order, in its live schema.

    Those that apply now leave ``parked_events``; the others stay, with one more attempt and
    their new error. All in one transaction holding the projection's checkpoint row, so the
    live projector (in whichever process) waits for it between two of its batches and a
    rebuild cannot swap the schema midway.

    Each parked event is applied *after* the later events the projection already applied:
    the read model then is what that order gives, e.g. a tag set by a parked event overwrites
    a later value of the same tag. A rebuild gives the fold in log order.
    """
    await ensure_tables(conn)
    applied: list[Parked] = []
    still: list[Parked] = []
    async with conn.transaction():
        installed = await conn.fetchval(
            "SELECT 1 FROM projection_checkpoints WHERE name = $1 FOR UPDATE", projection.name
        )
        if installed is None:
            raise LookupError(f"projection {projection.name} is not installed")
        rows = await conn.fetch(
            """SELECT * FROM parked_events WHERE projection = $1
               ORDER BY transaction_id, global_position FOR UPDATE""",
            projection.name,
        )
        if not rows:
            return RetryOutcome([], [])
        parked = {r["global_position"]: _from_row(r) for r in rows}
        records = await read_positions(
            conn, list(parked), sorted(projection.event_types), lenient=True
        )
        await conn.execute(f'SET LOCAL search_path TO "{projection.schema_name}", public')
        for record in records:
            entry = parked[record.position.global_position]
            try:
                async with conn.transaction():
                    await projection.apply(conn, [record])
            except Exception as exc:
                if not is_parkable(exc):
                    raise
                error = describe(exc)
                attempts = await conn.fetchval(
                    """UPDATE parked_events
                       SET attempts = attempts + 1, error = $4, last_attempt_at = now()
                       WHERE projection = $1 AND transaction_id = $2 AND global_position = $3
                       RETURNING attempts""",
                    projection.name,
                    record.position.transaction_id,
                    record.position.global_position,
                    error,
                )
                still.append(
                    Parked(
                        entry.projection,
                        entry.position,
                        entry.stream_id,
                        entry.event_type,
                        error,
                        entry.first_parked_at,
                        attempts,
                    )
                )
                continue
            await conn.execute(
                """DELETE FROM parked_events
                   WHERE projection = $1 AND transaction_id = $2 AND global_position = $3""",
                projection.name,
                record.position.transaction_id,
                record.position.global_position,
            )
            applied.append(entry)
    return RetryOutcome(applied, still)


def _from_row(r: asyncpg.Record) -> Parked:
    return Parked(
        r["projection"],
        LogPosition(r["transaction_id"], r["global_position"]),
        r["stream_id"],
        r["event_type"],
        r["error"],
        r["first_parked_at"],
        r["attempts"],
    )

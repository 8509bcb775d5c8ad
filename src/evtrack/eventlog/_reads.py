"""Reading the event log in PostgreSQL: in log order below the read horizon, by stream, and
the few counts operators ask for. Every read of the ``events`` table lives here."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeAlias

import asyncpg

from evtrack.eventlog._db import Conn
from evtrack.eventlog._positions import LOG_START, LogPosition
from evtrack.eventlog._records import RecordedEvent, record_from_row

Executor: TypeAlias = "Conn | asyncpg.Pool[Any]"
"""A connection or a pool: one-statement reads need no transaction of their own."""

_RECORD_COLUMNS = (
    "transaction_id, global_position, stream_id, stream_position, event_type, "
    "schema_version, actor, metadata, recorded_at"
)


_HORIZON = """SELECT CASE
    WHEN EXISTS (
        SELECT 1 FROM events AS later
        WHERE (later.transaction_id, later.global_position)
              > ((SELECT tx FROM log_cursor), (SELECT gp FROM log_cursor))
          AND later.transaction_id >= pg_snapshot_xmin(pg_current_snapshot()))
    THEN log_read_horizon()
    ELSE pg_snapshot_xmin(pg_current_snapshot())
END"""
"""The read bound: the cheap cluster-wide one, unless it is what holds the reader back; then
the one that ignores other databases' transactions (see migration 0002), which costs a look
at pg_stat_activity."""


def _page_query(cursor_sql: str, n_args: int, *, typed: bool, bounded: bool) -> str:
    """The next page of the log after the position ``cursor_sql`` selects (as ``tx, gp``).

    Parameters after the cursor's ``n_args``: the row limit, then the payload types (when
    ``typed``), then the byte bound (when ``bounded``). Every row carries ``page_rows``, how
    many rows the page had before the byte bound cut it.
    """
    limit = f"${n_args + 1}"
    payload = (
        f"CASE WHEN event_type = ANY(${n_args + 2}::text[]) THEN payload END AS payload"
        if typed
        else "payload"
    )
    page = f"""SELECT {_RECORD_COLUMNS}, {payload} FROM events
        WHERE (transaction_id, global_position)
              > ((SELECT tx FROM log_cursor), (SELECT gp FROM log_cursor))
          AND transaction_id < ({_HORIZON})
        ORDER BY transaction_id, global_position
        LIMIT {limit}"""
    if not bounded:
        return f"WITH log_cursor AS ({cursor_sql}) SELECT *, 0 AS page_rows FROM ({page}) AS page"
    max_bytes = f"${n_args + 2 + typed}"
    # octet_length of a TOASTed value reads its header only; payloads are not fetched for the
    # rows the bound cuts off.
    return f"""WITH log_cursor AS ({cursor_sql})
        SELECT {_RECORD_COLUMNS}, payload, page_rows FROM (
            SELECT *, sum(COALESCE(octet_length(payload), 0)) OVER (
                       ORDER BY transaction_id, global_position) AS running,
                   count(*) OVER () AS page_rows
            FROM ({page}) AS page) AS sized
        WHERE running - COALESCE(octet_length(payload), 0) < {max_bytes}
        ORDER BY transaction_id, global_position"""


@dataclass(frozen=True, slots=True)
class LogPage:
    records: list[RecordedEvent]
    more: bool  # the page was cut by its limits: read again without waiting


async def _read_page(
    conn: Conn,
    cursor_sql: str,
    cursor_args: Sequence[Any],
    limit: int,
    payload_types: Sequence[str] | None,
    max_payload_bytes: int | None,
    *,
    lenient: bool = False,
) -> LogPage:
    args: tuple[Any, ...] = (*cursor_args, limit)
    if payload_types is not None:
        args = (*args, list(payload_types))
    if max_payload_bytes is not None:
        args = (*args, max_payload_bytes)
    query = _page_query(
        cursor_sql,
        len(cursor_args),
        typed=payload_types is not None,
        bounded=max_payload_bytes is not None,
    )
    rows = await conn.fetch(query, *args)
    page_rows = rows[0]["page_rows"] if rows else 0
    more = len(rows) >= limit or (max_payload_bytes is not None and len(rows) < page_rows)
    return LogPage([record_from_row(r, lenient=lenient) for r in rows], more)


async def read_after(
    conn: Conn,
    after: LogPosition,
    limit: int,
    payload_types: Sequence[str] | None,
    *,
    max_payload_bytes: int | None = None,
) -> list[RecordedEvent]:
    """Events after ``after`` in log order, from transactions that can no longer be joined.

    Only events of transactions older than every transaction still running are returned
    (invariant 2): a transaction that inserted earlier but commits later is therefore read
    once it commits, in its place, never skipped. Payloads are fetched only for
    ``payload_types`` (all when None); other events come back with ``event=None`` so the
    reader's cursor can still move past them. ``max_payload_bytes`` also bounds the batch by
    the stored size of the payloads it fetches (at least one event is always returned): a
    thousand million-point ingest events must not arrive in one batch.
    """
    page = await _read_page(
        conn,
        "SELECT $1::xid8 AS tx, $2::bigint AS gp",
        (after.transaction_id, after.global_position),
        limit,
        payload_types,
        max_payload_bytes,
    )
    return page.records


async def read_after_cursor(
    conn: Conn,
    cursor_sql: str,
    cursor_args: Sequence[Any],
    limit: int,
    payload_types: Sequence[str] | None,
    *,
    max_payload_bytes: int | None = None,
    lenient: bool = False,
) -> LogPage:
    """Like :func:`read_after`, from a position that ``cursor_sql`` selects in the same
    statement (one round trip), so a reader that keeps its cursor in a table can lock that
    row and read the page after it at once.

    ``cursor_sql`` is a query returning one row with columns ``tx`` (xid8) and ``gp``
    (bigint), using ``$1 .. $n`` for ``cursor_args``; e.g. ``SELECT transaction_id AS tx,
    global_position AS gp FROM my_cursors WHERE name = $1 FOR UPDATE``. The log knows
    nothing of whose cursor it is. With ``lenient``, an event whose payload does not decode
    comes back with ``decode_error`` set instead of raising (see :func:`record_from_row`).
    """
    return await _read_page(
        conn,
        cursor_sql,
        cursor_args,
        limit,
        payload_types,
        max_payload_bytes,
        lenient=lenient,
    )


async def read_positions(
    conn: Conn,
    global_positions: Sequence[int],
    payload_types: Sequence[str] | None,
    *,
    lenient: bool = False,
) -> list[RecordedEvent]:
    """The events at ``global_positions`` (those that exist), in log order; payloads as for
    :func:`read_after`. For going back to events a reader set aside."""
    payload = (
        "CASE WHEN event_type = ANY($2::text[]) THEN payload END AS payload"
        if payload_types is not None
        else "payload"
    )
    args: list[Any] = [list(global_positions)]
    if payload_types is not None:
        args.append(list(payload_types))
    rows = await conn.fetch(
        f"""SELECT {_RECORD_COLUMNS}, {payload} FROM events
            WHERE global_position = ANY($1::bigint[])
            ORDER BY transaction_id, global_position""",
        *args,
    )
    return [record_from_row(r, lenient=lenient) for r in rows]


async def read_stream_history(
    db: Executor, stream_ids: Sequence[str], *, until: datetime | None = None
) -> list[RecordedEvent]:
    """Every committed event of ``stream_ids``, in log order, optionally only those recorded
    at or before ``until`` (for "as of" answers). Payloads are always decoded."""
    rows = await db.fetch(
        f"""SELECT {_RECORD_COLUMNS}, payload FROM events
            WHERE stream_id = ANY($1::text[]) AND ($2::timestamptz IS NULL OR recorded_at <= $2)
            ORDER BY transaction_id, global_position""",
        list(stream_ids),
        until,
    )
    return [record_from_row(r) for r in rows]


async def read_stream(db: Executor, stream_id: str) -> list[RecordedEvent]:
    """Every committed event of one stream, in stream order."""
    rows = await db.fetch(
        f"""SELECT {_RECORD_COLUMNS}, payload FROM events
            WHERE stream_id = $1 ORDER BY stream_position""",
        stream_id,
    )
    return [record_from_row(r) for r in rows]


async def last_visible_position(db: Executor) -> LogPosition:
    """The position of the newest event committed as of now (the read-your-writes target)."""
    row = await db.fetchrow(
        """SELECT transaction_id, global_position FROM events
           ORDER BY transaction_id DESC, global_position DESC LIMIT 1"""
    )
    if row is None:
        return LOG_START
    return LogPosition(row["transaction_id"], row["global_position"])


async def count_events_after(
    db: Executor, position: LogPosition, *, at_most: int | None = None
) -> int:
    """How many committed events sit after ``position`` in log order (a reader's backlog).

    ``at_most`` stops counting there: a status page that refreshes every second must not
    count a backlog of millions each time, and "at least this many" is all it shows.
    """
    if at_most is None:
        count: int = await db.fetchval(
            """SELECT count(*) FROM events
               WHERE (transaction_id, global_position) > ($1::xid8, $2::bigint)""",
            position.transaction_id,
            position.global_position,
        )
        return count
    bounded: int = await db.fetchval(
        """SELECT count(*) FROM (
               SELECT 1 FROM events
               WHERE (transaction_id, global_position) > ($1::xid8, $2::bigint)
               LIMIT $3) AS backlog""",
        position.transaction_id,
        position.global_position,
        at_most,
    )
    return bounded


async def position_before_head(db: Executor, back: int) -> LogPosition:
    """The position ``back`` events before the newest one in log order (the log's start if
    it holds fewer): where a feed starts to show the last ``back`` events first."""
    row = await db.fetchrow(
        """SELECT transaction_id, global_position FROM events
           ORDER BY transaction_id DESC, global_position DESC OFFSET $1 LIMIT 1""",
        back,
    )
    if row is None:
        return LOG_START
    return LogPosition(row["transaction_id"], row["global_position"])


async def last_global_position(db: Executor) -> int:
    """The highest global position in the log (0 when empty): a size for progress bars."""
    last: int = await db.fetchval("SELECT COALESCE(max(global_position), 0) FROM events")
    return last

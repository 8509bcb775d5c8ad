"""Appending to and reading from the event log.

A command runs inside a :class:`UnitOfWork`: one transaction in which it reads the stream
heads it decides on, records new events with the version it expected each stream to be at,
and commits them with their new aggregate snapshots, all or nothing (invariant 4). A write with
an idempotency key stores its result in the same transaction, so a retry gets the first answer
and appends nothing (invariant 5). A stale expected version is a conflict (invariant 6): the
command is re-run on fresh state a few times, then reported.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import asyncpg
import msgspec

from evtrack.eventlog._db import Conn
from evtrack.eventlog._positions import LogPosition
from evtrack.eventlog._records import RecordedEvent, record_from_row
from evtrack.events import Event, Metadata, encode_event

R = TypeVar("R")

ANY_VERSION = None
"""Expected version meaning "append at the end, whatever the version" (e.g. metric points)."""


class WrongExpectedVersion(Exception):
    """A stream moved on since the command read it."""

    def __init__(self, stream_id: str, expected: int | None) -> None:
        super().__init__(f"stream {stream_id} is not at version {expected}")
        self.stream_id = stream_id
        self.expected = expected


@dataclass(frozen=True, slots=True)
class StreamHead:
    stream_id: str
    version: int  # 0 for a stream that does not exist yet
    state: bytes | None


@dataclass(frozen=True)
class IdempotencyKey:
    """A write's idempotency key.

    ``derived`` keys are computed from the request itself (for clients that send none); they
    only protect against retries, so they expire after ``derived_key_ttl_s`` and an identical
    request made later is a new request.
    """

    value: str
    derived: bool

    @classmethod
    def from_parts(cls, *parts: str | bytes, derived: bool) -> IdempotencyKey:
        digest = hashlib.sha256()
        for part in parts:
            digest.update(part.encode() if isinstance(part, str) else part)
            digest.update(b"\0")
        return cls(digest.hexdigest(), derived)


_KEEP: Any = object()


@dataclass
class _PendingAppend:
    stream_id: str
    events: list[Event]
    expected: int | None
    state: bytes | Any | None
    first_position: int = 0  # known once the stream head has moved


@dataclass
class UnitOfWork:
    """The transaction a command runs in. Reads see committed state; appends are buffered."""

    conn: Conn
    metadata: Metadata
    _pending: list[_PendingAppend] = field(default_factory=list)
    last_position: int = 0  # global position of the last event this unit appended
    appended_types: set[str] = field(default_factory=set)  # event types this unit appended

    async def heads(
        self, stream_ids: Sequence[str], *, lock: bool = False
    ) -> dict[str, StreamHead]:
        """Current heads of ``stream_ids`` (version 0 for streams that do not exist yet).

        ``lock`` holds the heads until commit, for streams that many writers decide on at
        once (a run that several training ranks log to): they queue instead of conflicting
        and retrying. The append still checks the version it read.
        """
        rows = await self.conn.fetch(
            "SELECT stream_id, version, state FROM streams WHERE stream_id = ANY($1::text[])"
            + (" ORDER BY stream_id FOR NO KEY UPDATE" if lock else ""),
            list(stream_ids),
        )
        found = {r["stream_id"]: StreamHead(r["stream_id"], r["version"], r["state"]) for r in rows}
        return {sid: found.get(sid, StreamHead(sid, 0, None)) for sid in stream_ids}

    def append(
        self,
        stream_id: str,
        events: Sequence[Event],
        *,
        expected_version: int | None,
        state: bytes | Any | None = _KEEP,
    ) -> None:
        """Buffer events for ``stream_id``; ``state`` is the aggregate snapshot after them."""
        if events:
            self._pending.append(_PendingAppend(stream_id, list(events), expected_version, state))

    async def reserve_name(self, scope: str, name: str, owner: str) -> bool:
        """Claim a unique name; False if someone else holds it."""
        row = await self.conn.fetchrow(
            """INSERT INTO unique_names (scope, name, owner) VALUES ($1, $2, $3)
               ON CONFLICT (scope, name) DO NOTHING RETURNING owner""",
            scope,
            name,
            owner,
        )
        return row is not None

    async def name_owner(self, scope: str, name: str) -> str | None:
        owner: str | None = await self.conn.fetchval(
            "SELECT owner FROM unique_names WHERE scope = $1 AND name = $2", scope, name
        )
        return owner

    async def release_name(self, scope: str, name: str) -> None:
        await self.conn.execute(
            "DELETE FROM unique_names WHERE scope = $1 AND name = $2", scope, name
        )

    async def next_sequence_value(self, sequence: str) -> int:
        value: int = await self.conn.fetchval("SELECT nextval($1::regclass)", sequence)
        return value

    async def flush(self) -> None:
        """Write what is buffered now, so later reads in this unit see it (heads included)."""
        await self._flush()

    async def _flush(self, result: tuple[str, bytes] | None = None) -> None:
        """Append the buffered events; with ``result`` (idempotency key, encoded answer), also
        store the command's answer, in the same statement when there is one to send anyway.

        The usual command appends to one stream: its head moves, its events are inserted and
        the answer stored in a single statement, one round trip instead of three.
        """
        if len(self._pending) == 1:
            await self._append_one(self._pending[0], result)
        elif self._pending:
            await self._append_many(result)
        elif result is not None:
            await self.conn.execute(_STORE_RESULT_SQL.format(key="$1", result="$2"), *result)
        self._pending.clear()

    async def _append_one(self, pending: _PendingAppend, result: tuple[str, bytes] | None) -> None:
        head_sql, head_args = _head_sql(pending)
        n = len(head_args)
        columns = _event_columns([pending])
        args: list[Any] = [
            *head_args,
            len(pending.events),
            columns.types,
            columns.versions,
            columns.payloads,
            self.metadata.actor,
            msgspec.json.encode(self.metadata).decode(),
        ]
        stored = _stored_answer(args, result)
        row = await self.conn.fetchrow(
            f"""WITH head AS ({head_sql}),
               appended AS (
                   INSERT INTO events
                       (stream_id, stream_position, event_type, schema_version, payload,
                        actor, metadata)
                   SELECT ${1}, head.version - ${n + 1} + x.ord, x.t, x.v, x.b,
                          ${n + 5}, ${n + 6}::jsonb
                   FROM head, unnest(${n + 2}::text[], ${n + 3}::int2[], ${n + 4}::bytea[])
                        WITH ORDINALITY AS x(t, v, b, ord)
                   RETURNING global_position){stored}
               SELECT (SELECT version FROM head) AS version,
                      (SELECT max(global_position) FROM appended) AS last""",
            *args,
        )
        if row is None or row["version"] is None:
            raise WrongExpectedVersion(pending.stream_id, pending.expected)
        self.appended_types.update(columns.types)
        self.last_position = row["last"]

    async def _append_many(self, result: tuple[str, bytes] | None) -> None:
        for pending in self._pending:
            head_sql, head_args = _head_sql(pending)
            version: int | None = await self.conn.fetchval(head_sql, *head_args)
            if version is None:
                raise WrongExpectedVersion(pending.stream_id, pending.expected)
            pending.first_position = version - len(pending.events) + 1
        columns = _event_columns(self._pending)
        args: list[Any] = [
            columns.streams,
            columns.positions,
            columns.types,
            columns.versions,
            columns.payloads,
            self.metadata.actor,
            msgspec.json.encode(self.metadata).decode(),
        ]
        stored = _stored_answer(args, result)
        self.appended_types.update(columns.types)
        self.last_position = await self.conn.fetchval(
            f"""WITH appended AS (
                   INSERT INTO events
                       (stream_id, stream_position, event_type, schema_version, payload,
                        actor, metadata)
                   SELECT s, p, t, v, b, $6, $7::jsonb
                   FROM unnest($1::text[], $2::bigint[], $3::text[], $4::int2[], $5::bytea[])
                        AS x(s, p, t, v, b)
                   RETURNING global_position){stored}
               SELECT max(global_position) FROM appended""",
            *args,
        )


_STORE_RESULT_SQL = "UPDATE idempotency_keys SET result = {result} WHERE key = {key}"


def _stored_answer(args: list[Any], result: tuple[str, bytes] | None) -> str:
    """The CTE storing the command's answer (empty without one); appends its arguments."""
    if result is None:
        return ""
    key, answer = f"${len(args) + 1}", f"${len(args) + 2}"
    args.extend(result)
    return f", stored AS ({_STORE_RESULT_SQL.format(key=key, result=answer)})"


def _head_sql(pending: _PendingAppend) -> tuple[str, list[Any]]:
    """SQL moving the stream head past the pending events, returning its new ``version``
    (no row when the stream is not at the expected version), and its arguments. The stream
    id is always the first argument."""
    p = [f"${i}" for i in range(1, 6)]
    count = len(pending.events)
    keep = pending.state is _KEEP
    state = None if keep else pending.state
    if pending.expected is None:
        return (
            f"""INSERT INTO streams AS s (stream_id, version, state)
                VALUES ({p[0]}::text, {p[1]}::bigint, {p[2]}::bytea)
                ON CONFLICT (stream_id) DO UPDATE
                SET version = s.version + {p[1]}::bigint,
                    state = CASE WHEN {p[3]}::bool THEN s.state ELSE excluded.state END
                RETURNING version""",
            [pending.stream_id, count, state, keep],
        )
    if pending.expected == 0:
        return (
            f"""INSERT INTO streams (stream_id, version, state)
                VALUES ({p[0]}::text, {p[1]}::bigint, {p[2]}::bytea)
                ON CONFLICT (stream_id) DO NOTHING RETURNING version""",
            [pending.stream_id, count, state],
        )
    return (
        f"""UPDATE streams
            SET version = version + {p[2]}::bigint,
                state = CASE WHEN {p[4]}::bool THEN state ELSE {p[3]}::bytea END
            WHERE stream_id = {p[0]}::text AND version = {p[1]}::bigint
            RETURNING version""",
        [pending.stream_id, pending.expected, count, state, keep],
    )


@dataclass
class _EventColumns:
    streams: list[str] = field(default_factory=list)
    positions: list[int] = field(default_factory=list)
    types: list[str] = field(default_factory=list)
    versions: list[int] = field(default_factory=list)
    payloads: list[bytes] = field(default_factory=list)


def _event_columns(pending_appends: Sequence[_PendingAppend]) -> _EventColumns:
    columns = _EventColumns()
    for pending in pending_appends:
        for offset, event in enumerate(pending.events):
            columns.streams.append(pending.stream_id)
            columns.positions.append(pending.first_position + offset)
            columns.types.append(event.type_name())
            columns.versions.append(event.schema_version)
            columns.payloads.append(encode_event(event))
    return columns


Command = Callable[[UnitOfWork], Awaitable[R]]


class EventStore:
    """The event log in Postgres: run commands against it and read it in log order."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        derived_key_ttl_s: float = 600.0,
        conflict_retries: int = 8,
        on_commit: Callable[[frozenset[str]], None] | None = None,
    ) -> None:
        self.pool = pool
        self.derived_key_ttl_s = derived_key_ttl_s
        self.conflict_retries = conflict_retries
        self.on_commit = on_commit
        # The newest global position this process appended: a cheap local view of the head
        # of the log, for back-pressure decisions.
        self.last_appended_position = 0

    async def execute(
        self,
        command: Command[R],
        *,
        metadata: Metadata,
        result_type: type[R],
        idempotency_key: IdempotencyKey | None = None,
    ) -> R:
        """Run ``command`` in a transaction and commit what it appended.

        The command may run more than once (on a version conflict), so it must not have side
        effects outside the unit of work. With an idempotency key already used, the stored
        result is decoded and returned and nothing is appended.
        """
        attempt = 0
        while True:
            attempt += 1
            try:
                result, appended = await self._execute_once(
                    command, metadata, result_type, idempotency_key
                )
            except (WrongExpectedVersion, asyncpg.UniqueViolationError) as exc:
                if isinstance(exc, asyncpg.UniqueViolationError) and (
                    exc.constraint_name not in ("events_stream_position", "streams_pkey")
                ):
                    raise
                if attempt >= self.conflict_retries:
                    if isinstance(exc, WrongExpectedVersion):
                        raise
                    raise WrongExpectedVersion(str(exc), None) from exc
                continue
            if self.on_commit is not None and appended:
                self.on_commit(appended)
            return result

    async def _execute_once(
        self,
        command: Command[R],
        metadata: Metadata,
        result_type: type[R],
        key: IdempotencyKey | None,
    ) -> tuple[R, frozenset[str]]:
        """The command's result and the event types it appended (none for a replay)."""
        async with self.pool.acquire() as conn, conn.transaction():
            if key is not None:
                claimed = await conn.fetchval(
                    """INSERT INTO idempotency_keys AS k (key, derived, result)
                       VALUES ($1, $2, '')
                       ON CONFLICT (key) DO UPDATE SET created_at = now(), result = ''
                       WHERE k.derived
                         AND k.created_at < now() - make_interval(secs => $3)
                       RETURNING true""",
                    key.value,
                    key.derived,
                    self.derived_key_ttl_s,
                )
                if not claimed:
                    stored = await conn.fetchval(
                        "SELECT result FROM idempotency_keys WHERE key = $1", key.value
                    )
                    return msgspec.msgpack.decode(stored, type=result_type), frozenset()
            uow = UnitOfWork(conn, metadata)
            result = await command(uow)
            answer = None if key is None else (key.value, msgspec.msgpack.encode(result))
            await uow._flush(answer)
            self.last_appended_position = max(self.last_appended_position, uow.last_position)
            return result, frozenset(uow.appended_types)

    async def read_stream(self, stream_id: str) -> list[RecordedEvent]:
        rows = await self.pool.fetch(
            f"""SELECT {_RECORD_COLUMNS}, payload FROM events
                WHERE stream_id = $1 ORDER BY stream_position""",
            stream_id,
        )
        return [record_from_row(r) for r in rows]

    async def last_visible_position(self, conn: Conn | None = None) -> LogPosition:
        """The position of the newest event committed as of now (the read-your-writes target)."""
        executor: Any = conn if conn is not None else self.pool
        row = await executor.fetchrow(
            """SELECT transaction_id, global_position FROM events
               ORDER BY transaction_id DESC, global_position DESC LIMIT 1"""
        )
        if row is None:
            return LogPosition(0, 0)
        return LogPosition(row["transaction_id"], row["global_position"])


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

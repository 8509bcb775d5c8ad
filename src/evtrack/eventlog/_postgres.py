"""The event log in PostgreSQL: the recorder users run.

A command runs inside a :class:`PostgresUnitOfWork`: one transaction in which it reads the
stream heads it decides on, records new events with the version it expected each stream to be
at, and commits them with their new aggregate snapshots, all or nothing (invariant 4). A write
with an idempotency key stores its result in the same transaction, so a retry gets the first
answer and appends nothing (invariant 5). A stale expected version is a conflict (invariant 6).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import asyncpg
import msgspec

from evtrack.eventlog import _reads
from evtrack.eventlog._append_sql import (
    event_columns,
    move_head_sql,
    one_stream_append,
)
from evtrack.eventlog._db import Conn
from evtrack.eventlog._optimistic import NeedsTransaction, OptimisticUnitOfWork, Replayed
from evtrack.eventlog._positions import LogPosition
from evtrack.eventlog._recorder import (
    KEEP,
    AppendBuffer,
    Committed,
    IdempotencyKey,
    PendingAppend,
    Recorder,
    StreamHead,
    Work,
    WrongExpectedVersion,
    heads_from_rows,
)
from evtrack.eventlog._records import RecordedEvent
from evtrack.events import Metadata

R = TypeVar("R")


@dataclass
class PostgresUnitOfWork(AppendBuffer):
    """A :class:`~evtrack.eventlog.UnitOfWork` in one PostgreSQL transaction. Reads see
    committed state; appends are buffered and written in as few statements as possible."""

    conn: Conn
    metadata: Metadata
    _pending: list[PendingAppend] = field(default_factory=list)
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
        return heads_from_rows(rows, stream_ids)

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

    async def advance_sequence(self, sequence: str, at_least: int) -> None:
        """Make sure ``next_sequence_value`` answers more than ``at_least`` from now on.

        ``setval`` is not transactional either: like a value handed out, an advance is
        never undone, which only ever leaves a gap."""
        if at_least < 1:
            return
        await self.conn.execute(
            """SELECT setval($1::regclass, GREATEST($2::bigint, (
                   SELECT COALESCE(last_value, 0) FROM pg_sequences
                   WHERE sequencename = $3::text AND schemaname = current_schema())))""",
            sequence,
            at_least,
            sequence,
        )

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

    async def _append_one(self, pending: PendingAppend, result: tuple[str, bytes] | None) -> None:
        args: list[Any] = []
        ctes, columns = one_stream_append(pending, self.metadata, args)
        stored = _stored_answer(args, result)
        row = await self.conn.fetchrow(
            f"""WITH {ctes}{stored}
               SELECT (SELECT version FROM head) AS version,
                      (SELECT max(global_position) FROM appended) AS last""",
            *args,
        )
        if row is None or row["version"] is None:
            raise WrongExpectedVersion(pending.stream_id, pending.expected)
        self.appended_types.update(columns.types)
        self.last_position = row["last"]

    async def _append_many(self, result: tuple[str, bytes] | None) -> None:
        if len({p.stream_id for p in self._pending}) == len(self._pending):
            await self._move_heads_at_once()
        else:  # a stream appended to twice: its second head move must see the first
            for pending in self._pending:
                head_sql, head_args = move_head_sql(pending)
                version: int | None = await self.conn.fetchval(head_sql, *head_args)
                if version is None:
                    raise WrongExpectedVersion(pending.stream_id, pending.expected)
                pending.first_position = version - len(pending.events) + 1
        columns = event_columns(self._pending)
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

    async def _move_heads_at_once(self) -> None:
        """Move every pending stream's head in one statement (a thousand runs started by one
        ingest request are one round trip, not a thousand); a stream not at its expected
        version returns no row, and the whole unit fails as a conflict."""
        pending = self._pending
        keep = [p.state is KEEP for p in pending]
        rows = await self.conn.fetch(
            _MOVE_HEADS_SQL,
            [p.stream_id for p in pending],
            [p.expected for p in pending],
            [len(p.events) for p in pending],
            [None if k else p.state for p, k in zip(pending, keep, strict=True)],
            keep,
        )
        versions = {r["stream_id"]: r["version"] for r in rows}
        for p in pending:
            version = versions.get(p.stream_id)
            if version is None:
                raise WrongExpectedVersion(p.stream_id, p.expected)
            p.first_position = version - len(p.events) + 1


_MOVE_HEADS_SQL = """
WITH input AS (
    SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::bytea[], $5::bool[])
        AS i(stream_id, expected, n, state, keep)
), created AS (
    INSERT INTO streams (stream_id, version, state)
    SELECT stream_id, n, state FROM input WHERE expected = 0
    ON CONFLICT (stream_id) DO NOTHING
    RETURNING stream_id, version
), at_end AS (
    INSERT INTO streams AS s (stream_id, version, state)
    SELECT stream_id, n, state FROM input WHERE expected IS NULL
    ON CONFLICT (stream_id) DO UPDATE
    SET version = s.version + excluded.version,
        state = CASE WHEN (SELECT i.keep FROM input AS i WHERE i.stream_id = s.stream_id)
                     THEN s.state ELSE excluded.state END
    RETURNING stream_id, version
), moved AS (
    UPDATE streams AS s
    SET version = s.version + i.n, state = CASE WHEN i.keep THEN s.state ELSE i.state END
    FROM input AS i
    WHERE i.expected > 0 AND s.stream_id = i.stream_id AND s.version = i.expected
    RETURNING s.stream_id, s.version
)
SELECT stream_id, version FROM created
UNION ALL SELECT stream_id, version FROM at_end
UNION ALL SELECT stream_id, version FROM moved"""


_STORE_RESULT_SQL = "UPDATE idempotency_keys SET result = {result} WHERE key = {key}"


def _stored_answer(args: list[Any], result: tuple[str, bytes] | None) -> str:
    """The CTE storing the command's answer (empty without one); appends its arguments."""
    if result is None:
        return ""
    key, answer = f"${len(args) + 1}", f"${len(args) + 2}"
    args.extend(result)
    return f", stored AS ({_STORE_RESULT_SQL.format(key=key, result=answer)})"


_RETRYABLE_CONSTRAINTS = ("events_stream_position", "streams_pkey")
"""Unique violations that mean two writers raced on one stream head: a version conflict."""


class PostgresRecorder:
    """The event log in PostgreSQL: run commands against it and read it in log order."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        derived_key_ttl_s: float = 600.0,
    ) -> None:
        self.pool = pool
        self.derived_key_ttl_s = derived_key_ttl_s
        # The newest global position this process appended: a cheap local view of the head
        # of the log, for back-pressure decisions.
        self.last_appended_position = 0

    async def transact(
        self,
        work: Work[R],
        *,
        metadata: Metadata,
        result_type: type[R],
        idempotency_key: IdempotencyKey | None,
        contended: bool = False,
    ) -> Committed[R]:
        """One attempt: see :meth:`evtrack.eventlog.Recorder.transact`. Uncontended, the
        unit runs without a transaction where it can (see ``_optimistic``); contended, or
        when it must write before its append, in a transaction that locks the heads it reads.
        """
        try:
            if contended:
                return await self._transact_locked(work, metadata, result_type, idempotency_key)
            return await self._transact(work, metadata, result_type, idempotency_key)
        except asyncpg.UniqueViolationError as exc:
            if exc.constraint_name not in _RETRYABLE_CONSTRAINTS:
                raise
            raise WrongExpectedVersion(str(exc), None) from exc

    async def _transact(
        self,
        work: Work[R],
        metadata: Metadata,
        result_type: type[R],
        key: IdempotencyKey | None,
    ) -> Committed[R]:
        try:
            return await self._transact_optimistic(work, metadata, result_type, key)
        except NeedsTransaction:
            return await self._transact_locked(work, metadata, result_type, key)

    async def _transact_optimistic(
        self,
        work: Work[R],
        metadata: Metadata,
        result_type: type[R],
        key: IdempotencyKey | None,
    ) -> Committed[R]:
        async with self.pool.acquire() as conn:
            uow = OptimisticUnitOfWork(conn, metadata, key, self.derived_key_ttl_s)
            try:
                result = await work(uow)
                appended = await uow.commit(None if key is None else msgspec.msgpack.encode(result))
            except Replayed as replay:
                return _replayed(replay.answer, result_type)
            if not appended.claimed:
                assert key is not None
                stored = await conn.fetchval(
                    "SELECT result FROM idempotency_keys WHERE key = $1", key.value
                )
                return _replayed(stored, result_type)
        position = appended.last_position or 0
        self.last_appended_position = max(self.last_appended_position, position)
        return Committed(result, appended.appended_types, position, replayed=False)

    async def _transact_locked(
        self,
        work: Work[R],
        metadata: Metadata,
        result_type: type[R],
        key: IdempotencyKey | None,
    ) -> Committed[R]:
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
                    return _replayed(stored, result_type)
            uow = PostgresUnitOfWork(conn, metadata)
            result = await work(uow)
            answer = None if key is None else (key.value, msgspec.msgpack.encode(result))
            await uow._flush(answer)
        self.last_appended_position = max(self.last_appended_position, uow.last_position)
        return Committed(result, frozenset(uow.appended_types), uow.last_position, replayed=False)

    async def read_after(
        self, after: LogPosition, limit: int, payload_types: Sequence[str] | None = None
    ) -> list[RecordedEvent]:
        async with self.pool.acquire() as conn:
            return await _reads.read_after(conn, after, limit, payload_types)

    async def read_stream(self, stream_id: str) -> list[RecordedEvent]:
        return await _reads.read_stream(self.pool, stream_id)

    async def last_visible_position(self, conn: Conn | None = None) -> LogPosition:
        """The position of the newest event committed as of now (the read-your-writes target)."""
        return await _reads.last_visible_position(conn if conn is not None else self.pool)


def _replayed(answer: bytes, result_type: type[R]) -> Committed[R]:
    return Committed(msgspec.msgpack.decode(answer, type=result_type), frozenset(), 0, True)


EventStore = PostgresRecorder
"""The name callers used before the recorder seam; the same class."""


if TYPE_CHECKING:
    _conforms: type[Recorder] = PostgresRecorder

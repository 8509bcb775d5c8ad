"""Commands that read, decide, then append to one stream: two round trips, no transaction.

Most writes (a logged metric, a param, a tag, a run's status) read one or two stream heads,
decide, and append to one stream. Run in an explicit transaction, that is six round trips:
BEGIN, the idempotency claim, two reads, the append, COMMIT. Here the reads run on their
own (the first one also looks up the idempotency key), and the append is one statement,
atomic by itself: it claims the key with the answer, moves the stream head by compare-and-set
on the version read, and inserts the events. So a logging call costs the reads and one write.

Nothing is held between the reads and the write. An append at the end of a stream whatever its
version (metric points) needs nothing held; one decided on a version the unit asked to hold
(``heads(lock=True)``) goes to a transaction that holds it, where concurrent writers to one
stream queue; any other stale version fails the compare-and-set, and the caller retries. A
unit that must write before its final append (a unique name, a sequence value, a flush, or
appends to several streams) says so with :class:`NeedsTransaction`, and runs in a
transaction too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from evtrack.eventlog._append_sql import one_stream_append
from evtrack.eventlog._db import Conn
from evtrack.eventlog._recorder import (
    KEEP,
    AppendBuffer,
    IdempotencyKey,
    KeepState,
    PendingAppend,
    StreamHead,
    WrongExpectedVersion,
    heads_from_rows,
)
from evtrack.events import Event, Metadata

CONFLICT_SQLSTATE = "EV409"
"""Raised by ``evtrack_stream_conflict()`` (migration 0004): the key was claimed but the head
had moved, so the whole statement, claim included, is undone."""


class NeedsTransaction(Exception):
    """The unit writes before its final append: run it in a transaction instead."""


class Replayed(Exception):
    """The idempotency key was used already: ``answer`` is the stored first answer."""

    def __init__(self, answer: bytes) -> None:
        super().__init__("idempotency key already used")
        self.answer = answer


@dataclass
class OptimisticUnitOfWork(AppendBuffer):
    """A unit of work whose reads are plain statements and whose one append is atomic."""

    conn: Conn
    _metadata: Metadata
    key: IdempotencyKey | None
    key_ttl_s: float
    _pending: list[PendingAppend] = field(default_factory=list)
    _key_checked: bool = False
    _held: set[str] = field(default_factory=set)  # read with lock=True

    @property
    def metadata(self) -> Metadata:
        return self._metadata

    async def heads(
        self, stream_ids: Sequence[str], *, lock: bool = False
    ) -> dict[str, StreamHead]:
        """Current heads. The first read also looks the idempotency key up, so a retry is
        answered at once. Nothing is locked: a head read with ``lock`` and then appended to
        with an expected version sends the unit to a transaction that holds it (see
        :meth:`commit`), since its writers asked to queue rather than conflict."""
        if lock:
            self._held.update(stream_ids)
        if self.key is not None and not self._key_checked:
            self._key_checked = True
            rows = await self.conn.fetch(
                """SELECT stream_id, version, state, NULL::bytea AS answer
                   FROM streams WHERE stream_id = ANY($1::text[])
                   UNION ALL
                   SELECT NULL, NULL, NULL, result FROM idempotency_keys
                   WHERE key = $2 AND result <> ''
                     AND (NOT derived OR created_at >= now() - make_interval(secs => $3))""",
                list(stream_ids),
                self.key.value,
                self.key_ttl_s,
            )
            for r in rows:
                if r["answer"] is not None:
                    raise Replayed(r["answer"])
        else:
            rows = await self.conn.fetch(
                "SELECT stream_id, version, state FROM streams WHERE stream_id = ANY($1::text[])",
                list(stream_ids),
            )
        return heads_from_rows(rows, stream_ids)

    def append(
        self,
        stream_id: str,
        events: Sequence[Event],
        *,
        expected_version: int | None,
        state: bytes | KeepState | None = KEEP,
    ) -> None:
        """Buffer the unit's one append; a second one means a transaction, said at once so
        that a unit deciding a thousand runs does not decide them all twice."""
        super().append(stream_id, events, expected_version=expected_version, state=state)
        if len(self._pending) > 1:
            raise NeedsTransaction

    async def name_owner(self, scope: str, name: str) -> str | None:
        owner: str | None = await self.conn.fetchval(
            "SELECT owner FROM unique_names WHERE scope = $1 AND name = $2", scope, name
        )
        return owner

    async def reserve_name(self, scope: str, name: str, owner: str) -> bool:
        raise NeedsTransaction

    async def release_name(self, scope: str, name: str) -> None:
        raise NeedsTransaction

    async def next_sequence_value(self, sequence: str) -> int:
        raise NeedsTransaction

    async def advance_sequence(self, sequence: str, at_least: int) -> None:
        raise NeedsTransaction

    async def flush(self) -> None:
        raise NeedsTransaction

    async def commit(self, answer: bytes | None) -> Appended:
        """Write the unit: claim the key with ``answer``, move the head, insert the events."""
        if len(self._pending) > 1:
            raise NeedsTransaction
        if any(p.expected is not None and p.stream_id in self._held for p in self._pending):
            raise NeedsTransaction
        args: list[Any] = []
        ctes: list[str] = []
        gate = "true"
        if self.key is not None:
            args += [self.key.value, self.key.derived, answer or b"", self.key_ttl_s]
            ctes.append(_CLAIM_SQL)
            gate = "EXISTS (SELECT 1 FROM claim)"
        if not self._pending:
            if self.key is None:
                return Appended(claimed=True)
            claimed = await self.conn.fetchval(
                f"WITH {ctes[0]} SELECT EXISTS (SELECT 1 FROM claim)", *args
            )
            return Appended(claimed=bool(claimed))
        return await self._append(args, ctes, gate)

    async def _append(self, args: list[Any], ctes: list[str], gate: str) -> Appended:
        pending = self._pending[0]
        stream_id, expected = pending.stream_id, pending.expected
        append, columns = one_stream_append(pending, self._metadata, args, gate=gate)
        ctes.append(append)
        args.append(stream_id)
        n = len(args)
        claimed = "EXISTS (SELECT 1 FROM claim)" if self.key is not None else "true"
        try:
            row = await self.conn.fetchrow(
                f"""WITH {", ".join(ctes)}
                    SELECT {claimed} AS claimed,
                           CASE WHEN {claimed} AND NOT EXISTS (SELECT 1 FROM head)
                                THEN evtrack_stream_conflict(${n})
                                ELSE (SELECT version FROM head) END AS version,
                           (SELECT max(global_position) FROM appended) AS last""",
                *args,
            )
        except asyncpg.PostgresError as exc:
            if exc.sqlstate == CONFLICT_SQLSTATE:
                raise WrongExpectedVersion(stream_id, expected) from None
            raise
        assert row is not None
        if not row["claimed"]:
            return Appended(claimed=False)
        if row["version"] is None:
            raise WrongExpectedVersion(stream_id, expected)
        return Appended(True, frozenset(columns.types), row["last"])


_CLAIM_SQL = """claim AS (
    INSERT INTO idempotency_keys AS k (key, derived, result) VALUES ($1, $2, $3)
    ON CONFLICT (key) DO UPDATE SET created_at = now(), result = excluded.result
    WHERE k.derived AND k.created_at < now() - make_interval(secs => $4)
    RETURNING true)"""


@dataclass(frozen=True, slots=True)
class Appended:
    claimed: bool  # False: the key was used already; nothing was written
    appended_types: frozenset[str] = frozenset()
    last_position: int = 0

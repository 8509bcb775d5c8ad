"""The event log in memory, for testing the domain without a database.

It keeps the PostgreSQL recorder's contract, not its speed: events are encoded and decoded
exactly as stored ones are, a transaction sees committed state plus its own flushed writes,
stream heads, unique names and idempotency keys are locked by the first writer until it ends
(a second writer waits, then sees the outcome, as row locks make it in PostgreSQL), and the log
is read in (transaction id, global position) order below the oldest running transaction.
Transaction ids are taken when a transaction starts and global positions when its events are
flushed, so a transaction that flushes early and commits late sorts before later ones and holds
readers back until it ends: it is never skipped.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec

from evtrack.eventlog._positions import LOG_START, LogPosition
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
)
from evtrack.eventlog._records import RecordedEvent, record_from_row
from evtrack.events import Event, Metadata, encode_event

R = TypeVar("R")

SEQUENCES = ("experiment_ids",)
"""The sequences the schema creates (migration 0001); others do not exist, as in PostgreSQL."""


class DeadlockDetected(Exception):
    """Two transactions wait for each other's locks (PostgreSQL aborts one of them too)."""


@dataclass(frozen=True, slots=True)
class _Row:
    """One event as the ``events`` table holds it."""

    transaction_id: int
    global_position: int
    stream_id: str
    stream_position: int
    event_type: str
    schema_version: int
    payload: bytes
    actor: str
    metadata: dict[str, Any]
    recorded_at: datetime

    def record(self, payload_types: Sequence[str] | None = None) -> RecordedEvent:
        wanted = payload_types is None or self.event_type in payload_types
        return record_from_row(
            {
                "transaction_id": self.transaction_id,
                "global_position": self.global_position,
                "stream_id": self.stream_id,
                "stream_position": self.stream_position,
                "event_type": self.event_type,
                "schema_version": self.schema_version,
                "payload": self.payload if wanted else None,
                "actor": self.actor,
                "metadata": self.metadata,
                "recorded_at": self.recorded_at,
            }
        )


@dataclass(frozen=True, slots=True)
class _StoredKey:
    derived: bool
    created_at: float
    result: bytes


@dataclass
class _Transaction:
    id: int
    started_at: float
    recorded_at: datetime
    done: asyncio.Event = field(default_factory=asyncio.Event)
    # What this transaction wrote, published at commit. A value of None in ``names`` is a
    # release; heads hold (version, state).
    heads: dict[str, tuple[int, bytes | None]] = field(default_factory=dict)
    rows: list[_Row] = field(default_factory=list)
    names: dict[tuple[str, str], str | None] = field(default_factory=dict)
    key: tuple[str, _StoredKey] | None = None  # the claimed key; its answer set at the end


class InMemoryRecorder:
    """A :class:`~evtrack.eventlog.Recorder` in memory, for tests (one event loop)."""

    def __init__(
        self,
        *,
        derived_key_ttl_s: float = 600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.derived_key_ttl_s = derived_key_ttl_s
        self._clock = clock
        self._heads: dict[str, tuple[int, bytes | None]] = {}
        self._log: list[_Row] = []  # committed, in (transaction id, global position) order
        self._names: dict[tuple[str, str], str] = {}
        self._keys: dict[str, _StoredKey] = {}
        self._sequences = dict.fromkeys(SEQUENCES, 0)
        self._next_transaction = 1
        self._next_position = 1
        self._running: dict[int, _Transaction] = {}
        self._locks: dict[tuple[str, ...], _Transaction] = {}
        self._waiting: dict[int, _Transaction] = {}  # waiter id -> the holder it waits for

    # ------------------------------------------------------------------ transactions

    async def transact(
        self,
        work: Work[R],
        *,
        metadata: Metadata,
        result_type: type[R],
        idempotency_key: IdempotencyKey | None,
        contended: bool = False,
    ) -> Committed[R]:
        """One attempt: see :meth:`evtrack.eventlog.Recorder.transact` (locks are always
        held here, so ``contended`` changes nothing)."""
        tx = self._begin()
        try:
            if idempotency_key is not None:
                stored = await self._claim(tx, idempotency_key)
                if stored is not None:
                    result = msgspec.msgpack.decode(stored, type=result_type)
                    return Committed(result, frozenset(), 0, replayed=True)
            uow = _MemoryUnitOfWork(self, tx, metadata)
            result = await work(uow)
            if tx.key is not None:
                value, claimed = tx.key
                answer = msgspec.msgpack.encode(result)
                tx.key = (value, _StoredKey(claimed.derived, claimed.created_at, answer))
            await uow.flush()
            self._commit(tx)
            return Committed(
                result, frozenset(uow.appended_types), uow.last_position, replayed=False
            )
        finally:
            self._end(tx)

    def _begin(self) -> _Transaction:
        tx = _Transaction(self._next_transaction, self._clock(), datetime.now(UTC))
        self._next_transaction += 1
        self._running[tx.id] = tx
        return tx

    def _commit(self, tx: _Transaction) -> None:
        """Publish everything ``tx`` wrote at once (no await: nothing sees half of it)."""
        self._heads.update(tx.heads)
        self._log.extend(tx.rows)  # ids only grow and a running one holds reads back
        self._log.sort(key=lambda r: (r.transaction_id, r.global_position))
        for name, owner in tx.names.items():
            if owner is None:
                self._names.pop(name, None)
            else:
                self._names[name] = owner
        if tx.key is not None:
            self._keys[tx.key[0]] = tx.key[1]

    def _end(self, tx: _Transaction) -> None:
        del self._running[tx.id]
        for lock in [k for k, holder in self._locks.items() if holder is tx]:
            del self._locks[lock]
        tx.done.set()

    async def _lock(self, tx: _Transaction, *lock: str) -> None:
        """Hold ``lock`` until ``tx`` ends, waiting for the transaction holding it first."""
        while (holder := self._locks.get(lock)) is not None and holder is not tx:
            cursor: _Transaction | None = holder
            while cursor is not None:
                if cursor is tx:
                    raise DeadlockDetected(f"transaction {tx.id} waits on itself for {lock}")
                cursor = self._waiting.get(cursor.id)
            self._waiting[tx.id] = holder
            try:
                await holder.done.wait()
            finally:
                del self._waiting[tx.id]
        self._locks[lock] = tx

    async def _claim(self, tx: _Transaction, key: IdempotencyKey) -> bytes | None:
        """Claim ``key`` for ``tx``; the stored answer instead if it was used already."""
        await self._lock(tx, "key", key.value)
        stored = self._keys.get(key.value)
        now = self._clock()
        if stored is not None and not (
            stored.derived and stored.created_at < now - self.derived_key_ttl_s
        ):
            return stored.result
        derived = stored.derived if stored is not None else key.derived
        tx.key = (key.value, _StoredKey(derived, tx.started_at, b""))
        return None

    # ------------------------------------------------------------------ reads

    def _horizon(self) -> int:
        return min(self._running, default=self._next_transaction)

    async def read_after(
        self, after: LogPosition, limit: int, payload_types: Sequence[str] | None = None
    ) -> list[RecordedEvent]:
        horizon = self._horizon()
        found: list[RecordedEvent] = []
        for row in self._log:
            if len(found) >= limit or row.transaction_id >= horizon:
                break
            if (row.transaction_id, row.global_position) > after:
                found.append(row.record(payload_types))
        return found

    async def read_stream(self, stream_id: str) -> list[RecordedEvent]:
        rows = sorted(
            (r for r in self._log if r.stream_id == stream_id), key=lambda r: r.stream_position
        )
        return [r.record() for r in rows]

    async def last_visible_position(self) -> LogPosition:
        if not self._log:
            return LOG_START
        last = self._log[-1]
        return LogPosition(last.transaction_id, last.global_position)


class _MemoryUnitOfWork(AppendBuffer):
    """A :class:`~evtrack.eventlog.UnitOfWork` of the in-memory recorder."""

    def __init__(self, recorder: InMemoryRecorder, tx: _Transaction, metadata: Metadata) -> None:
        self._recorder = recorder
        self._tx = tx
        self._metadata = metadata
        self._stored_metadata: dict[str, Any] = msgspec.json.decode(msgspec.json.encode(metadata))
        self._pending: list[PendingAppend] = []
        self.last_position = 0
        self.appended_types: set[str] = set()

    @property
    def metadata(self) -> Metadata:
        return self._metadata

    def _head(self, stream_id: str) -> tuple[int, bytes | None]:
        own = self._tx.heads.get(stream_id)
        if own is not None:
            return own
        return self._recorder._heads.get(stream_id, (0, None))

    async def heads(
        self, stream_ids: Sequence[str], *, lock: bool = False
    ) -> dict[str, StreamHead]:
        if lock:
            # FOR NO KEY UPDATE locks the heads that exist, in stream order.
            for stream_id in sorted(set(stream_ids)):
                if stream_id in self._recorder._heads or stream_id in self._tx.heads:
                    await self._recorder._lock(self._tx, "stream", stream_id)
        return {sid: StreamHead(sid, *self._head(sid)) for sid in stream_ids}

    async def reserve_name(self, scope: str, name: str, owner: str) -> bool:
        await self._recorder._lock(self._tx, "name", scope, name)
        if await self.name_owner(scope, name) is not None:
            return False
        self._tx.names[(scope, name)] = owner
        return True

    async def name_owner(self, scope: str, name: str) -> str | None:
        if (scope, name) in self._tx.names:
            return self._tx.names[(scope, name)]
        return self._recorder._names.get((scope, name))

    async def release_name(self, scope: str, name: str) -> None:
        await self._recorder._lock(self._tx, "name", scope, name)
        self._tx.names[(scope, name)] = None

    async def next_sequence_value(self, sequence: str) -> int:
        sequences = self._recorder._sequences
        if sequence not in sequences:
            raise LookupError(f'relation "{sequence}" does not exist')
        sequences[sequence] += 1
        return sequences[sequence]

    async def advance_sequence(self, sequence: str, at_least: int) -> None:
        sequences = self._recorder._sequences
        if sequence not in sequences:
            raise LookupError(f'relation "{sequence}" does not exist')
        sequences[sequence] = max(sequences[sequence], at_least)

    async def flush(self) -> None:
        pending, self._pending = self._pending, []
        for append in pending:
            await self._recorder._lock(self._tx, "stream", append.stream_id)
            version, state = self._head(append.stream_id)
            if append.expected is not None and append.expected != version:
                raise WrongExpectedVersion(append.stream_id, append.expected)
            for event in append.events:
                version += 1
                self._tx.rows.append(self._row(append.stream_id, version, event))
            self._tx.heads[append.stream_id] = (
                version,
                state if append.state is KEEP else append.state,
            )

    def _row(self, stream_id: str, stream_position: int, event: Event) -> _Row:
        payload = encode_event(event)  # refuses what PostgreSQL would never be sent
        position = self._recorder._next_position
        self._recorder._next_position += 1
        self.last_position = position
        self.appended_types.add(event.type_name())
        return _Row(
            self._tx.id,
            position,
            stream_id,
            stream_position,
            event.type_name(),
            event.schema_version,
            payload,
            self._metadata.actor,
            self._stored_metadata,
            self._tx.recorded_at,
        )


if TYPE_CHECKING:
    _conforms: type[Recorder] = InMemoryRecorder

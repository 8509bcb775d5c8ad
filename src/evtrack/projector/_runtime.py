"""The projector runtime: keeps each read model in step with the log, exactly once.

Per projection, one task owns the read model through a lease (a session advisory lock held
on its own connection; if the process dies the lock goes with its connection and another
worker takes over). Each batch is applied and the checkpoint moved in one transaction, with
the checkpoint row locked, so even two owners at once could not apply a batch twice
(invariant 3). An event the projection cannot apply is parked and stepped over in that same
transaction (see ``_parking``), so one event never stops a read model. The task wakes on
the doorbell (a local event or a Postgres NOTIFY sent outside the write path) and polls as a
fallback (invariant 9).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
import structlog

from evtrack.eventlog import LOG_START, Conn, LogPosition, database_unavailable, read_after_cursor
from evtrack.projector._parking import Parked, apply_isolating, is_parkable, log_parked, park
from evtrack.projector._projection import Projection
from evtrack.projector._tables import (
    CHECKPOINT_CURSOR_SQL,
    checkpoint_position,
    ensure_tables,
)

log = structlog.get_logger("evtrack.projector")

DOORBELL_CHANNEL = "evtrack_events"

MAX_BATCH_PAYLOAD_BYTES = 32 * 1024 * 1024
"""Stored payload bytes a projector batch reads at most (besides its event count): bounds the
projector's memory when it is behind on large ingest events."""


def lease_key(name: str) -> int:
    return zlib.crc32(f"evtrack-projection:{name}".encode())


def rebuild_key(name: str) -> int:
    """The advisory lock a rebuild of ``name`` holds for as long as it runs."""
    return zlib.crc32(f"evtrack-rebuild:{name}".encode())


class RebuildRunning(RuntimeError):
    """Another process is rebuilding this read model now."""


def _shadow(projection: Projection) -> tuple[str, str]:
    """(schema, checkpoint name) a rebuild of ``projection`` replays the log into."""
    return f"{projection.schema_name}__rebuild", f"{projection.name}__rebuild"


async def install(conn: Conn, projection: Projection, *, schema: str, checkpoint: str) -> None:
    """Create ``schema`` with the projection's tables and a checkpoint at the log's start
    (forgetting what was parked for ``checkpoint``: it is all applied again)."""
    await ensure_tables(conn)
    async with conn.transaction():
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await conn.execute(f'CREATE SCHEMA "{schema}"')
        await conn.execute(f'SET LOCAL search_path TO "{schema}", public')
        await conn.execute(projection.schema_sql)
        await conn.execute(
            """INSERT INTO projection_checkpoints (name, schema_hash) VALUES ($1, $2)
               ON CONFLICT (name) DO UPDATE
               SET transaction_id = '0', global_position = 0, schema_hash = $2,
                   updated_at = now()""",
            checkpoint,
            projection.schema_hash,
        )
        await conn.execute("DELETE FROM parked_events WHERE projection = $1", checkpoint)


async def apply_next_batch(
    conn: Conn,
    projection: Projection,
    *,
    schema: str,
    checkpoint: str,
    batch_size: int,
) -> tuple[int, LogPosition | None]:
    """Apply the next batch of events; return how many were read and the new cursor."""
    applied = await _apply_page(
        conn, projection, schema=schema, checkpoint=checkpoint, batch_size=batch_size
    )
    return applied.count, applied.last


@dataclass(frozen=True, slots=True)
class _Applied:
    count: int
    last: LogPosition | None
    more: bool  # the page was full: apply the next one without waiting
    parked: tuple[Parked, ...] = ()


class _BatchFailed(Exception):
    """Applying a page failed in a way an event may have caused: isolate and park."""


async def _apply_page(
    conn: Conn,
    projection: Projection,
    *,
    schema: str,
    checkpoint: str,
    batch_size: int,
    search_path_set: bool = False,
) -> _Applied:
    """Apply the next page in one transaction; if an event fails it, roll back and apply
    the page again event-isolating, parking what fails on its own.

    The first try costs nothing beyond the page itself: savepoints are only used once a
    page has failed.
    """
    options: dict[str, Any] = {
        "schema": schema,
        "checkpoint": checkpoint,
        "batch_size": batch_size,
        "search_path_set": search_path_set,
    }
    try:
        async with conn.transaction():
            return await _apply_in_transaction(conn, projection, **options)
    except _BatchFailed:
        pass
    async with conn.transaction():
        applied = await _apply_in_transaction(conn, projection, isolate="known_bad", **options)
    log_parked(applied.parked)
    return applied


async def _apply_in_transaction(
    conn: Conn,
    projection: Projection,
    *,
    schema: str,
    checkpoint: str,
    batch_size: int,
    search_path_set: bool = False,
    isolate: str | None = None,
) -> _Applied:
    """Read the page after the (locked) checkpoint, apply it, move the checkpoint.

    A page with no event the projection handles (the log is shared by every read model)
    only moves the checkpoint. ``search_path_set`` says the connection's session already
    points at ``schema`` (a live projector's own connection), saving a statement per batch.

    Without ``isolate``, an event's failure raises :class:`_BatchFailed` (the caller rolls
    back and tries again isolating). With ``isolate`` ("known_bad": the page just failed;
    "savepoint": it may fail), events that fail on their own are parked and the rest applied.
    """
    page = await read_after_cursor(
        conn,
        CHECKPOINT_CURSOR_SQL,
        (checkpoint,),
        batch_size,
        sorted(projection.event_types),
        max_payload_bytes=MAX_BATCH_PAYLOAD_BYTES,
        lenient=True,
    )
    records = page.records
    if not records:
        if (
            await conn.fetchval("SELECT 1 FROM projection_checkpoints WHERE name = $1", checkpoint)
            is None
        ):
            raise LookupError(f"projection {checkpoint} is not installed")
        return _Applied(0, None, False)
    parked: list[Parked] = []
    if any(r.event is not None or r.decode_error is not None for r in records):
        if not search_path_set:
            await conn.execute(f'SET LOCAL search_path TO "{schema}", public')
        if isolate is None:
            try:
                await projection.apply(conn, records)
            except Exception as exc:
                if is_parkable(exc):
                    raise _BatchFailed from exc
                raise
        else:
            failed = await apply_isolating(
                conn, projection, records, known_bad=isolate == "known_bad"
            )
            parked = await park(conn, checkpoint, failed)
    last = records[-1].position
    await conn.execute(
        """UPDATE projection_checkpoints
           SET transaction_id = $2, global_position = $3, updated_at = now()
           WHERE name = $1""",
        checkpoint,
        last.transaction_id,
        last.global_position,
    )
    return _Applied(len(records), last, page.more, tuple(parked))


async def rebuild(
    conn: Conn,
    projection: Projection,
    *,
    batch_size: int = 2000,
    on_progress: Callable[[LogPosition], None] | None = None,
) -> LogPosition:
    """Replay the whole log into a fresh schema, then swap it in for the live one.

    The live read model keeps answering queries until the swap, which happens in one short
    transaction holding the live checkpoint row, so the live projector (if any) pauses for
    just that moment and then continues from the rebuilt model's checkpoint. Every event is
    tried again: what is parked afterwards is what the rebuild parked, nothing older.

    The rebuild holds a lock (:func:`rebuild_key`) while it runs: a second rebuild of the
    same model is refused (:class:`RebuildRunning`) instead of dropping this one's shadow
    schema, and :func:`remove_rebuild_leftovers` can tell a killed rebuild's shadow from a
    live one's.
    """
    key = rebuild_key(projection.name)
    if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", key):
        raise RebuildRunning(f"a rebuild of {projection.name} is already running")
    try:
        return await _rebuild(conn, projection, batch_size=batch_size, on_progress=on_progress)
    finally:
        with contextlib.suppress(Exception):  # a lost connection has dropped the lock already
            await conn.execute("SELECT pg_advisory_unlock($1)", key)


async def remove_rebuild_leftovers(conn: Conn, projection: Projection) -> bool:
    """Remove what a rebuild killed before its swap left: its shadow schema, checkpoint and
    parked events. Nothing is removed while a rebuild of this model runs (it holds its
    lock). Returns whether there was something to remove."""
    schema, checkpoint = _shadow(projection)
    key = rebuild_key(projection.name)
    if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", key):
        return False
    try:
        found = await conn.fetchval(
            """SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)
                   OR EXISTS (SELECT 1 FROM projection_checkpoints WHERE name = $2)""",
            schema,
            checkpoint,
        )
        if not found:
            return False
        async with conn.transaction():
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            await conn.execute("DELETE FROM projection_checkpoints WHERE name = $1", checkpoint)
            await conn.execute("DELETE FROM parked_events WHERE projection = $1", checkpoint)
        log.info("projector.rebuild_leftovers_removed", projection=projection.name, schema=schema)
        return True
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", key)


async def _rebuild(
    conn: Conn,
    projection: Projection,
    *,
    batch_size: int,
    on_progress: Callable[[LogPosition], None] | None,
) -> LogPosition:
    shadow, shadow_checkpoint = _shadow(projection)
    await install(conn, projection, schema=shadow, checkpoint=shadow_checkpoint)
    position = LOG_START
    while True:
        count, last = await apply_next_batch(
            conn, projection, schema=shadow, checkpoint=shadow_checkpoint, batch_size=batch_size
        )
        if last is not None:
            position = last
            if on_progress is not None:
                on_progress(position)
        if count == 0:
            break
    async with conn.transaction():
        await conn.execute(
            """INSERT INTO projection_checkpoints (name, schema_hash) VALUES ($1, $2)
               ON CONFLICT (name) DO NOTHING""",
            projection.name,
            projection.schema_hash,
        )
        await conn.fetchrow(
            "SELECT 1 FROM projection_checkpoints WHERE name = $1 FOR UPDATE", projection.name
        )
        parked: list[Parked] = []
        while True:
            applied = await _apply_in_transaction(
                conn,
                projection,
                schema=shadow,
                checkpoint=shadow_checkpoint,
                batch_size=batch_size,
                isolate="savepoint",  # a failure must not undo the swap's transaction
            )
            parked.extend(applied.parked)
            if applied.last is not None:
                position = applied.last
            if applied.count == 0:
                break
        await conn.execute(f'DROP SCHEMA IF EXISTS "{projection.schema_name}" CASCADE')
        await conn.execute(f'ALTER SCHEMA "{shadow}" RENAME TO "{projection.schema_name}"')
        await conn.execute(
            """UPDATE projection_checkpoints AS live
               SET transaction_id = s.transaction_id, global_position = s.global_position,
                   schema_hash = s.schema_hash, updated_at = now()
               FROM projection_checkpoints AS s
               WHERE live.name = $1 AND s.name = $2""",
            projection.name,
            shadow_checkpoint,
        )
        await conn.execute("DELETE FROM projection_checkpoints WHERE name = $1", shadow_checkpoint)
        await conn.execute("DELETE FROM parked_events WHERE projection = $1", projection.name)
        await conn.execute(
            "UPDATE parked_events SET projection = $1 WHERE projection = $2",
            projection.name,
            shadow_checkpoint,
        )
    log_parked(parked)
    return position


async def ensure_current(conn: Conn, projection: Projection) -> None:
    """Install a projection that is missing; rebuild one whose schema changed; remove what
    a killed rebuild left. The runtime calls this whenever it takes a projection's lease, so
    at every start-up."""
    await ensure_tables(conn)
    await remove_rebuild_leftovers(conn, projection)
    row = await conn.fetchrow(
        "SELECT schema_hash FROM projection_checkpoints WHERE name = $1", projection.name
    )
    exists = await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)", projection.schema_name
    )
    if row is None or not exists:
        await install(conn, projection, schema=projection.schema_name, checkpoint=projection.name)
    elif row["schema_hash"] != projection.schema_hash:
        log.info("projection.schema_changed", projection=projection.name)
        await rebuild(conn, projection)


class ProjectorRuntime:
    """Runs the projections of this process and tells waiters how far each has got."""

    def __init__(
        self,
        dsn: str,
        projections: Sequence[Projection],
        *,
        batch_size: int = 1000,
        poll_interval_s: float = 0.25,
        lease_retry_s: float = 2.0,
        linger_s: float = 0.02,
    ) -> None:
        self._dsn = dsn
        self.projections = {p.name: p for p in projections}
        self._batch_size = batch_size
        self._poll_interval_s = poll_interval_s
        self._lease_retry_s = lease_retry_s
        self._bells = {name: asyncio.Event() for name in self.projections}
        self._urgent = {name: asyncio.Event() for name in self.projections}
        self._linger_s = linger_s
        self._progress = asyncio.Condition()
        self._positions: dict[str, LogPosition] = {}
        self._owned: set[str] = set()
        self._database_away: set[str] = set()  # projections that logged an outage
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        self.token = uuid.uuid4().hex  # tells this process's own NOTIFYs from others'

    # --- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        for projection in self.projections.values():
            self._tasks.append(
                asyncio.create_task(self._run(projection), name=f"projector:{projection.name}")
            )

    async def stop(self) -> None:
        self._stopping = True
        for bell in self._bells.values():
            bell.set()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()

    def ring(self, event_types: Iterable[str] | None = None) -> None:
        """The doorbell: new events may be in the log.

        With ``event_types``, only projections that handle one of them are woken: a metrics
        batch does not wake the registry's projector, whose checkpoint then moves on its next
        poll, or at once when a read needs it (see :meth:`ring_projections`).
        """
        if event_types is None:
            for bell in self._bells.values():
                bell.set()
            return
        types = set(event_types)
        for name, projection in self.projections.items():
            if not types.isdisjoint(projection.event_types):
                self._bells[name].set()

    def ring_projections(self, names: Iterable[str]) -> None:
        """Wake the named projections (a read is waiting for them to reach the log head)."""
        for name in names:
            bell = self._bells.get(name)
            if bell is not None:
                self._urgent[name].set()
                bell.set()

    def doorbell_payload(self, event_types: Iterable[str]) -> str:
        """The NOTIFY payload announcing ``event_types`` to projectors in other processes."""
        return json.dumps({"from": self.token, "types": sorted(event_types)})

    def _on_notify(self, payload: str) -> None:
        try:
            message = json.loads(payload)
            sender = message["from"]
            if "projections" in message:  # a read elsewhere waits for these
                self.ring_projections(message["projections"])
                return
            types = message["types"]
        except (ValueError, KeyError, TypeError):
            self.ring()  # an old or foreign doorbell: wake everyone
            return
        if sender != self.token:  # this process rang its own projectors already
            self.ring(types)

    def owns(self, name: str) -> bool:
        return name in self._owned

    def owns_all(self) -> bool:
        """Whether this process follows every projection (no other process needs waking)."""
        return len(self._owned) == len(self.projections)

    def position(self, name: str) -> LogPosition | None:
        return self._positions.get(name)

    def lag_behind(self, head_global_position: int) -> int:
        """Roughly how many events the slowest local projection is behind ``head``.

        Global positions are allocated in insertion order, not commit order, so this is an
        estimate, good for back-pressure, not for correctness.
        """
        if not self._positions:
            return 0
        slowest = min(p.global_position for p in self._positions.values())
        return max(0, head_global_position - slowest)

    async def wait_for_progress(self, timeout: float) -> None:
        async with self._progress:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._progress.wait(), timeout)

    # --- one projection --------------------------------------------------------------------

    async def _run(self, projection: Projection) -> None:
        while not self._stopping:
            try:
                await self._own_and_follow(projection)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not database_unavailable(exc):
                    log.exception("projector.failed", projection=projection.name)
                elif projection.name not in self._database_away:  # once per outage
                    self._database_away.add(projection.name)
                    log.warning(
                        "projector.database_unavailable",
                        projection=projection.name,
                        error=f"{type(exc).__name__}: {exc}",
                    )
                self._owned.discard(projection.name)
                await asyncio.sleep(1.0)

    async def _own_and_follow(self, projection: Projection) -> None:
        conn: Conn = await asyncpg.connect(self._dsn)
        try:
            while not await conn.fetchval(
                "SELECT pg_try_advisory_lock($1)", lease_key(projection.name)
            ):
                if self._stopping:
                    return
                await asyncio.sleep(self._lease_retry_s)
            await ensure_current(conn, projection)
            self._owned.add(projection.name)
            self._database_away.discard(projection.name)
            log.info("projector.lease_acquired", projection=projection.name)
            bell = self._bells[projection.name]

            def on_notify(_conn: Any, _pid: int, _channel: str, payload: object) -> None:
                self._on_notify(str(payload))

            await conn.add_listener(DOORBELL_CHANNEL, on_notify)
            # A read model is the log's fold, and its checkpoint moves in the same transaction
            # as its rows: a commit lost to a database crash is applied again from the log, so
            # the projector need not wait for its commits to reach disk. That wait, three
            # projectors per logged event, was most of a single log-metric call's latency.
            await conn.execute(
                f'SET search_path TO "{projection.schema_name}", public; '
                "SET synchronous_commit TO off"
            )
            while not self._stopping:
                bell.clear()
                applied = await self._apply_retrying(conn, projection)
                if applied.last is not None:
                    self._positions[projection.name] = applied.last
                    async with self._progress:
                        self._progress.notify_all()
                elif projection.name not in self._positions:
                    at = await checkpoint_position(conn, projection.name)
                    self._positions[projection.name] = LOG_START if at is None else at
                if applied.more:
                    continue
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(bell.wait(), self._poll_interval_s)
                await self._linger(projection.name)
        finally:
            self._owned.discard(projection.name)
            with contextlib.suppress(Exception):
                await conn.close()

    async def _linger(self, name: str) -> None:
        """After a write's doorbell, wait a moment for more writes before applying.

        The projectors share this process's event loop and the database with the requests
        that wake them: applying every logged event on its own doubles the work a stream of
        small writes costs. A few milliseconds' linger lets one batch take the events of
        several requests. A read waiting for this projection (``ring_projections``) cuts the
        linger short, so read-your-writes pays none of it.
        """
        urgent = self._urgent[name]
        if self._linger_s > 0 and not urgent.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(urgent.wait(), self._linger_s)
        urgent.clear()

    async def _apply_retrying(self, conn: Conn, projection: Projection) -> _Applied:
        for attempt in range(3):
            try:
                return await _apply_page(
                    conn,
                    projection,
                    schema=projection.schema_name,
                    checkpoint=projection.name,
                    batch_size=self._batch_size,
                    search_path_set=True,
                )
            except asyncpg.InvalidCachedStatementError:
                # The schema was swapped by a rebuild: statements re-prepare on retry.
                if attempt == 2:
                    raise
        return _Applied(0, None, False)

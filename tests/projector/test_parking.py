"""A projector never stops the world: an event it cannot apply is parked, the rest goes on.

A test-only projection fails on tag keys listed in ``POISON`` (a handler bug) until the
"fix" empties it. Events that cannot even be decoded are injected straight into the log.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import asyncpg
import pytest
import structlog
from _support.recorder import execute

from evtrack.eventlog import ANY_VERSION, EventStore, RecordedEvent, UnitOfWork
from evtrack.events import ExperimentTagSet, Metadata
from evtrack.projector import (
    Projection,
    ProjectorRuntime,
    apply_next_batch,
    ensure_tables,
    install,
    list_parked,
    parked_counts,
    read_checkpoints,
    rebuild,
    retry_parked,
)

from ._helpers import drain_to_head

META = Metadata(actor="tester")
POISON: set[str] = set()


def flaky_projection() -> Projection:
    """Records every tag event it applies, in order; fails on the keys in ``POISON``."""
    projection = Projection(
        "flaky",
        "CREATE TABLE seen (n bigserial PRIMARY KEY, key text NOT NULL, position bigint NOT NULL);",
    )

    @projection.on(ExperimentTagSet)
    async def _seen(conn: asyncpg.Connection, e: ExperimentTagSet, rec: RecordedEvent) -> None:
        await conn.execute(
            "INSERT INTO seen (key, position) VALUES ($1, $2)", e.key, rec.position.global_position
        )
        if e.key in POISON:
            raise ValueError(f"cannot apply {e.key}")

    return projection


@pytest.fixture(autouse=True)
def _no_poison() -> None:
    POISON.clear()


async def _tag(store: EventStore, *keys: str) -> None:
    async def command(uow: UnitOfWork) -> None:
        uow.append(
            "experiment-1",
            [ExperimentTagSet(experiment_id=1, key=k, value="") for k in keys],
            expected_version=ANY_VERSION,
        )

    await execute(store, command, metadata=META, result_type=type(None))


async def _inject_undecodable(pool: asyncpg.Pool, stream_id: str) -> int:
    """An ExperimentTagSet row whose payload is not MessagePack at all (from a broken writer)."""
    position: int = await pool.fetchval(
        """INSERT INTO events (stream_id, stream_position, event_type, schema_version, payload,
                               actor, metadata)
           VALUES ($1, 1, 'ExperimentTagSet', 1, '\\xc1'::bytea, 'intruder', '{}')
           RETURNING global_position""",
        stream_id,
    )
    return position


async def _seen(pool: asyncpg.Pool) -> list[str]:
    return [r[0] for r in await pool.fetch("SELECT key FROM rm_flaky.seen ORDER BY n")]


async def _wait_at_head(runtime: ProjectorRuntime, store: EventStore, name: str) -> float:
    """Seconds until the runtime's projection has passed every event committed now."""
    head = await store.last_visible_position()
    started = time.monotonic()
    while (runtime.position(name) or (0, 0)) < head:
        assert time.monotonic() - started < 30, f"{name} is stuck at {runtime.position(name)}"
        await asyncio.sleep(0.02)
    return time.monotonic() - started


async def test_a_failing_event_is_parked_once_and_the_projection_goes_on(
    store: EventStore, pool: asyncpg.Pool, fresh_database_dsn: str
) -> None:
    projection = flaky_projection()
    POISON.add("bad")
    # One page: the bad events sit among good ones, so the page is bisected.
    await _tag(store, "a1", "a2", "bad", "a3")
    undecodable = await _inject_undecodable(pool, "raw-1")
    await _tag(store, "b1", "b2")
    runtime = ProjectorRuntime(fresh_database_dsn, [projection], poll_interval_s=0.05)
    with structlog.testing.capture_logs() as logs:
        await runtime.start()
        try:
            await _wait_at_head(runtime, store, "flaky")
            # It keeps following the log, promptly, with the bad events behind it.
            await _tag(store, "c1")
            assert await _wait_at_head(runtime, store, "flaky") < 2.0
            await asyncio.sleep(0.5)  # several more polls: nothing is logged again
        finally:
            await runtime.stop()

    # Exactly once, in log order, for everything that applies (the bad tag's insert was
    # rolled back with its savepoint).
    assert await _seen(pool) == ["a1", "a2", "a3", "b1", "b2", "c1"]
    parked = await list_parked(pool)  # type: ignore[arg-type]
    assert [(p.projection, p.event_type, p.attempts) for p in parked] == [
        ("flaky", "ExperimentTagSet", 1),
        ("flaky", "ExperimentTagSet", 1),
    ]
    assert parked[0].stream_id == "experiment-1"
    assert "ValueError: cannot apply bad" in parked[0].error
    assert parked[1].stream_id == "raw-1"
    assert parked[1].position.global_position == undecodable
    assert parked[1].error.startswith(
        "UndecodableEvent: DecodeError: MessagePack data is malformed"
    )
    assert parked[0].position < parked[1].position
    checkpoint = (await read_checkpoints(pool, ["flaky"]))["flaky"]
    assert checkpoint > parked[1].position
    events = [e for e in logs if e["event"] == "projector.event_parked"]
    assert [e["global_position"] for e in events] == [p.position.global_position for p in parked]
    assert await parked_counts(pool) == {"flaky": 2}  # type: ignore[arg-type]


async def test_retry_applies_what_now_applies_and_keeps_the_rest(
    store: EventStore, pool: asyncpg.Pool
) -> None:
    projection = flaky_projection()
    POISON.update({"bad", "worse"})
    async with pool.acquire() as conn:
        await install(conn, projection, schema=projection.schema_name, checkpoint=projection.name)
        await _tag(store, "a", "bad", "b", "worse", "c")
        await drain_to_head(conn, projection)
        assert await _seen(pool) == ["a", "b", "c"]

        POISON.discard("bad")  # the fix for one of them
        outcome = await retry_parked(conn, projection)
        assert [p.event_type for p in outcome.applied] == ["ExperimentTagSet"]
        assert [(p.attempts, p.error) for p in outcome.still_parked] == [
            (2, "ValueError: cannot apply worse")
        ]
        # Re-applied after the later events: that is the order the operator asked for.
        assert await _seen(pool) == ["a", "b", "c", "bad"]
        [left] = await list_parked(conn, "flaky")
        assert left.attempts == 2
        assert left.first_parked_at is not None

        POISON.clear()
        outcome = await retry_parked(conn, projection)
        assert len(outcome.applied) == 1 and outcome.still_parked == []
        assert await _seen(pool) == ["a", "b", "c", "bad", "worse"]
        assert await list_parked(conn) == []
        assert (await retry_parked(conn, projection)).applied == []


async def test_a_rebuild_tries_every_event_again(store: EventStore, pool: asyncpg.Pool) -> None:
    projection = flaky_projection()
    POISON.update({"bad", "worse"})
    async with pool.acquire() as conn:
        await install(conn, projection, schema=projection.schema_name, checkpoint=projection.name)
        await _tag(store, "a", "bad", "worse")
        await drain_to_head(conn, projection)
        assert len(await list_parked(conn, "flaky")) == 2

        POISON.discard("bad")
        await rebuild(conn, projection)
        assert await _seen(pool) == ["a", "bad"]
        assert [p.attempts for p in await list_parked(conn)] == [1]  # only what still fails
        assert (await list_parked(conn))[0].projection == "flaky"  # not the shadow's name

        POISON.clear()
        await rebuild(conn, projection)
        assert await _seen(pool) == ["a", "bad", "worse"]
        assert await list_parked(conn) == []


async def test_infrastructure_errors_are_retried_not_parked(
    store: EventStore, pool: asyncpg.Pool
) -> None:
    """A missing read-model table is the schema's fault, not the event's: nothing is parked,
    the checkpoint does not move, and the batch applies once the table is back."""
    projection = flaky_projection()
    async with pool.acquire() as conn:
        await install(conn, projection, schema=projection.schema_name, checkpoint=projection.name)
        await _tag(store, "a")
        await conn.execute("ALTER TABLE rm_flaky.seen RENAME TO hidden")
        with pytest.raises(asyncpg.UndefinedTableError):
            await apply_next_batch(
                conn, projection, schema="rm_flaky", checkpoint="flaky", batch_size=100
            )
        assert await list_parked(conn) == []
        await conn.execute("ALTER TABLE rm_flaky.hidden RENAME TO seen")
        await drain_to_head(conn, projection)
        assert await _seen(pool) == ["a"]


async def test_the_projector_creates_its_own_tables_idempotently(pool: asyncpg.Pool) -> None:
    """A database whose log has no checkpoint table (set up another way) gets both tables
    from the projector, even with several creators racing; an existing one is kept."""
    async with pool.acquire() as conn:
        await conn.execute("DROP TABLE projection_checkpoints")
        assert await conn.fetchval("SELECT to_regclass('parked_events')") is None
    async with pool.acquire() as a, pool.acquire() as b, pool.acquire() as c:
        await asyncio.gather(ensure_tables(a), ensure_tables(b), ensure_tables(c))
    projection = flaky_projection()
    async with pool.acquire() as conn:
        await install(conn, projection, schema=projection.schema_name, checkpoint=projection.name)
        await ensure_tables(conn)
        assert await conn.fetchval("SELECT to_regclass('public.parked_events')") is not None
        assert await read_checkpoints(conn, ["flaky"]) == {"flaky": (0, 0)}


def test_the_event_log_does_not_name_the_projectors_tables() -> None:
    """Only its migration 0001 (history) does: the tables belong to the projector."""
    import evtrack.eventlog

    package = Path(evtrack.eventlog.__file__).parent
    for source in package.glob("*.py"):
        text = source.read_text()
        assert "projection_checkpoints" not in text and "parked_events" not in text, source

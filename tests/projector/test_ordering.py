"""Invariant 2 and 3: projectors see every committed event once, in log order."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
from _support.recorder import execute

from evtrack.eventlog import ANY_VERSION, EventStore, RecordedEvent, UnitOfWork
from evtrack.events import ExperimentTagSet, Metadata
from evtrack.projector import Projection, apply_next_batch, install

from ._helpers import drain_to_head

META = Metadata(actor="tester")


def recording_projection() -> Projection:
    """A projection that writes every tag event it sees into a table, in arrival order."""
    projection = Projection(
        "recorder",
        "CREATE TABLE seen (n bigserial PRIMARY KEY, key text NOT NULL, position bigint NOT NULL);",
    )

    @projection.on(ExperimentTagSet)
    async def _seen(conn: asyncpg.Connection, e: ExperimentTagSet, rec: RecordedEvent) -> None:
        await conn.execute(
            "INSERT INTO seen (key, position) VALUES ($1, $2)", e.key, rec.position.global_position
        )

    return projection


async def _drain(conn: asyncpg.Connection, projection: Projection) -> int:
    total = 0
    while True:
        count, _ = await apply_next_batch(
            conn,
            projection,
            schema=projection.schema_name,
            checkpoint=projection.name,
            batch_size=100,
        )
        total += count
        if count == 0:
            return total


async def _seen(pool: asyncpg.Pool) -> list[str]:
    return [r[0] for r in await pool.fetch("SELECT key FROM rm_recorder.seen ORDER BY n")]


async def test_a_late_committer_is_seen_exactly_once_in_its_place(
    store: EventStore, pool: asyncpg.Pool
) -> None:
    projection = recording_projection()
    async with pool.acquire() as conn:
        await install(conn, projection, schema=projection.schema_name, checkpoint=projection.name)

    slow_inserted = asyncio.Event()
    release_slow = asyncio.Event()

    async def slow(uow: UnitOfWork) -> None:
        uow.append(
            "s-slow",
            [ExperimentTagSet(experiment_id=1, key="slow", value="")],
            expected_version=ANY_VERSION,
        )
        await uow.flush()  # the row exists, uncommitted, with the older transaction id
        slow_inserted.set()
        await release_slow.wait()

    async def fast(uow: UnitOfWork) -> None:
        uow.append(
            "s-fast",
            [ExperimentTagSet(experiment_id=1, key="fast", value="")],
            expected_version=ANY_VERSION,
        )

    slow_task = asyncio.create_task(execute(store, slow, metadata=META, result_type=type(None)))
    await slow_inserted.wait()
    await execute(store, fast, metadata=META, result_type=type(None))

    async with pool.acquire() as conn:
        # The fast event committed, but it sits behind a transaction still running: nothing
        # may be read past the horizon, or the slow event would be skipped for ever.
        assert await _drain(conn, projection) == 0
        release_slow.set()
        await slow_task
        assert await drain_to_head(conn, projection, batch_size=100) == 2
        assert await _drain(conn, projection) == 0
    assert await _seen(pool) == ["slow", "fast"]


async def test_many_concurrent_writers_are_all_projected_once(
    store: EventStore, pool: asyncpg.Pool
) -> None:
    projection = recording_projection()
    async with pool.acquire() as conn:
        await install(conn, projection, schema=projection.schema_name, checkpoint=projection.name)

    async def writer(w: int) -> None:
        for i in range(20):

            async def command(uow: UnitOfWork, i: int = i) -> None:
                uow.append(
                    f"s-{w}",
                    [ExperimentTagSet(experiment_id=w, key=f"{w}:{i}", value="")],
                    expected_version=ANY_VERSION,
                )

            await execute(store, command, metadata=META, result_type=type(None))

    async def projector(stop: asyncio.Event) -> None:
        async with pool.acquire() as conn:
            while not stop.is_set():
                await _drain(conn, projection)
                await asyncio.sleep(0.001)
            await drain_to_head(conn, projection, batch_size=100)

    stop = asyncio.Event()
    follower = asyncio.create_task(projector(stop))
    await asyncio.gather(*(writer(w) for w in range(8)))
    stop.set()
    await follower
    seen = await _seen(pool)
    assert len(seen) == len(set(seen)) == 160
    # Within each stream, the projector saw events in the order they were appended.
    for w in range(8):
        mine = [int(k.split(":")[1]) for k in seen if k.startswith(f"{w}:")]
        assert mine == sorted(mine)


async def test_two_projector_owners_cannot_apply_a_batch_twice(
    store: EventStore, pool: asyncpg.Pool
) -> None:
    projection = recording_projection()
    async with pool.acquire() as conn:
        await install(conn, projection, schema=projection.schema_name, checkpoint=projection.name)
    for i in range(50):

        async def command(uow: UnitOfWork, i: int = i) -> None:
            uow.append(
                "s",
                [ExperimentTagSet(experiment_id=1, key=str(i), value="")],
                expected_version=ANY_VERSION,
            )

        await execute(store, command, metadata=META, result_type=type(None))

    async def owner() -> int:
        async with pool.acquire() as conn:
            total = 0
            while True:
                count, _ = await apply_next_batch(
                    conn,
                    projection,
                    schema=projection.schema_name,
                    checkpoint=projection.name,
                    batch_size=7,
                )
                total += count
                if count == 0:
                    # Done once the shared checkpoint has passed every event (another owner
                    # may hold the batch this one would take, or the cluster's horizon may lag).
                    return total + await drain_to_head(conn, projection, batch_size=7)

    totals = await asyncio.gather(owner(), owner(), owner())
    assert sum(totals) == 50
    assert await _seen(pool) == [str(i) for i in range(50)]


async def _open_write_transaction(dsn: str) -> tuple[asyncpg.Connection, asyncpg.Transaction]:
    """A connection holding a transaction that has a transaction id and stays open."""
    conn = await asyncpg.connect(dsn)
    await conn.execute("CREATE TABLE IF NOT EXISTS scratch (n int)")
    tx = conn.transaction()
    await tx.start()
    await conn.execute("INSERT INTO scratch VALUES (1)")
    return conn, tx


async def _tag_seen_within(
    store: EventStore, pool: asyncpg.Pool, projection: Projection, key: str, seconds: float
) -> bool:
    async def append(uow: UnitOfWork) -> None:
        uow.append(
            "exp-1",
            [ExperimentTagSet(experiment_id=1, key=key, value="v")],
            expected_version=ANY_VERSION,
        )

    await execute(store, append, metadata=META, result_type=type(None))
    deadline = asyncio.get_running_loop().time() + seconds
    async with pool.acquire() as conn:
        while asyncio.get_running_loop().time() < deadline:
            await _drain(conn, projection)
            if key in await _seen(pool):
                return True
            await asyncio.sleep(0.05)
    return False


async def test_open_transactions_of_other_databases_do_not_hold_projections_back(
    store: EventStore, pool: asyncpg.Pool, make_database: Any, fresh_database_dsn: str
) -> None:
    """Only transactions that can write this log bound what projectors may read."""
    projection = recording_projection()
    async with pool.acquire() as conn:
        await install(conn, projection, schema=projection.schema_name, checkpoint=projection.name)
    other, other_tx = await _open_write_transaction(make_database())
    try:
        assert await _tag_seen_within(store, pool, projection, "despite-other-db", 30)
    finally:
        await other_tx.rollback()
        await other.close()
    same, same_tx = await _open_write_transaction(fresh_database_dsn)  # the pool's database
    try:
        # A transaction of this database might still append events: it must hold reads back.
        assert not await _tag_seen_within(store, pool, projection, "held-back", 1.5)
    finally:
        await same_tx.rollback()
        await same.close()
    assert await _tag_seen_within(store, pool, projection, "after", 30)
    assert (await _seen(pool))[-2:] == ["held-back", "after"]

"""Expired idempotency keys are pruned; live ones, and retries within them, are kept."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import asyncpg
from _support.server import EvtrackServer

from evtrack.eventlog import prune_idempotency_keys
from evtrack.eventlog._pruning import PRUNE_LOCK_KEY

DAY = 86400.0
ROWS = {
    # key: (derived, age in seconds)
    "derived-old": (True, 601),
    "derived-older": (True, 3 * DAY),
    "derived-fresh": (True, 30),
    "explicit-old": (False, 8 * DAY),
    "explicit-a-day": (False, DAY),
    "explicit-fresh": (False, 5),
}


async def _seed(pool: asyncpg.Pool) -> None:
    await pool.executemany(
        """INSERT INTO idempotency_keys (key, derived, created_at, result)
           VALUES ($1, $2, now() - make_interval(secs => $3), '\\x00')""",
        [(key, derived, float(age)) for key, (derived, age) in ROWS.items()],
    )


async def _keys(pool: asyncpg.Pool) -> set[str]:
    return {r["key"] for r in await pool.fetch("SELECT key FROM idempotency_keys")}


async def test_only_expired_keys_are_pruned_in_batches(pool: asyncpg.Pool) -> None:
    await _seed(pool)
    pruned = await prune_idempotency_keys(
        pool, derived_ttl_s=600, explicit_retention_s=7 * DAY, batch=1
    )
    assert pruned.ran
    assert pruned.deleted == 3
    assert await _keys(pool) == {"derived-fresh", "explicit-a-day", "explicit-fresh"}
    again = await prune_idempotency_keys(pool, derived_ttl_s=600, explicit_retention_s=7 * DAY)
    assert (again.ran, again.deleted) == (True, 0)


async def test_retention_is_the_operators_choice(pool: asyncpg.Pool) -> None:
    await _seed(pool)
    await prune_idempotency_keys(pool, derived_ttl_s=600, explicit_retention_s=3600)
    assert await _keys(pool) == {"derived-fresh", "explicit-fresh"}


async def test_one_pruner_at_a_time(pool: asyncpg.Pool) -> None:
    await _seed(pool)
    async with pool.acquire() as other_node:
        assert await other_node.fetchval("SELECT pg_try_advisory_lock($1)", PRUNE_LOCK_KEY)
        try:
            pruned = await prune_idempotency_keys(pool, derived_ttl_s=600)
        finally:
            await other_node.execute("SELECT pg_advisory_unlock($1)", PRUNE_LOCK_KEY)
    assert (pruned.ran, pruned.deleted) == (False, 0)
    assert await _keys(pool) == set(ROWS)
    # Once the other node lets go, the next pass runs.
    assert (await prune_idempotency_keys(pool, derived_ttl_s=600)).deleted == 3


def test_the_server_prunes_periodically(
    evtrack_server_factory: Callable[..., EvtrackServer],
) -> None:
    server = evtrack_server_factory(
        extra_args=["--idempotency-prune-interval", "0.5s", "--idempotency-retention", "1d"]
    )

    async def seed_then_wait() -> set[str]:
        pool = await asyncpg.create_pool(server.dsn, min_size=1, max_size=2)
        try:
            await _seed(pool)
            deadline = time.monotonic() + 15
            while "explicit-a-day" in (keys := await _keys(pool)):
                if time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.2)
            return keys
        finally:
            await pool.close()

    assert asyncio.run(seed_then_wait()) == {"derived-fresh", "explicit-fresh"}
    assert '"event": "idempotency.pruned"' in server.stderr_path.read_text()

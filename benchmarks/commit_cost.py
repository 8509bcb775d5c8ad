"""Would application-level group commit help? Measure what a commit costs on this machine.

Group commit (coalescing concurrent requests into one transaction) saves one WAL flush per
request folded in, and costs a savepoint round trip per request (so one request's error or
conflict does not undo the others). It pays off only where the flush is what limits
throughput. This script measures exactly that: transactions shaped like an evtrack write
(an insert and a few more statements), from 1 and from 16 concurrent connections, with
``synchronous_commit`` on (every commit waits for its flush, the server default) and off (no
waiting at all: the most any group commit could save).

    python benchmarks/commit_cost.py [--database-url URL] [--seconds 5]

If "off" is not clearly faster than "on" with 16 writers, PostgreSQL's own grouping of
concurrent flushes already captures the gain, and coalescing in the application would only
add round trips.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
import uuid

import asyncpg

STATEMENTS_PER_TRANSACTION = 6  # evtrack's write path: claim, heads, append, result, ...


async def _rate(dsn: str, writers: int, synchronous_commit: str, seconds: float) -> float:
    pool = await asyncpg.create_pool(
        dsn,
        min_size=writers,
        max_size=writers,
        server_settings={"synchronous_commit": synchronous_commit},
    )
    done = 0
    stop = time.monotonic() + seconds

    async def writer() -> None:
        nonlocal done
        while time.monotonic() < stop:
            async with pool.acquire() as conn, conn.transaction():
                await conn.execute("INSERT INTO probe (payload) VALUES ($1)", os.urandom(256))
                for _ in range(STATEMENTS_PER_TRANSACTION - 1):
                    await conn.fetchval("SELECT 1")
            done += 1

    started = time.monotonic()
    await asyncio.gather(*(writer() for _ in range(writers)))
    elapsed = time.monotonic() - started
    await pool.close()
    return done / elapsed


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--database-url",
        default=os.environ.get(
            "BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
        ),
        help="a maintenance database URL; a scratch database is created next to it",
    )
    parser.add_argument("--seconds", type=float, default=5.0, help="per measurement (5)")
    args = parser.parse_args()
    name = f"commit_cost_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(args.database_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    dsn = args.database_url.rsplit("/", 1)[0] + f"/{name}"
    try:
        setup = await asyncpg.connect(dsn)
        await setup.execute("CREATE TABLE probe (id bigserial PRIMARY KEY, payload bytea)")
        await setup.close()
        print("| writers | synchronous_commit=on tx/s | off tx/s | off/on |")
        print("|---:|---:|---:|---:|")
        for writers in (1, 16):
            on = await _rate(dsn, writers, "on", args.seconds)
            off = await _rate(dsn, writers, "off", args.seconds)
            print(f"| {writers} | {on:,.0f} | {off:,.0f} | {off / on:.2f}x |")
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


if __name__ == "__main__":
    asyncio.run(main())

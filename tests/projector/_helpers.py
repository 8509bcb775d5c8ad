"""Driving projections to the head of the log in tests, robust to a busy Postgres cluster.

Projectors only read below the oldest transaction running anywhere in the cluster, so a
transaction of an unrelated database can hold them back for a moment; tests wait for the
projection to reach the log's head instead of assuming one pass gets there.
"""

from __future__ import annotations

import asyncio
import time

import asyncpg

from evtrack.eventlog import LogPosition
from evtrack.projector import Projection, apply_next_batch, read_checkpoints


async def drain_to_head(
    conn: asyncpg.Connection,
    projection: Projection,
    *,
    batch_size: int = 500,
    timeout: float = 60.0,
) -> int:
    """Apply batches until the projection has passed every event committed now."""
    row = await conn.fetchrow(
        """SELECT transaction_id, global_position FROM events
           ORDER BY transaction_id DESC, global_position DESC LIMIT 1"""
    )
    head = LogPosition(0, 0) if row is None else LogPosition(row[0], row[1])
    deadline = time.monotonic() + timeout
    total = 0
    while True:
        count, _ = await apply_next_batch(
            conn,
            projection,
            schema=projection.schema_name,
            checkpoint=projection.name,
            batch_size=batch_size,
        )
        total += count
        if count:
            continue
        at = (await read_checkpoints(conn, [projection.name]))[projection.name]
        if at >= head:
            return total
        assert time.monotonic() < deadline, f"{projection.name} did not reach the log head"
        await asyncio.sleep(0.05)

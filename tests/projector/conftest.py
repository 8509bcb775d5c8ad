"""Fixtures for event-log tests: a migrated database, a pool and an event store on it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest

from evtrack.eventlog import EventStore, upgrade
from evtrack.server import create_pool


@pytest.fixture
async def pool(fresh_database_dsn: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(fresh_database_dsn, 10)
    async with pool.acquire() as conn:
        await upgrade(conn)
    try:
        yield pool
    finally:
        await pool.close()


@pytest.fixture
def store(pool: asyncpg.Pool) -> EventStore:
    return EventStore(pool)

"""The evtrack an import writes into: the database and artifact store a server would use.

Built here the way the server's composition root builds them (pool, event store, command
executor, artifact store), from the same settings, so an import can run while servers serve
the same database: its commands take the same locks and versions, and its doorbell wakes
their projectors.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import asyncpg

from evtrack.application import CommandExecutor
from evtrack.artifacts import ArtifactStore, artifact_store_for, close_artifact_store
from evtrack.artifacts import start_artifact_store as _start_store
from evtrack.eventlog import EventStore, upgrade
from evtrack.projector import Doorbell
from evtrack.server import create_pool


@dataclass(frozen=True)
class Target:
    pool: asyncpg.Pool
    commands: CommandExecutor
    artifacts: ArtifactStore | None


@asynccontextmanager
async def open_target(
    dsn: str, artifacts_uri: str | None, *, pool_size: int = 8
) -> AsyncIterator[Target]:
    """The database at ``dsn`` (migrated if needed) and, unless None, the artifact store."""
    pool = await create_pool(dsn, pool_size)
    store = None
    try:
        async with pool.acquire() as conn:
            await upgrade(conn)
        doorbell = Doorbell(pool, None)
        commands = CommandExecutor(EventStore(pool), on_commit=doorbell.ring)
        store = artifact_store_for(artifacts_uri) if artifacts_uri else None
        if store is not None:
            await _start_store(store)
        yield Target(pool, commands, store)
    finally:
        if store is not None:
            await close_artifact_store(store)
        await pool.close()

"""What the request handlers share: the database pool, the event store, the read side."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg
from aiohttp import web

from evtrack.config import Settings
from evtrack.domain.registry import PromotionPolicy
from evtrack.eventlog import EventStore, LogPosition
from evtrack.projector import DOORBELL_CHANNEL, ProjectorRuntime, read_checkpoints


class Doorbell:
    """Wakes projectors after a commit: directly in this process, by NOTIFY in others.

    The NOTIFY is sent on its own, after the ingest transaction committed (never inside it,
    where it would take Postgres's global notify lock at commit), at most once per interval.
    """

    def __init__(
        self, pool: asyncpg.Pool, runtime: ProjectorRuntime | None, interval_s: float = 0.02
    ) -> None:
        self._pool = pool
        self._runtime = runtime
        self._interval_s = interval_s
        self._pending = False
        self._task: asyncio.Task[None] | None = None
        self._notify_remote = runtime is None or not runtime.projections

    def ring(self) -> None:
        if self._runtime is not None:
            self._runtime.ring()
        if not self._pending:
            self._pending = True
            self._task = asyncio.get_running_loop().create_task(self._notify())

    async def _notify(self) -> None:
        await asyncio.sleep(self._interval_s)
        self._pending = False
        with contextlib.suppress(Exception):
            await self._pool.execute(f"NOTIFY {DOORBELL_CHANNEL}")


class Freshness:
    """Read-your-writes: wait until read models include everything committed before a read."""

    def __init__(
        self, store: EventStore, runtime: ProjectorRuntime | None, timeout_s: float
    ) -> None:
        self._store = store
        self._runtime = runtime
        self._timeout_s = timeout_s

    async def wait(self, names: Sequence[str]) -> bool:
        """Return True when ``names`` have caught up, False if the bounded wait ran out."""
        target = await self._store.last_visible_position()
        if target == LogPosition(0, 0):
            return True
        deadline = time.monotonic() + self._timeout_s
        while True:
            positions = await self._positions(names)
            if all(positions.get(n, LogPosition(0, 0)) >= target for n in names):
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            if self._runtime is not None:
                self._runtime.ring()
                if all(self._runtime.owns(n) for n in names):
                    await self._runtime.wait_for_progress(min(remaining, 0.05))
                    continue
            await asyncio.sleep(min(remaining, 0.01))

    async def _positions(self, names: Sequence[str]) -> dict[str, LogPosition]:
        runtime = self._runtime
        if runtime is not None and all(runtime.owns(n) for n in names):
            return {n: p for n in names if (p := runtime.position(n)) is not None}
        return await read_checkpoints(self._store.pool, names)


@dataclass
class Services:
    settings: Settings
    pool: asyncpg.Pool
    store: EventStore
    runtime: ProjectorRuntime | None
    freshness: Freshness
    doorbell: Doorbell
    policy: PromotionPolicy


SERVICES = web.AppKey("services", Services)

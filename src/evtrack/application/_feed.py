"""The log as a feed for subscribers (the SSE stream): read in order, wait for more."""

from __future__ import annotations

import asyncio
import contextlib

from evtrack.eventlog import EventStore, LogPosition, RecordedEvent, read_after
from evtrack.projector import ProjectorRuntime


class EventFeed:
    """Reads the log under the projectors' horizon rule, so a late-committing transaction is
    delivered in its place, never skipped."""

    def __init__(self, store: EventStore, runtime: ProjectorRuntime | None) -> None:
        self._store = store
        self._runtime = runtime

    async def head(self) -> LogPosition:
        return await self._store.last_visible_position()

    async def read_after(self, after: LogPosition, limit: int) -> list[RecordedEvent]:
        async with self._store.pool.acquire() as conn:
            return await read_after(conn, after, limit, None)

    async def wait(self, timeout_s: float) -> None:
        """Return after new events may have arrived, or after ``timeout_s``."""
        if self._runtime is not None:
            with contextlib.suppress(TimeoutError):
                await self._runtime.wait_for_progress(timeout_s)
        else:
            await asyncio.sleep(timeout_s)

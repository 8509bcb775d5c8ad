"""Read your writes (invariant 7): a read waits until read models include what it must see."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Sequence

from evtrack.eventlog import EventStore, LogPosition
from evtrack.projector import DOORBELL_CHANNEL, ProjectorRuntime, read_checkpoints


class Freshness:
    """Read-your-writes: wait until read models include everything committed before a read."""

    def __init__(
        self, store: EventStore, runtime: ProjectorRuntime | None, timeout_s: float
    ) -> None:
        self._store = store
        self._runtime = runtime
        self._timeout_s = timeout_s

    @property
    def timeout_s(self) -> float:
        return self._timeout_s

    async def wait(self, names: Sequence[str]) -> tuple[str, ...]:
        """Wait until ``names`` include every event committed before the call.

        Returns the names still behind when the bounded wait ran out (empty: all caught up),
        so the caller can refuse the read (invariant 12) instead of serving stale data.
        """
        target = await self._store.last_visible_position()
        if target == LogPosition(0, 0):
            return ()
        deadline = time.monotonic() + self._timeout_s
        asked_remote = False
        while True:
            positions = await self._positions(names)
            behind = tuple(n for n in names if positions.get(n, LogPosition(0, 0)) < target)
            if not behind:
                return ()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return behind
            if not asked_remote and not self._all_local(names):
                # Projectors in other processes wake for the event types they handle; ask
                # the ones this read needs to catch up now rather than at their next poll.
                asked_remote = True
                payload = json.dumps({"from": "freshness", "projections": list(names)})
                with contextlib.suppress(Exception):
                    await self._store.pool.execute(
                        "SELECT pg_notify($1, $2)", DOORBELL_CHANNEL, payload
                    )
            if self._runtime is not None:
                self._runtime.ring_projections(names)
                if all(self._runtime.owns(n) for n in names):
                    await self._runtime.wait_for_progress(min(remaining, 0.05))
                    continue
            await asyncio.sleep(min(remaining, 0.01))

    def _all_local(self, names: Sequence[str]) -> bool:
        runtime = self._runtime
        return runtime is not None and all(runtime.owns(n) for n in names)

    async def _positions(self, names: Sequence[str]) -> dict[str, LogPosition]:
        runtime = self._runtime
        if runtime is not None and all(runtime.owns(n) for n in names):
            return {n: p for n in names if (p := runtime.position(n)) is not None}
        return await read_checkpoints(self._store.pool, names)

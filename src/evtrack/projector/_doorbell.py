"""The doorbell: how projectors learn, soon after a commit, that the log has grown."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid

import asyncpg

from evtrack.projector._runtime import DOORBELL_CHANNEL, ProjectorRuntime


class Doorbell:
    """Wakes projectors after a commit: directly in this process, by NOTIFY in others.

    Only projectors that handle one of the committed event types are woken. The NOTIFY is
    sent on its own, after the ingest transaction committed (never inside it, where it would
    take Postgres's global notify lock at commit), at most once per interval, naming every
    event type committed since the last one.
    """

    def __init__(
        self, pool: asyncpg.Pool, runtime: ProjectorRuntime | None, interval_s: float = 0.02
    ) -> None:
        self._pool = pool
        self._runtime = runtime
        self._interval_s = interval_s
        self._pending: set[str] = set()
        self._task: asyncio.Task[None] | None = None
        self._token = runtime.token if runtime is not None else uuid.uuid4().hex

    def ring(self, event_types: frozenset[str]) -> None:
        if self._runtime is not None:
            self._runtime.ring(event_types)
            if self._runtime.owns_all():
                return  # every projector is here and awake: nobody elsewhere to notify
        if not self._pending:
            self._task = asyncio.get_running_loop().create_task(self._notify())
        self._pending.update(event_types)

    async def _notify(self) -> None:
        await asyncio.sleep(self._interval_s)
        payload = json.dumps({"from": self._token, "types": sorted(self._pending)})
        self._pending = set()
        with contextlib.suppress(Exception):
            await self._pool.execute("SELECT pg_notify($1, $2)", DOORBELL_CHANNEL, payload)

"""The asyncio facade: ``AsyncClient`` and ``AsyncRun``.

Log calls stay synchronous: they only append to the spool (microseconds, no I/O wait), so
making them coroutines would add an await per point for nothing. What can wait (flushing,
closing, copying an artifact into the spool) runs in a worker thread and is awaited, so the
event loop is never blocked.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from types import TracebackType
from typing import Any

from evtrack.client._client import Client, Run


class AsyncRun:
    """A ``Run`` for ``async with``; ``run.log_*`` are the same fast synchronous calls."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self.run_id = run.run_id
        self.log_metric = run.log_metric
        self.log_metrics = run.log_metrics
        self.log_param = run.log_param
        self.log_params = run.log_params
        self.set_tag = run.set_tag
        self.set_tags = run.set_tags

    def __repr__(self) -> str:
        return f"<evtrack AsyncRun {self.run_id}>"

    async def log_artifact(
        self, local_path: str | os.PathLike[str], artifact_path: str | None = None
    ) -> None:
        await asyncio.to_thread(self.run.log_artifact, local_path, artifact_path)

    async def flush(self, timeout: float | None = None) -> bool:
        return await asyncio.to_thread(self.run.flush, timeout)

    def end(self, status: str = "FINISHED") -> None:
        self.run.end(status)

    async def __aenter__(self) -> AsyncRun:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is not None and issubclass(exc_type, asyncio.CancelledError):
            self.run.__exit__(KeyboardInterrupt, None, None)  # cancelled: KILLED
            return
        self.run.__exit__(exc_type, exc, tb)


class AsyncClient:
    """``Client`` for asyncio programs; takes the same arguments."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.client = Client(*args, **kwargs)

    def start_run(
        self,
        experiment_name: str | None = None,
        *,
        experiment_id: str | None = None,
        run_name: str | None = None,
        run_id: str | None = None,
        tags: Mapping[str, Any] | None = None,
        end_on_exit: bool = True,
    ) -> AsyncRun:
        return AsyncRun(
            self.client.start_run(
                experiment_name,
                experiment_id=experiment_id,
                run_name=run_name,
                run_id=run_id,
                tags=tags,
                end_on_exit=end_on_exit,
            )
        )

    def log_metric(
        self, key: str, value: float, step: int | None = None, timestamp: int | None = None
    ) -> None:
        self.client.log_metric(key, value, step, timestamp)

    def log_metrics(
        self, metrics: Mapping[str, float], step: int | None = None, timestamp: int | None = None
    ) -> None:
        self.client.log_metrics(metrics, step, timestamp)

    async def flush(self, timeout: float | None = None) -> bool:
        return await asyncio.to_thread(self.client.flush, timeout)

    async def aclose(self, timeout: float | None = None) -> bool:
        return await asyncio.to_thread(self.client.close, timeout)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

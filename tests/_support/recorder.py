"""Running units of work against a recorder in tests, retrying conflicts as the application's
executor does (``evtrack.application.CommandExecutor`` takes commands; these tests hand the
recorder raw units of work)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from evtrack.eventlog import IdempotencyKey, Recorder, UnitOfWork, WrongExpectedVersion
from evtrack.events import Metadata

R = TypeVar("R")


async def execute(
    recorder: Recorder,
    work: Callable[[UnitOfWork], Awaitable[R]],
    *,
    metadata: Metadata,
    result_type: type[R] | Any = None,
    idempotency_key: IdempotencyKey | None = None,
    retries: int = 8,
) -> R:
    """``work``'s answer once committed; conflicts are retried, holding the heads read."""
    result_type = type(None) if result_type is None else result_type
    for attempt in range(1, retries + 1):
        try:
            committed = await recorder.transact(
                work,
                metadata=metadata,
                result_type=result_type,
                idempotency_key=idempotency_key,
                contended=attempt > 1,
            )
        except WrongExpectedVersion:
            if attempt == retries:
                raise
            continue
        result: R = committed.result
        return result
    raise AssertionError("unreachable")

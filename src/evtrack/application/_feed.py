"""The log as a feed for subscribers (the SSE stream): read in order, wait for more."""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Collection

from evtrack.eventlog import (
    EventStore,
    LogPosition,
    RecordedEvent,
    position_before_head,
    read_after,
)
from evtrack.events import (
    LoggedModelCreated,
    RegisteredModelCreated,
    RegisteredModelRenamed,
    RunCreated,
)
from evtrack.projector import ProjectorRuntime


class EventFeed:
    """Reads the log under the projectors' horizon rule, so a late-committing transaction is
    delivered in its place, never skipped."""

    def __init__(self, store: EventStore, runtime: ProjectorRuntime | None) -> None:
        self._store = store
        self._runtime = runtime

    async def head(self) -> LogPosition:
        return await self._store.last_visible_position()

    async def position_back(self, count: int) -> LogPosition:
        """Where to start to deliver the last ``count`` events first (a feed's backlog)."""
        return await position_before_head(self._store.pool, count)

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


ExperimentOf = Callable[[str], Awaitable[str | None]]
"""The experiment a stream belongs to (its own, its run's, its logged model's), or None."""
ModelStreams = Callable[[str], Awaitable[Collection[str]]]
"""Every stream that has carried a registered model's name."""

_EXPERIMENT_STREAM = "experiment-"
_CACHE_SIZE = 10_000


class FeedFilter:
    """Which events of the log a subscriber wants: by type, stream, experiment or model.

    An experiment covers its own stream and those of its runs and logged models; a model
    name covers every registered-model stream that carried it. Streams created after the
    subscription are recognised from their creating event, which the feed delivers first.
    """

    def __init__(
        self,
        *,
        types: Collection[str] = (),
        stream: str | None = None,
        stream_prefix: str | None = None,
        experiment_id: str | None = None,
        model: str | None = None,
        experiment_of: ExperimentOf | None = None,
        model_streams: ModelStreams | None = None,
    ) -> None:
        self._types = frozenset(types)
        self._stream = stream
        self._prefix = stream_prefix
        self._experiment = experiment_id
        self._model = model
        self._experiment_of = experiment_of
        self._model_streams_of = model_streams
        self._model_streams: set[str] | None = None
        self._owners: OrderedDict[str, str | None] = OrderedDict()

    async def matches(self, record: RecordedEvent) -> bool:
        if self._types and record.event_type not in self._types:
            return False
        if self._stream and record.stream_id != self._stream:
            return False
        if self._prefix and not record.stream_id.startswith(self._prefix):
            return False
        if self._experiment is not None and await self._owner(record) != self._experiment:
            return False
        return self._model is None or await self._of_model(record)

    async def _owner(self, record: RecordedEvent) -> str | None:
        stream = record.stream_id
        if stream.startswith(_EXPERIMENT_STREAM):
            return stream.removeprefix(_EXPERIMENT_STREAM)
        event = record.event
        if isinstance(event, RunCreated | LoggedModelCreated):
            self._remember(stream, str(event.experiment_id))
        if stream in self._owners:
            self._owners.move_to_end(stream)
            return self._owners[stream]
        owner = None if self._experiment_of is None else await self._experiment_of(stream)
        if owner is not None:  # an unknown run may be known later: ask again then
            self._remember(stream, owner)
        return owner

    def _remember(self, stream: str, owner: str | None) -> None:
        self._owners[stream] = owner
        if len(self._owners) > _CACHE_SIZE:
            self._owners.popitem(last=False)

    async def _of_model(self, record: RecordedEvent) -> bool:
        assert self._model is not None
        if self._model_streams is None:
            found = (
                () if self._model_streams_of is None else await self._model_streams_of(self._model)
            )
            self._model_streams = set(found)
        event = record.event
        if isinstance(event, RegisteredModelCreated | RegisteredModelRenamed) and (
            event.name == self._model
        ):
            self._model_streams.add(record.stream_id)
        return record.stream_id in self._model_streams

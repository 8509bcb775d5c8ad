"""The log as a feed for subscribers (the SSE stream): one reader per process, fanned out.

However many clients follow the live stream, this process reads the log once: a single
follower task reads each new page (borrowing a pooled connection for the query only, never
holding one) and hands it to every subscriber's queue. Twenty-five open streams cost what one
does, and none of them keeps a database connection from the requests that need it.

A subscriber that starts behind the live edge (``Last-Event-ID``, ``from=start``) first
catches up on its own, page by page, with at most :data:`CATCH_UP_READERS` such reads at a
time across the process, then joins the shared follower. Order and completeness follow from
the horizon rule every reader of the log uses (invariant 2): records come in one total order
and a transaction that commits late is read in its place. A subscriber joins the follower's
queue *before* its last catch-up read, so the follower's next record is after what that read
returned, and what both deliver twice is skipped by position. A subscriber that falls too far
behind (a slow client) is dropped from the follower and catches up again from its own cursor,
so one slow reader never holds up the others, nor grows memory without bound.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Collection
from types import TracebackType

from evtrack.eventlog import EventStore, LogPosition, RecordedEvent, position_before_head
from evtrack.events import (
    LoggedModelCreated,
    RegisteredModelCreated,
    RegisteredModelRenamed,
    RunCreated,
)
from evtrack.projector import ProjectorRuntime

PAGE = 500
POLL_S = 0.2
CATCH_UP_READERS = 2
MAX_QUEUED = 20_000
"""Records a live subscriber may have waiting before it is sent back to catching up."""


class EventFeed:
    """Reads the log under the projectors' horizon rule, so a late-committing transaction is
    delivered in its place, never skipped; one follower per process serves every live
    subscriber."""

    def __init__(
        self,
        store: EventStore,
        runtime: ProjectorRuntime | None,
        *,
        poll_s: float = POLL_S,
        max_queued: int = MAX_QUEUED,
    ) -> None:
        self._store = store
        self._runtime = runtime
        self._poll_s = poll_s
        self._max_queued = max_queued
        self._open: set[Subscription] = set()  # every subscription, live or catching up
        self._live: set[Subscription] = set()  # those the follower delivers to
        self._follower: asyncio.Task[None] | None = None
        self._position: LogPosition | None = None
        self._catch_up = asyncio.Semaphore(CATCH_UP_READERS)
        self.reads = 0  # log pages read, by the follower and by catching-up subscribers

    async def head(self) -> LogPosition:
        """Where a subscriber "from now" starts: the follower's position when it runs (what
        it delivers next is new), else the newest committed event."""
        if self._follower is not None and self._position is not None:
            return self._position
        return await self._store.last_visible_position()

    async def position_back(self, count: int) -> LogPosition:
        """Where to start to deliver the last ``count`` events first (a feed's backlog)."""
        return await position_before_head(self._store.pool, count)

    async def read_after(self, after: LogPosition, limit: int) -> list[RecordedEvent]:
        """One page of the log after ``after``: a one-off read (a page's backlog), borrowing
        a pooled connection for the query only. Followers use :meth:`subscribe`."""
        return await self._store.read_after(after, limit)

    def subscribe(self, after: LogPosition) -> Subscription:
        """Records after ``after``, in log order; use as ``async with``."""
        return Subscription(self, after)

    @property
    def following(self) -> bool:
        return self._follower is not None

    @property
    def subscribers(self) -> int:
        return len(self._open)

    async def _read(self, after: LogPosition) -> list[RecordedEvent]:
        self.reads += 1
        return await self._store.read_after(after, PAGE)

    async def _read_catching_up(self, after: LogPosition) -> list[RecordedEvent]:
        async with self._catch_up:
            return await self._read(after)

    def _enter(self, sub: Subscription) -> None:
        self._open.add(sub)

    def _join(self, sub: Subscription, start_at: LogPosition) -> None:
        """Add ``sub`` to the follower's subscribers, starting the follower at ``start_at``
        if it does not run."""
        self._live.add(sub)
        if self._follower is None:
            self._position = start_at
            self._follower = asyncio.create_task(self._follow(), name="evtrack-event-feed")

    def _leave(self, sub: Subscription) -> None:
        self._open.discard(sub)
        self._live.discard(sub)
        if not self._open:
            self._stop()

    def _stop(self) -> None:
        if self._follower is not None:
            self._follower.cancel()
        self._follower = None
        self._position = None
        self._live.clear()

    async def _follow(self) -> None:
        """Read each new page once and hand it to every live subscriber; runs while any
        subscription is open."""
        try:
            while True:
                assert self._position is not None
                records = await self._read(self._position)
                if records:
                    self._position = records[-1].position
                    for sub in list(self._live):
                        if not sub._deliver(records, self._max_queued):
                            self._live.discard(sub)  # too far behind: it catches up alone
                    continue
                await self._wait(self._poll_s)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the database went away: end every stream
            for sub in list(self._open):
                sub._fail(exc)
            self._follower = None
            self._stop()

    async def _wait(self, timeout_s: float) -> None:
        """Return after new events may have arrived, or after ``timeout_s``."""
        if self._runtime is not None:
            with contextlib.suppress(TimeoutError):
                await self._runtime.wait_for_progress(timeout_s)
        else:
            await asyncio.sleep(timeout_s)


class Subscription:
    """One subscriber's view of the feed: :meth:`next` gives the records after its cursor."""

    def __init__(self, feed: EventFeed, after: LogPosition) -> None:
        self._feed = feed
        self.cursor = after
        self._queue: deque[RecordedEvent] = deque()
        self._arrived = asyncio.Event()
        self._live = False
        self._failure: Exception | None = None

    async def __aenter__(self) -> Subscription:
        self._feed._enter(self)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._feed._leave(self)

    async def next(self, timeout_s: float) -> list[RecordedEvent]:
        """The next records after the cursor, in log order; ``[]`` when none came within
        ``timeout_s``. Raises what stopped the shared follower (the database went away)."""
        if self._failure is not None:
            raise self._failure
        if not self._live:
            return await self._catch_up()
        if not self._queue:
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), timeout_s)
            if self._failure is not None:
                raise self._failure
            if not self._live:  # dropped for being too slow while it waited
                return await self._catch_up()
        records = []
        while self._queue:
            record = self._queue.popleft()
            if record.position > self.cursor:
                records.append(record)
                self.cursor = record.position
        return records

    async def _catch_up(self) -> list[RecordedEvent]:
        feed = self._feed
        joined_before_read = feed.following
        if joined_before_read:
            self._queue.clear()  # what it held is visible to the read below
            feed._live.add(self)  # collect what the follower reads from now on
        page = await feed._read_catching_up(self.cursor)
        if page:
            self.cursor = page[-1].position
        if len(page) < PAGE:  # everything committed before this read is delivered
            if joined_before_read:
                self._live = True
            elif not feed.following:
                feed._join(self, self.cursor)
                self._live = True
            # else: a follower started during the read; join it before the next read.
        return page

    def _deliver(self, records: list[RecordedEvent], max_queued: int) -> bool:
        """Queue ``records``; False (and back to catching up) when too many are waiting."""
        if len(self._queue) + len(records) > max_queued:
            self._queue.clear()
            self._live = False
            self._arrived.set()
            return False
        self._queue.extend(records)
        self._arrived.set()
        return True

    def _fail(self, exc: Exception) -> None:
        self._failure = exc
        self._arrived.set()


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

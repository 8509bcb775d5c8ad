"""The event feed behind the SSE stream: one reader per process, every event once, in order.

Run on the in-memory recorder, which keeps the same read-horizon contract as PostgreSQL
(tests/eventlog), so late-committing transactions can be staged exactly.
"""

from __future__ import annotations

import asyncio

from evtrack.application import EventFeed
from evtrack.eventlog import ANY_VERSION, LOG_START, InMemoryRecorder, RecordedEvent, UnitOfWork
from evtrack.events import ExperimentTagSet, Metadata

META = Metadata(actor="tester", request_id="r-1", client="pytest")
POLL_S = 0.02


async def _append(
    recorder: InMemoryRecorder, key: str, *, hold: asyncio.Event | None = None
) -> None:
    async def work(uow: UnitOfWork) -> None:
        event = ExperimentTagSet(experiment_id=1, key=key, value="")
        uow.append(f"s-{key}", [event], expected_version=ANY_VERSION)
        await uow.flush()
        if hold is not None:
            await hold.wait()  # the transaction stays open, its event written but not visible

    await recorder.transact(work, metadata=META, result_type=type(None), idempotency_key=None)


async def _collect(feed: EventFeed, count: int, out: list[str], *, start: bool = True) -> None:
    async with feed.subscribe(LOG_START if start else await feed.head()) as sub:
        while len(out) < count:
            out.extend(_keys(await sub.next(1.0)))


def _keys(records: list[RecordedEvent]) -> list[str]:
    keys = []
    for record in records:
        assert isinstance(record.event, ExperimentTagSet)
        keys.append(record.event.key)
    return keys


async def _log_order(recorder: InMemoryRecorder) -> list[str]:
    return _keys(await recorder.read_after(LOG_START, 10_000))


async def test_every_subscriber_gets_every_event_once_in_log_order() -> None:
    recorder = InMemoryRecorder()
    feed = EventFeed(recorder, None, poll_s=POLL_S)
    for i in range(600):  # more than a page: the first subscribers catch up alone
        await _append(recorder, f"old-{i}")
    total = 600 + 3 * 50
    results: list[list[str]] = [[] for _ in range(25)]
    tasks = [asyncio.create_task(_collect(feed, total, out)) for out in results]
    for batch in range(3):
        await asyncio.sleep(0.05)
        held = asyncio.Event()
        late = asyncio.create_task(_append(recorder, f"late-{batch}", hold=held))
        await asyncio.sleep(0)
        for i in range(49):  # commit after the held transaction began
            await _append(recorder, f"new-{batch}-{i}")
        await asyncio.sleep(0.05)
        held.set()
        await late
    await asyncio.wait_for(asyncio.gather(*tasks), 20)
    expected = await _log_order(recorder)
    assert len(expected) == total
    assert expected.index("late-0") < expected.index("new-0-0")  # delivered in its place
    for out in results:
        assert out == expected
    assert feed.subscribers == 0 and not feed.following


async def test_live_subscribers_share_one_reader() -> None:
    recorder = InMemoryRecorder()
    feed = EventFeed(recorder, None, poll_s=POLL_S)
    results: list[list[str]] = [[] for _ in range(25)]
    tasks = [asyncio.create_task(_collect(feed, 40, out, start=False)) for out in results]
    await asyncio.sleep(0.1)  # everyone is live
    reads_before = feed.reads
    started = asyncio.get_running_loop().time()
    for i in range(40):
        await _append(recorder, f"k-{i}")
        await asyncio.sleep(0.01)
    await asyncio.wait_for(asyncio.gather(*tasks), 10)
    elapsed = asyncio.get_running_loop().time() - started
    reads = feed.reads - reads_before
    # One follower: a read per poll or per new page. 25 pollers would read 25 times as often.
    assert reads <= 40 + 2 * elapsed / POLL_S, (reads, elapsed)
    assert all(out == [f"k-{i}" for i in range(40)] for out in results)


async def test_a_slow_subscriber_catches_up_alone_and_loses_nothing() -> None:
    recorder = InMemoryRecorder()
    feed = EventFeed(recorder, None, poll_s=POLL_S, max_queued=10)
    fast: list[str] = []
    fast_task = asyncio.create_task(_collect(feed, 100, fast, start=False))
    await asyncio.sleep(0.05)
    async with feed.subscribe(await feed.head()) as slow:
        assert await slow.next(0.1) == []  # live, at the head
        for i in range(100):
            await _append(recorder, f"k-{i}")
            await asyncio.sleep(0.001)
        await asyncio.wait_for(fast_task, 10)  # the fast one was not held up
        got: list[str] = []
        while len(got) < 100:
            got.extend(_keys(await slow.next(1.0)))
    assert fast == got == [f"k-{i}" for i in range(100)]


async def test_the_follower_stops_with_the_last_subscriber() -> None:
    recorder = InMemoryRecorder()
    feed = EventFeed(recorder, None, poll_s=POLL_S)
    async with feed.subscribe(LOG_START) as sub:
        assert await sub.next(0.05) == []
        assert feed.following
    assert not feed.following
    reads = feed.reads
    await asyncio.sleep(0.1)
    assert feed.reads == reads

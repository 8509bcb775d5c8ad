"""The recorder contract, one test case run against every recorder.

A subclass provides ``make_recorder(derived_key_ttl_s=...)``; every test here then holds for
it. The PostgreSQL recorder is what users run, the in-memory one is what domain tests run on:
if both pass this, a domain test on memory says something about production.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from evtrack.eventlog import (
    ANY_VERSION,
    LOG_START,
    Committed,
    IdempotencyKey,
    LogPosition,
    RecordedEvent,
    Recorder,
    UnitOfWork,
    WrongExpectedVersion,
)
from evtrack.events import ExperimentTagSet, Metadata, RunTagDeleted

META = Metadata(actor="tester", request_id="r-1", client="pytest")

MakeRecorder = Callable[..., Recorder]

READ_DEADLINE_S = 30.0
NONE = type(None)


def tag(key: str, value: str = "") -> ExperimentTagSet:
    return ExperimentTagSet(experiment_id=1, key=key, value=value)


async def run(
    recorder: Recorder,
    work: Callable[[UnitOfWork], Any],
    *,
    key: IdempotencyKey | None = None,
    result_type: type[Any] = NONE,
) -> Committed[Any]:
    return await recorder.transact(
        work, metadata=META, result_type=result_type, idempotency_key=key
    )


async def read_until(
    recorder: Recorder, count: int, after: LogPosition = LOG_START
) -> list[RecordedEvent]:
    """At least ``count`` events after ``after``, reading as a projector does. PostgreSQL's
    horizon may lag a moment behind a commit (a transaction of another test still running)."""
    found: list[RecordedEvent] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + READ_DEADLINE_S
    while len(found) < count:
        batch = await recorder.read_after(after, 100)
        if batch:
            found.extend(batch)
            after = batch[-1].position
        elif loop.time() > deadline:
            break
        else:
            await asyncio.sleep(0.02)
    return found


class RecorderContract:
    """Tests every recorder must pass. Subclasses define the ``make_recorder`` fixture."""

    @pytest.fixture
    def make_recorder(self) -> MakeRecorder:
        raise NotImplementedError

    @pytest.fixture
    def recorder(self, make_recorder: MakeRecorder) -> Recorder:
        return make_recorder()

    # ------------------------------------------------------------------ appending and reading

    async def test_appended_events_read_back_as_appended(self, recorder: Recorder) -> None:
        async def work(uow: UnitOfWork) -> str:
            uow.append("s-1", [tag("a", "1"), tag("b", "2")], expected_version=0)
            uow.append("s-2", [tag("c")], expected_version=0)
            return "done"

        committed = await run(recorder, work, result_type=str)
        assert committed.result == "done" and not committed.replayed
        assert committed.appended_types == {"ExperimentTagSet"}

        records = await read_until(recorder, 3)
        # Each stream's events in its order; across streams, one transaction's events may
        # come in any order (the PostgreSQL recorder puts events of a kind side by side).
        by_stream = {
            s: [(r.stream_position, r.event) for r in records if r.stream_id == s]
            for s in ("s-1", "s-2")
        }
        assert by_stream == {
            "s-1": [(1, tag("a", "1")), (2, tag("b", "2"))],
            "s-2": [(1, tag("c"))],
        }
        assert records[-1].position.global_position == committed.last_position
        assert len({r.position.transaction_id for r in records}) == 1  # one transaction
        first = records[0]
        assert first.actor == "tester"
        assert first.metadata == {"actor": "tester", "request_id": "r-1", "client": "pytest"}
        assert first.recorded_at.tzinfo is not None
        assert await recorder.last_visible_position() == records[-1].position
        assert await recorder.read_after(records[-1].position, 100) == []

    async def test_reads_honour_limit_and_payload_types(self, recorder: Recorder) -> None:
        async def work(uow: UnitOfWork) -> None:
            uow.append("s-1", [tag("a")], expected_version=ANY_VERSION)
            uow.append(
                "run-1", [RunTagDeleted(run_id="r" * 32, key="k")], expected_version=ANY_VERSION
            )
            uow.append("s-1", [tag("b")], expected_version=ANY_VERSION)

        await run(recorder, work)
        await read_until(recorder, 3)
        assert len(await recorder.read_after(LOG_START, 2)) == 2
        records = await recorder.read_after(LOG_START, 10, ["RunTagDeleted"])
        assert [r.event_type for r in records] == [
            "ExperimentTagSet",
            "RunTagDeleted",
            "ExperimentTagSet",
        ]
        assert [r.event is None for r in records] == [True, False, True]

    async def test_read_stream_is_in_stream_order(self, recorder: Recorder) -> None:
        for i in range(3):

            async def work(uow: UnitOfWork, i: int = i) -> None:
                uow.append("s-1", [tag(f"k{i}")], expected_version=ANY_VERSION)
                uow.append(f"other-{i}", [tag("x")], expected_version=ANY_VERSION)

            await run(recorder, work)
        records = await recorder.read_stream("s-1")
        assert [r.stream_position for r in records] == [1, 2, 3]
        assert [r.event for r in records] == [tag("k0"), tag("k1"), tag("k2")]
        assert await recorder.read_stream("nothing-here") == []

    async def test_an_empty_log_is_at_the_start(self, recorder: Recorder) -> None:
        assert await recorder.last_visible_position() == LOG_START
        assert await recorder.read_after(LOG_START, 10) == []

    async def test_heads_and_snapshots(self, recorder: Recorder) -> None:
        async def create(uow: UnitOfWork) -> None:
            assert (await uow.heads(["s-1"]))["s-1"].version == 0
            uow.append("s-1", [tag("a")], expected_version=0, state=b"v1")
            await uow.flush()
            head = (await uow.heads(["s-1"]))["s-1"]  # a unit sees what it flushed
            assert (head.version, head.state) == (1, b"v1")
            uow.append("s-1", [tag("b")], expected_version=1)  # state kept

        await run(recorder, create)

        async def check(uow: UnitOfWork) -> tuple[int, bytes | None]:
            head = (await uow.heads(["s-1", "s-2"]))["s-1"]
            return head.version, head.state

        assert (await run(recorder, check, result_type=tuple[int, bytes])).result == (2, b"v1")

    # ------------------------------------------------------------------ invariant 2: order

    async def test_a_delayed_committer_is_read_once_in_its_place(self, recorder: Recorder) -> None:
        slow_flushed = asyncio.Event()
        release_slow = asyncio.Event()

        async def slow(uow: UnitOfWork) -> None:
            uow.append("s-slow", [tag("slow")], expected_version=ANY_VERSION)
            await uow.flush()  # the event exists, uncommitted, in the older transaction
            slow_flushed.set()
            await release_slow.wait()

        async def fast(uow: UnitOfWork) -> None:
            uow.append("s-fast", [tag("fast")], expected_version=ANY_VERSION)

        slow_task = asyncio.create_task(run(recorder, slow))
        try:
            await slow_flushed.wait()
            await run(recorder, fast)
            # The fast event is committed but sits behind a running transaction: reading past
            # it now would skip the slow event for ever.
            assert await recorder.read_after(LOG_START, 100) == []
            fast_stream = await recorder.read_stream("s-fast")
            assert [r.event for r in fast_stream] == [tag("fast")]
        finally:
            release_slow.set()
            await slow_task
        records = await read_until(recorder, 2)
        assert [r.stream_id for r in records] == ["s-slow", "s-fast"]
        assert records[0].position < records[1].position
        assert await recorder.read_after(records[-1].position, 100) == []

    async def test_concurrent_writers_are_all_read_once_in_order(self, recorder: Recorder) -> None:
        async def writer(w: int) -> None:
            for i in range(10):

                async def work(uow: UnitOfWork, i: int = i) -> None:
                    uow.append(f"s-{w}", [tag(f"{w}:{i}")], expected_version=ANY_VERSION)
                    await asyncio.sleep(0)

                await run(recorder, work)

        seen: list[RecordedEvent] = []

        async def reader(stop: asyncio.Event) -> None:
            after = LOG_START
            while not stop.is_set():
                batch = await recorder.read_after(after, 7)
                seen.extend(batch)
                if batch:
                    after = batch[-1].position
                await asyncio.sleep(0.001)
            seen.extend(await read_until(recorder, 40 - len(seen), after))

        stop = asyncio.Event()
        reading = asyncio.create_task(reader(stop))
        await asyncio.gather(*(writer(w) for w in range(4)))
        stop.set()
        await reading
        positions = [r.position for r in seen]
        assert positions == sorted(set(positions)) and len(positions) == 40
        for w in range(4):
            keys = [r.event.key for r in seen if isinstance(r.event, ExperimentTagSet)]
            assert [k for k in keys if k.startswith(f"{w}:")] == [f"{w}:{i}" for i in range(10)]

    # ------------------------------------------------------------------ invariant 5: retries

    async def test_an_idempotent_retry_appends_nothing_and_gets_the_first_answer(
        self, recorder: Recorder
    ) -> None:
        calls = 0

        async def work(uow: UnitOfWork) -> str:
            nonlocal calls
            calls += 1
            uow.append("s-1", [tag(str(calls))], expected_version=ANY_VERSION)
            return f"answer-{calls}"

        key = IdempotencyKey.from_parts("tester", "/route", b"body", derived=False)
        first = await run(recorder, work, key=key, result_type=str)
        second = await run(recorder, work, key=key, result_type=str)
        assert (first.result, first.replayed) == ("answer-1", False)
        assert (second.result, second.replayed) == ("answer-1", True)
        assert second.appended_types == frozenset() and second.last_position == 0
        # The work may run again (an optimistic unit looks the key up with its first read,
        # and this work reads nothing), but what it decides is dropped: work has no effects
        # outside its unit.
        assert calls <= 2
        assert len(await recorder.read_stream("s-1")) == 1

    async def test_concurrent_duplicates_append_once(self, recorder: Recorder) -> None:
        async def work(uow: UnitOfWork) -> int:
            uow.append("s-1", [tag("once")], expected_version=ANY_VERSION)
            await uow.flush()
            await asyncio.sleep(0.05)  # the first stays open while the others arrive
            return 7

        key = IdempotencyKey.from_parts("tester", "/route", b"same", derived=True)
        outcomes = await asyncio.gather(
            *(run(recorder, work, key=key, result_type=int) for _ in range(5))
        )
        assert [c.result for c in outcomes] == [7] * 5
        assert sorted(c.replayed for c in outcomes) == [False] + [True] * 4
        assert len(await recorder.read_stream("s-1")) == 1

    async def test_an_expired_derived_key_lets_an_identical_request_through(
        self, make_recorder: MakeRecorder
    ) -> None:
        recorder = make_recorder(derived_key_ttl_s=0.0)

        async def work(uow: UnitOfWork) -> None:
            uow.append("s-1", [tag("x")], expected_version=ANY_VERSION)

        derived = IdempotencyKey.from_parts("tester", "/route", b"again", derived=True)
        given = IdempotencyKey.from_parts("/route", "client-key", derived=False)
        for key in (derived, given):
            await run(recorder, work, key=key)
            await asyncio.sleep(0.01)
            await run(recorder, work, key=key)
        # The derived key expired at once; a key the client gave never does.
        assert len(await recorder.read_stream("s-1")) == 3

    async def test_a_derived_key_holds_within_its_ttl(self, recorder: Recorder) -> None:
        async def work(uow: UnitOfWork) -> None:
            uow.append("s-1", [tag("x")], expected_version=ANY_VERSION)

        key = IdempotencyKey.from_parts("tester", "/route", b"soon", derived=True)
        await run(recorder, work, key=key)
        assert (await run(recorder, work, key=key)).replayed
        assert len(await recorder.read_stream("s-1")) == 1

    # ------------------------------------------------------------------ invariant 4

    async def test_failed_work_appends_nothing_and_stores_no_key(self, recorder: Recorder) -> None:
        fail = True

        async def work(uow: UnitOfWork) -> str:
            uow.append("s-1", [tag("x")], expected_version=0, state=b"v1")
            await uow.flush()
            assert await uow.reserve_name("scope", "taken", "s-1")
            if fail:
                raise RuntimeError("decided to fail")
            return "ok"

        key = IdempotencyKey.from_parts("k", derived=False)
        with pytest.raises(RuntimeError, match="decided to fail"):
            await run(recorder, work, key=key, result_type=str)
        assert await recorder.read_stream("s-1") == []
        assert await recorder.last_visible_position() == LOG_START

        async def look(uow: UnitOfWork) -> tuple[int, str | None]:
            head = (await uow.heads(["s-1"]))["s-1"]
            return head.version, await uow.name_owner("scope", "taken")

        assert (await run(recorder, look, result_type=tuple[int, str | None])).result == (0, None)
        fail = False
        retried = await run(recorder, work, key=key, result_type=str)  # the key was not kept
        assert (retried.result, retried.replayed) == ("ok", False)

    # ------------------------------------------------------------------ invariant 6

    async def test_two_decisions_on_one_version_one_conflicts(self, recorder: Recorder) -> None:
        async def create(uow: UnitOfWork) -> None:
            uow.append("s-1", [tag("0")], expected_version=0, state=b"0")

        await run(recorder, create)
        both_read = asyncio.Barrier(2)

        async def decide(uow: UnitOfWork, value: bytes) -> None:
            head = (await uow.heads(["s-1"]))["s-1"]
            await both_read.wait()
            uow.append("s-1", [tag(value.decode())], expected_version=head.version, state=value)

        outcomes = await asyncio.gather(
            run(recorder, lambda uow: decide(uow, b"a")),
            run(recorder, lambda uow: decide(uow, b"b")),
            return_exceptions=True,
        )
        conflicts = [o for o in outcomes if isinstance(o, WrongExpectedVersion)]
        assert len(conflicts) == 1, outcomes
        winner = b"a" if isinstance(outcomes[0], Committed) else b"b"
        records = await recorder.read_stream("s-1")
        assert [r.event for r in records] == [tag("0"), tag(winner.decode())]

        async def state(uow: UnitOfWork) -> bytes | None:
            return (await uow.heads(["s-1"]))["s-1"].state

        assert (await run(recorder, state, result_type=bytes)).result == winner

    async def test_a_stale_expected_version_appends_nothing(self, recorder: Recorder) -> None:
        async def create(uow: UnitOfWork) -> None:
            uow.append("s-1", [tag("0")], expected_version=0, state=b"v1")

        await run(recorder, create)
        for expected in (0, 2):

            async def stale(uow: UnitOfWork, expected: int = expected) -> None:
                uow.append("s-other", [tag("x")], expected_version=ANY_VERSION)
                uow.append("s-1", [tag("1")], expected_version=expected, state=b"v2")

            with pytest.raises(WrongExpectedVersion):
                await run(recorder, stale)

        async def missing(uow: UnitOfWork) -> None:
            uow.append("s-new", [tag("1")], expected_version=3)

        with pytest.raises(WrongExpectedVersion):
            await run(recorder, missing)
        assert len(await recorder.read_stream("s-1")) == 1
        assert await recorder.read_stream("s-other") == []
        assert await recorder.read_stream("s-new") == []

    async def test_locked_heads_queue_instead_of_conflicting(self, recorder: Recorder) -> None:
        async def create(uow: UnitOfWork) -> None:
            uow.append("counter", [tag("0")], expected_version=0, state=b"0")

        await run(recorder, create)

        async def increment(uow: UnitOfWork) -> None:
            head = (await uow.heads(["counter"], lock=True))["counter"]
            assert head.state is not None
            value = int(head.state) + 1
            await asyncio.sleep(0.001)
            uow.append(
                "counter", [tag(str(value))], expected_version=head.version, state=b"%d" % value
            )

        await asyncio.gather(*(run(recorder, increment) for _ in range(6)))
        records = await recorder.read_stream("counter")
        assert [r.stream_position for r in records] == list(range(1, 8))
        assert [r.event for r in records] == [tag(str(i)) for i in range(7)]

    async def test_appends_at_any_version_never_conflict(self, recorder: Recorder) -> None:
        async def work(uow: UnitOfWork) -> None:
            uow.append("points", [tag("p")], expected_version=ANY_VERSION)
            await uow.flush()
            await asyncio.sleep(0.001)

        await asyncio.gather(*(run(recorder, work) for _ in range(8)))
        records = await recorder.read_stream("points")
        assert [r.stream_position for r in records] == list(range(1, 9))

    # ------------------------------------------------------------------ names and sequences

    async def test_unique_names(self, recorder: Recorder) -> None:
        async def reserve(uow: UnitOfWork, owner: str) -> bool:
            return await uow.reserve_name("experiments", "Default", owner)

        async def owner(uow: UnitOfWork) -> str | None:
            return await uow.name_owner("experiments", "Default")

        async def release(uow: UnitOfWork) -> None:
            await uow.release_name("experiments", "Default")
            assert await uow.name_owner("experiments", "Default") is None

        assert (await run(recorder, lambda u: reserve(u, "e-1"), result_type=bool)).result
        assert not (await run(recorder, lambda u: reserve(u, "e-2"), result_type=bool)).result
        assert (await run(recorder, owner, result_type=str)).result == "e-1"
        await run(recorder, release)
        assert (await run(recorder, owner, result_type=str | None)).result is None
        assert (await run(recorder, lambda u: reserve(u, "e-3"), result_type=bool)).result
        assert (await run(recorder, owner, result_type=str)).result == "e-3"

    async def test_a_name_raced_for_goes_to_one_writer(self, recorder: Recorder) -> None:
        async def reserve(uow: UnitOfWork, who: str) -> bool:
            won = await uow.reserve_name("models", "m", who)
            await asyncio.sleep(0.02)  # both claims are in flight at once
            return won

        outcomes = await asyncio.gather(
            *(run(recorder, lambda u, w=w: reserve(u, w), result_type=bool) for w in "abc")
        )
        assert sorted(c.result for c in outcomes) == [False, False, True]

    async def test_sequences_count_up_and_never_reuse_a_value(self, recorder: Recorder) -> None:
        async def take(uow: UnitOfWork) -> int:
            return await uow.next_sequence_value("experiment_ids")

        async def take_and_fail(uow: UnitOfWork) -> None:
            await uow.next_sequence_value("experiment_ids")
            raise RuntimeError("rolled back")

        first = (await run(recorder, take, result_type=int)).result
        with pytest.raises(RuntimeError):
            await run(recorder, take_and_fail)
        second = (await run(recorder, take, result_type=int)).result
        assert first == 1 and second == 3

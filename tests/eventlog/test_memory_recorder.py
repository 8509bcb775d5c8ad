"""The recorder contract on the in-memory recorder, plus what only memory can show."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from evtrack.eventlog import (
    ANY_VERSION,
    DeadlockDetected,
    IdempotencyKey,
    InMemoryRecorder,
    UnitOfWork,
)
from evtrack.events import ExperimentTagSet

from .recorder_contract import META, MakeRecorder, RecorderContract, run, tag


class TestInMemoryRecorder(RecorderContract):
    @pytest.fixture
    def make_recorder(self) -> MakeRecorder:
        return InMemoryRecorder


async def test_an_event_that_cannot_be_encoded_is_refused_at_append() -> None:
    """Payload problems surface as they would with PostgreSQL: encoding fails, nothing lands."""
    recorder = InMemoryRecorder()

    async def work(uow: UnitOfWork) -> None:
        bad: Any = object()
        event = ExperimentTagSet(experiment_id=1, key="k", value=bad)
        uow.append("s-1", [event], expected_version=0)

    with pytest.raises(TypeError):
        await run(recorder, work)
    assert await recorder.read_stream("s-1") == []


async def test_derived_keys_expire_on_the_recorders_clock() -> None:
    now = [1000.0]
    recorder = InMemoryRecorder(derived_key_ttl_s=600.0, clock=lambda: now[0])

    async def work(uow: UnitOfWork) -> None:
        uow.append("s-1", [tag("x")], expected_version=ANY_VERSION)

    key = IdempotencyKey.from_parts("a", derived=True)
    await run(recorder, work, key=key)
    now[0] += 599.0
    assert (await run(recorder, work, key=key)).replayed
    now[0] += 2.0
    assert not (await run(recorder, work, key=key)).replayed
    assert len(await recorder.read_stream("s-1")) == 2


async def test_an_unknown_sequence_does_not_exist() -> None:
    async def take(uow: UnitOfWork) -> int:
        return await uow.next_sequence_value("no_such_sequence")

    with pytest.raises(LookupError):
        await run(InMemoryRecorder(), take, result_type=int)


async def test_a_lock_cycle_fails_one_transaction_instead_of_hanging() -> None:
    recorder = InMemoryRecorder()
    both_hold = asyncio.Barrier(2)

    async def cross(uow: UnitOfWork, first: str, second: str) -> None:
        uow.append(first, [tag(first)], expected_version=ANY_VERSION)
        await uow.flush()
        await both_hold.wait()
        uow.append(second, [tag(second)], expected_version=ANY_VERSION)
        await uow.flush()

    outcomes = await asyncio.wait_for(
        asyncio.gather(
            recorder.transact(
                lambda u: cross(u, "a", "b"),
                metadata=META,
                result_type=type(None),
                idempotency_key=None,
            ),
            recorder.transact(
                lambda u: cross(u, "b", "a"),
                metadata=META,
                result_type=type(None),
                idempotency_key=None,
            ),
            return_exceptions=True,
        ),
        timeout=5,
    )
    assert sum(isinstance(o, DeadlockDetected) for o in outcomes) == 1


async def test_domain_commands_run_on_it_without_a_database() -> None:
    """The seam's purpose: the domain decides on the in-memory recorder as on PostgreSQL."""
    from evtrack.domain import experiment_stream, run_stream, tracking

    recorder = InMemoryRecorder()

    async def bootstrap(uow: UnitOfWork) -> bool:
        return await tracking.ensure_default_experiment(uow, artifact_root="mlflow-artifacts:")

    assert (await run(recorder, bootstrap, result_type=bool)).result
    assert not (await run(recorder, bootstrap, result_type=bool)).result

    async def start(uow: UnitOfWork) -> str:
        experiment_id = await tracking.experiment_id_for_name(uow, "exp", artifact_root="/a")
        return await tracking.create_run(uow, experiment_id, "alice", "r", 1, [])

    run_id = (await run(recorder, start, result_type=str)).result
    assert [r.event_type for r in await recorder.read_stream(experiment_stream(1))] == [
        "ExperimentCreated"
    ]
    assert [r.event_type for r in await recorder.read_stream(run_stream(run_id))] == ["RunCreated"]

"""Commands through the application's executor onto the in-memory recorder: the write path
from command to events, with no database (invariant 8's first half: what no read model could
hold is never appended)."""

from __future__ import annotations

import math

import pytest

from evtrack.application import LOG_START, CommandExecutor, Context
from evtrack.domain.commands import (
    CreateExperiment,
    CreateRun,
    EndRun,
    EnsureDefaultExperiment,
    Ingest,
    IngestRecord,
    IngestSummary,
    LogRunData,
    MetricPoints,
    PackedPoints,
    SetExperimentTag,
    StartRun,
)
from evtrack.errors import EvtrackError
from evtrack.eventlog import InMemoryRecorder
from evtrack.events import DOUBLE_MAX, KeyValue, RunCreated, RunDataLogged, RunUpdated

ALICE = Context(principal="alice", request_id="req-1", client="tests")


@pytest.fixture
def recorder() -> InMemoryRecorder:
    return InMemoryRecorder()


@pytest.fixture
def executor(recorder: InMemoryRecorder) -> CommandExecutor:
    return CommandExecutor(recorder)


async def _new_run(executor: CommandExecutor) -> str:
    experiment_id = await executor.execute(CreateExperiment(name="exp"), ALICE)
    run_id: str = await executor.execute(CreateRun(experiment_id=experiment_id), ALICE)
    return run_id


async def _events(recorder: InMemoryRecorder) -> list[object]:
    return [r.event for r in await recorder.read_after(LOG_START, 10_000)]


async def test_a_logging_command_becomes_one_event_with_its_actor(
    executor: CommandExecutor, recorder: InMemoryRecorder
) -> None:
    run_id = await _new_run(executor)
    points = MetricPoints(
        keys=["loss"] * 3, values=[1, math.inf, 0.5], timestamps=[1, 2, 3], steps=[0, 1, 2]
    )
    await executor.execute(
        LogRunData(run_id=run_id, metrics=points, params=[KeyValue("lr", "0.1")]), ALICE
    )
    records = await recorder.read_after(LOG_START, 100)
    logged = [r for r in records if isinstance(r.event, RunDataLogged)]
    assert len(logged) == 1 and logged[0].actor == "alice"
    event = logged[0].event
    assert isinstance(event, RunDataLogged) and event.metrics is not None
    assert event.metrics.values == [1.0, DOUBLE_MAX, 0.5]
    assert event.metrics.timestamps == [1, 2, 3] and [p.key for p in event.params] == ["lr"]


@pytest.mark.parametrize(
    "points",
    [
        MetricPoints(keys=["a"], values=[1.0], timestamps=[2**63], steps=[0]),
        MetricPoints(keys=["a"], values=[1.0], timestamps=[1], steps=[10**30]),
        MetricPoints(keys=["a"], values=[1.0], timestamps=[1], steps=[-(2**64)]),
    ],
)
async def test_out_of_range_points_are_refused_and_nothing_is_appended(
    executor: CommandExecutor, recorder: InMemoryRecorder, points: MetricPoints
) -> None:
    run_id = await _new_run(executor)
    before = await _events(recorder)
    with pytest.raises(EvtrackError) as caught:
        await executor.execute(LogRunData(run_id=run_id, metrics=points), ALICE)
    assert caught.value.http_status == 400
    assert await _events(recorder) == before


async def test_text_no_read_model_can_hold_is_refused_by_the_event_itself(
    executor: CommandExecutor, recorder: InMemoryRecorder
) -> None:
    """NUL passes MLflow's value rules but not PostgreSQL's text type: the event's own
    constraints refuse it, as a 400, before it reaches the log."""
    experiment_id = await executor.execute(CreateExperiment(name="exp"), ALICE)
    before = await _events(recorder)
    with pytest.raises(EvtrackError) as caught:
        await executor.execute(
            SetExperimentTag(experiment_id=experiment_id, key="k", value="a\x00b"), ALICE
        )
    assert caught.value.http_status == 400
    assert await _events(recorder) == before


async def test_replay_safe_commands_get_a_derived_key(
    executor: CommandExecutor, recorder: InMemoryRecorder
) -> None:
    run_id = await _new_run(executor)
    command = LogRunData(
        run_id=run_id, metrics=MetricPoints(keys=["a"], values=[1.0], timestamps=[1], steps=[0])
    )
    await executor.execute(command, ALICE)
    await executor.execute(command, ALICE)  # a retry: the first answer, nothing appended
    logged = [e for e in await _events(recorder) if isinstance(e, RunDataLogged)]
    assert len(logged) == 1
    # Tags are upserts: replaying is not a no-op, so no derived key and two events.
    tagged = LogRunData(run_id=run_id, tags=[KeyValue("t", "1")])
    await executor.execute(tagged, ALICE)
    await executor.execute(tagged, ALICE)
    logged = [e for e in await _events(recorder) if isinstance(e, RunDataLogged)]
    assert len(logged) == 3


async def test_an_explicit_key_answers_a_retry_with_the_first_answer(
    executor: CommandExecutor, recorder: InMemoryRecorder
) -> None:
    experiment_id = await executor.execute(CreateExperiment(name="exp"), ALICE)
    keyed = Context(principal="alice", idempotency_key="k-1", scope="/runs/create")
    first = await executor.execute(CreateRun(experiment_id=experiment_id), keyed)
    again = await executor.execute(CreateRun(experiment_id=experiment_id), keyed)
    assert first == again
    created = [e for e in await _events(recorder) if isinstance(e, RunCreated)]
    assert len(created) == 1


async def test_ingest_starts_logs_and_ends_runs_in_one_command(
    executor: CommandExecutor, recorder: InMemoryRecorder
) -> None:
    import numpy as np

    await executor.execute(EnsureDefaultExperiment(), ALICE)
    n = 1000
    points = PackedPoints(
        field="packed",
        names=["loss", "acc"],
        key_index=(np.arange(n, dtype="<u4") % 2).tobytes(),
        values=np.linspace(0, 1, n).astype("<f8").tobytes(),
        timestamps=np.arange(n, dtype="<i8").tobytes(),
        steps=np.arange(n, dtype="<i8").tobytes(),
    )
    records = [
        IngestRecord(
            run_id=f"{i:032x}",
            points=[points],
            start=StartRun(experiment_name="cluster"),
            end=EndRun(status="FINISHED", end_time=5),
        )
        for i in range(20)
    ]
    summary = await executor.execute(Ingest(records=records), ALICE)
    assert summary == IngestSummary(runs=20, points=20 * n, params=0, tags=0)
    events = await _events(recorder)
    assert sum(isinstance(e, RunCreated) for e in events) == 20
    assert sum(isinstance(e, RunUpdated) for e in events) == 20
    logged = [e for e in events if isinstance(e, RunDataLogged)]
    assert len(logged) == 20 and all(
        e.packed_metrics is not None and len(e.packed_metrics) == n for e in logged
    )


async def test_ingest_refuses_the_whole_request_on_one_bad_point(
    executor: CommandExecutor, recorder: InMemoryRecorder
) -> None:
    import numpy as np

    await executor.execute(EnsureDefaultExperiment(), ALICE)
    before = await _events(recorder)
    bad = PackedPoints(
        field="packed",
        names=["loss"],
        key_index=np.zeros(2, "<u4").tobytes(),
        values=np.ones(2, "<f8").tobytes(),
        timestamps=np.array([1, -5], "<i8").tobytes(),
        steps=np.zeros(2, "<i8").tobytes(),
    )
    good = IngestRecord(run_id="a" * 32, start=StartRun(experiment_id="0"))
    with pytest.raises(EvtrackError) as caught:
        await executor.execute(
            Ingest(records=[good, IngestRecord(run_id="b" * 32, points=[bad])]), ALICE
        )
    assert "records[1].packed" in caught.value.message and "non-negative" in caught.value.message
    assert await _events(recorder) == before

"""Import commands on the in-memory recorder: ids kept, sequences moved past them, nothing
appended for a state already imported, collisions with evtrack's own data refused."""

from __future__ import annotations

import numpy as np
import pytest

from evtrack.application import LOG_START, CommandExecutor, Context
from evtrack.domain.commands import CreateExperiment, CreateRun, PackedPoints
from evtrack.domain.import_commands import (
    FinishExperimentImport,
    ImportedExperiment,
    ImportedModelVersion,
    ImportedRun,
    ImportExperiment,
    ImportRegisteredModel,
    ImportRunPoints,
    ImportRuns,
)
from evtrack.domain.registry_commands import CreateModelVersion, CreateRegisteredModel
from evtrack.errors import EvtrackError
from evtrack.eventlog import InMemoryRecorder
from evtrack.events import (
    DOUBLE_MAX,
    ExperimentCreated,
    ExperimentDeleted,
    ExperimentImported,
    KeyValue,
    ModelAliasSet,
    ModelVersionCreated,
    ModelVersionStageChanged,
    RunCreated,
    RunDataLogged,
    RunDeleted,
    RunImported,
)

SOURCE = "http://mlflow.example:5000"
IMPORT = Context(principal=f"import:{SOURCE}", source=SOURCE, client="tests")
ALICE = Context(principal="alice")


@pytest.fixture
def recorder() -> InMemoryRecorder:
    return InMemoryRecorder()


@pytest.fixture
def executor(recorder: InMemoryRecorder) -> CommandExecutor:
    return CommandExecutor(recorder)


async def _events(recorder: InMemoryRecorder) -> list[object]:
    return [r.event for r in await recorder.read_after(LOG_START, 10_000)]


def _experiment(experiment_id: int = 7, **kw: object) -> ImportedExperiment:
    fields: dict[str, object] = {
        "experiment_id": experiment_id,
        "name": f"exp-{experiment_id}",
        "artifact_location": f"mlflow-artifacts:/{experiment_id}",
        "lifecycle_stage": "active",
        "creation_time": 1000,
        "last_update_time": 2000,
        "tags": [KeyValue("team", "a")],
    }
    fields.update(kw)
    return ImportedExperiment(**fields)  # type: ignore[arg-type]


def _points(n: int) -> PackedPoints:
    return PackedPoints(
        field="import",
        names=["loss"],
        key_index=np.zeros(n, "<u4").tobytes(),
        values=np.array([np.nan, np.inf] + [0.5] * (n - 2), "<f8").tobytes(),
        timestamps=np.arange(n, dtype="<i8").tobytes(),
        steps=np.arange(n, dtype="<i8").tobytes(),
    )


async def test_an_experiment_keeps_its_id_and_new_ones_come_after_it(
    executor: CommandExecutor, recorder: InMemoryRecorder
) -> None:
    imported = _experiment(41, lifecycle_stage="deleted")
    assert await executor.execute(
        ImportExperiment(source=SOURCE, experiment=imported, fingerprint="f1"), IMPORT
    )
    await executor.execute(
        FinishExperimentImport(source=SOURCE, experiment=imported, fingerprint="f1"), IMPORT
    )
    created = await executor.execute(CreateExperiment(name="mine"), ALICE)
    assert created == 42
    events = await _events(recorder)
    assert isinstance(events[0], ExperimentCreated) and events[0].experiment_id == 41
    assert [type(e) for e in events[1:3]] == [ExperimentDeleted, ExperimentImported]
    closing = events[2]
    assert isinstance(closing, ExperimentImported)
    assert (closing.creation_time, closing.last_update_time) == (1000, 2000)
    records = await recorder.read_after(LOG_START, 10)
    assert records[0].actor == f"import:{SOURCE}" and records[0].metadata["source"] == SOURCE


async def test_the_same_state_imported_again_appends_nothing(
    executor: CommandExecutor, recorder: InMemoryRecorder
) -> None:
    imported = _experiment()
    run = ImportedRun(
        run_id="r1",
        experiment_id=7,
        status="FINISHED",
        end_time=5,
        lifecycle_stage="deleted",
        params=[KeyValue("lr", "0.1")],
        fingerprint="run-f1",
    )

    async def once() -> list[str]:
        await executor.execute(
            ImportExperiment(source=SOURCE, experiment=imported, fingerprint="f1"), IMPORT
        )
        pending: list[str] = await executor.execute(ImportRuns(source=SOURCE, runs=[run]), IMPORT)
        for run_id in pending:
            await executor.execute(
                ImportRunPoints(source=SOURCE, run_id=run_id, points=_points(10)),
                Context(principal=IMPORT.principal, idempotency_key=f"points-{run_id}"),
            )
            await executor.execute(
                ImportRunPoints(source=SOURCE, run_id=run_id, complete=run.fingerprint), IMPORT
            )
        await executor.execute(
            FinishExperimentImport(source=SOURCE, experiment=imported, fingerprint="f1"), IMPORT
        )
        return pending

    assert await once() == ["r1"]
    first = await _events(recorder)
    assert await once() == []
    assert await _events(recorder) == first
    types = [type(e) for e in first]
    assert types.count(RunCreated) == 1 and types.count(RunImported) == 1
    assert RunDeleted in types
    logged = [e for e in first if isinstance(e, RunDataLogged) and e.packed_metrics]
    values = np.frombuffer(logged[0].packed_metrics.values, "<f8")  # type: ignore[union-attr]
    assert np.isnan(values[0]) and values[1] == DOUBLE_MAX  # infinities clamped as MLflow does


async def test_an_experiment_of_evtrack_s_own_is_never_merged_into(
    executor: CommandExecutor, recorder: InMemoryRecorder
) -> None:
    mine = await executor.execute(CreateExperiment(name="taken"), ALICE)
    before = await _events(recorder)
    with pytest.raises(EvtrackError, match="another experiment of that name"):
        await executor.execute(
            ImportExperiment(
                source=SOURCE, experiment=_experiment(9, name="taken"), fingerprint="f"
            ),
            IMPORT,
        )
    with pytest.raises(EvtrackError, match="under another name"):
        await executor.execute(
            ImportExperiment(source=SOURCE, experiment=_experiment(mine), fingerprint="f"),
            IMPORT,
        )
    assert await _events(recorder) == before


def _model(**kw: object) -> ImportRegisteredModel:
    fields: dict[str, object] = {
        "source": SOURCE,
        "name": "churn",
        "description": "d",
        "creation_timestamp": 10,
        "last_updated_timestamp": 99,
        "versions": [
            ImportedModelVersion(
                version=n,
                source=f"mlflow-artifacts:/1/r/artifacts/m{n}",
                current_stage=stage,
                creation_timestamp=10 + n,
                last_updated_timestamp=20 + n,
            )
            for n, stage in ((2, "Production"), (5, "None"))
        ],
        "aliases": [KeyValue("champion", "2")],
        "fingerprint": "m1",
    }
    fields.update(kw)
    return ImportRegisteredModel(**fields)  # type: ignore[arg-type]


async def test_a_model_keeps_its_version_numbers_stages_and_aliases(
    executor: CommandExecutor, recorder: InMemoryRecorder
) -> None:
    await executor.execute(_model(), IMPORT)
    events = await _events(recorder)
    assert [e.version for e in events if isinstance(e, ModelVersionCreated)] == [2, 5]
    staged = [e for e in events if isinstance(e, ModelVersionStageChanged)]
    assert [(e.version, e.to_stage) for e in staged] == [(2, "Production")]
    assert [(e.alias, e.version) for e in events if isinstance(e, ModelAliasSet)] == [
        ("champion", 2)
    ]
    await executor.execute(_model(), IMPORT)  # same state: nothing more
    assert await _events(recorder) == events
    # A version registered here afterwards is numbered after the imported ones.
    experiment_id = await executor.execute(CreateExperiment(name="e"), ALICE)
    run_id = await executor.execute(CreateRun(experiment_id=experiment_id), ALICE)
    source = f"mlflow-artifacts:/{experiment_id}/{run_id}/artifacts/model"
    number = await executor.execute(
        CreateModelVersion(name="churn", source=source, run_id=run_id), ALICE
    )
    assert number == 6


async def test_a_model_of_evtrack_s_own_is_never_merged_into(
    executor: CommandExecutor, recorder: InMemoryRecorder
) -> None:
    await executor.execute(CreateRegisteredModel(name="churn"), ALICE)
    with pytest.raises(EvtrackError, match="was not imported"):
        await executor.execute(_model(), IMPORT)

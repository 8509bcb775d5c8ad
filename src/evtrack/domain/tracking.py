"""Commands of the tracking domain: what each MLflow write means as events.

Each command reads the stream heads it decides on, validates against that state (raising
``EvtrackError`` with MLflow's code and message), and records events with the versions it
read. It is plain async code over a :class:`UnitOfWork`, so it can be re-run on a conflict.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from evtrack.domain._aggregates import (
    ACTIVE,
    DELETED,
    LOG_MODEL_HISTORY_TAG,
    ExperimentState,
    RunState,
    decode_experiment,
    decode_run,
    encode_state,
    experiment_stream,
    model_history_tag,
    run_stream,
)
from evtrack.domain._locations import absolute_location
from evtrack.domain._logged_model_state import require_logged_models
from evtrack.domain._names import random_run_name
from evtrack.domain._validation import (
    check_length,
    validate_experiment_name,
    validate_experiment_tag,
    validate_param,
    validate_run_tag,
    validate_unique_param_keys,
)
from evtrack.errors import already_exists, invalid, not_found
from evtrack.eventlog import ANY_VERSION, StreamHead, UnitOfWork
from evtrack.events import (
    DatasetInput,
    ExperimentCreated,
    ExperimentDeleted,
    ExperimentRenamed,
    ExperimentRestored,
    ExperimentTagDeleted,
    ExperimentTagSet,
    KeyValue,
    MetricColumns,
    ModelOutput,
    PackedMetrics,
    RunCreated,
    RunDataLogged,
    RunDeleted,
    RunInputsLogged,
    RunOutputsLogged,
    RunRestored,
    RunTagDeleted,
    RunUpdated,
)

EXPERIMENT_NAMES = "experiment"
RUN_NAME_TAG = "mlflow.runName"
DEFAULT_EXPERIMENT_ID = 0
DEFAULT_EXPERIMENT_NAME = "Default"
RUN_STATUSES = ("RUNNING", "SCHEDULED", "FINISHED", "FAILED", "KILLED")


# --- loading -----------------------------------------------------------------------------


async def _load_experiment(
    uow: UnitOfWork, experiment_id: int, *, lock: bool = False
) -> tuple[ExperimentState, int]:
    stream = experiment_stream(experiment_id)
    head = (await uow.heads([stream], lock=lock))[stream]
    if head.state is None:
        raise not_found(f"No Experiment with id={experiment_id} exists")
    return decode_experiment(head.state), head.version


@dataclass
class LoadedRun:
    run: RunState
    run_version: int
    experiment: ExperimentState

    @property
    def lifecycle(self) -> str:
        return self.run.effective_lifecycle(self.experiment)

    def require_active(self) -> None:
        if self.lifecycle != ACTIVE:
            raise invalid(
                f"The run {self.run.run_id} must be in the 'active' state. "
                f"Current state is {self.lifecycle}."
            )


async def _load_run(uow: UnitOfWork, run_id: str) -> LoadedRun:
    run_head = (await uow.heads([run_stream(run_id)], lock=True))[run_stream(run_id)]
    if run_head.state is None:
        raise not_found(f"Run with id={run_id} not found")
    run = decode_run(run_head.state)
    experiment, _ = await _load_experiment(uow, run.experiment_id)
    return LoadedRun(run, run_head.version, experiment)


def _require_active_experiment(experiment: ExperimentState) -> None:
    if experiment.lifecycle_stage != ACTIVE:
        raise invalid(
            f"The experiment {experiment.experiment_id} must be in the 'active' state. "
            f"Current state is {experiment.lifecycle_stage}."
        )


# --- experiments ---------------------------------------------------------------------------


async def create_experiment(
    uow: UnitOfWork,
    name: object,
    artifact_location: str | None,
    tags: Sequence[tuple[str, str]],
    *,
    artifact_root: str,
    experiment_id: int | None = None,
) -> int:
    """Create an experiment; ``experiment_id`` is given only for the bootstrap Default."""
    valid_name = validate_experiment_name(name)
    if artifact_location and artifact_location.startswith("runs:"):
        raise invalid(f"Artifact location cannot be a runs:/ URI. Given: '{artifact_location}'")
    if artifact_location:  # a relative local path is anchored at the server's cwd, as in MLflow
        artifact_location = absolute_location(artifact_location, PurePosixPath(Path.cwd()))
    checked_tags = [KeyValue(*validate_experiment_tag(k, v)) for k, v in tags]
    if experiment_id is None:
        experiment_id = await uow.next_sequence_value("experiment_ids")
    if not await uow.reserve_name(EXPERIMENT_NAMES, valid_name, experiment_stream(experiment_id)):
        raise already_exists(f"Experiment(name={valid_name}) already exists.")
    location = artifact_location or f"{artifact_root.rstrip('/')}/{experiment_id}"
    event = ExperimentCreated(
        experiment_id=experiment_id, name=valid_name, artifact_location=location, tags=checked_tags
    )
    state = ExperimentState(
        experiment_id, valid_name, location, tag_keys={t.key for t in checked_tags}
    )
    uow.append(
        experiment_stream(experiment_id), [event], expected_version=0, state=encode_state(state)
    )
    return experiment_id


async def rename_experiment(uow: UnitOfWork, experiment_id: int, new_name: object) -> None:
    state, version = await _load_experiment(uow, experiment_id, lock=True)
    if state.lifecycle_stage != ACTIVE:
        raise invalid("Cannot rename a non-active experiment.")
    valid_name = validate_experiment_name(new_name)
    if valid_name == state.name:
        return
    if not await uow.reserve_name(EXPERIMENT_NAMES, valid_name, experiment_stream(experiment_id)):
        raise already_exists(f"Experiment(name={valid_name}) already exists.")
    await uow.release_name(EXPERIMENT_NAMES, state.name)
    event = ExperimentRenamed(experiment_id=experiment_id, name=valid_name)
    state.apply(event)
    uow.append(
        experiment_stream(experiment_id),
        [event],
        expected_version=version,
        state=encode_state(state),
    )


async def set_experiment_lifecycle(uow: UnitOfWork, experiment_id: int, *, delete: bool) -> None:
    """Soft-delete or restore; as in MLflow, the experiment must be in the opposite state,
    else it is "not found" (a delete sees only active experiments, a restore only deleted)."""
    if delete and experiment_id == DEFAULT_EXPERIMENT_ID:
        raise invalid("Cannot delete the default experiment '0'. This is an internal experiment.")
    state, version = await _load_experiment(uow, experiment_id, lock=True)
    if state.lifecycle_stage != (ACTIVE if delete else DELETED):
        raise not_found(f"No Experiment with id={experiment_id} exists")
    event: ExperimentDeleted | ExperimentRestored = (
        ExperimentDeleted(experiment_id=experiment_id)
        if delete
        else ExperimentRestored(experiment_id=experiment_id)
    )
    state.apply(event)
    uow.append(
        experiment_stream(experiment_id),
        [event],
        expected_version=version,
        state=encode_state(state),
    )


async def set_experiment_tag(uow: UnitOfWork, experiment_id: int, key: str, value: str) -> None:
    key, value = validate_experiment_tag(key, value)
    state, version = await _load_experiment(uow, experiment_id, lock=True)
    _require_active_experiment(state)
    event = ExperimentTagSet(experiment_id=experiment_id, key=key, value=value)
    state.apply(event)
    uow.append(
        experiment_stream(experiment_id),
        [event],
        expected_version=version,
        state=encode_state(state),
    )


async def delete_experiment_tag(uow: UnitOfWork, experiment_id: int, key: str) -> None:
    state, version = await _load_experiment(uow, experiment_id, lock=True)
    _require_active_experiment(state)
    if key not in state.tag_keys:
        raise not_found(f"No tag with name: {key} in experiment with id {experiment_id}")
    event = ExperimentTagDeleted(experiment_id=experiment_id, key=key)
    state.apply(event)
    uow.append(
        experiment_stream(experiment_id),
        [event],
        expected_version=version,
        state=encode_state(state),
    )


# --- runs ----------------------------------------------------------------------------------


async def create_run(
    uow: UnitOfWork,
    experiment_id: int,
    user_id: str,
    run_name: str | None,
    start_time: int | None,
    tags: Sequence[tuple[str, str]],
    *,
    run_id: str | None = None,
) -> str:
    """Create a run; ``run_id`` is given by clients that name runs themselves (the native
    ingestion route, so a training job can start logging while the server is unreachable)."""
    experiment, _ = await _load_experiment(uow, experiment_id)
    event, state = new_run(
        experiment, run_id or uuid.uuid4().hex, user_id, run_name, start_time, tags
    )
    uow.append(run_stream(event.run_id), [event], expected_version=0, state=encode_state(state))
    return event.run_id


def new_run(
    experiment: ExperimentState,
    run_id: str,
    user_id: str,
    run_name: str | None,
    start_time: int | None,
    tags: Sequence[tuple[str, str]],
) -> tuple[RunCreated, RunState]:
    """The event creating a run in ``experiment``, and the run's state after it."""
    _require_active_experiment(experiment)
    checked = [KeyValue(*validate_run_tag(k, v, f"tags[{i}]")) for i, (k, v) in enumerate(tags)]
    tag_name = next((t.value for t in checked if t.key == RUN_NAME_TAG), None)
    if run_name and tag_name and run_name != tag_name:
        raise invalid(
            "Both 'run_name' argument and 'mlflow.runName' tag are specified, but with "
            f"different values (run_name='{run_name}', mlflow.runName='{tag_name}')."
        )
    name = run_name or tag_name or random_run_name()
    if tag_name is None:
        checked.append(KeyValue(RUN_NAME_TAG, name))
    artifact_uri = f"{experiment.artifact_location.rstrip('/')}/{run_id}/artifacts"
    event = RunCreated(
        run_id=run_id,
        experiment_id=experiment.experiment_id,
        user_id=user_id,
        run_name=name,
        start_time=start_time,
        artifact_uri=artifact_uri,
        tags=checked,
    )
    state = RunState(
        run_id,
        experiment.experiment_id,
        "RUNNING",
        artifact_uri,
        experiment_generation=experiment.generation,
        tag_keys={t.key for t in checked},
        model_history=model_history_tag(checked),
    )
    return event, state


async def update_run(
    uow: UnitOfWork,
    run_id: str,
    status: str | None,
    end_time: int | None,
    run_name: str | None,
) -> None:
    loaded = await _load_run(uow, run_id)
    _append_run(uow, loaded, decide_update(loaded, status, end_time, run_name))


def decide_update(
    loaded: LoadedRun, status: str | None, end_time: int | None, run_name: str | None
) -> RunUpdated:
    loaded.require_active()
    if status is not None and status not in RUN_STATUSES:
        raise invalid(f"Invalid value {status!r} for parameter 'status' supplied.")
    return RunUpdated(
        run_id=loaded.run.run_id, status=status, end_time=end_time, run_name=run_name or None
    )


async def set_run_lifecycle(uow: UnitOfWork, run_id: str, *, delete: bool) -> None:
    """Soft-delete or restore a run. Like MLflow, doing it twice is not an error; the second
    time records nothing, since nothing changes."""
    loaded = await _load_run(uow, run_id)
    generation = loaded.experiment.generation
    if loaded.lifecycle == (DELETED if delete else ACTIVE):
        return
    event: RunDeleted | RunRestored = (
        RunDeleted(run_id=run_id, experiment_generation=generation)
        if delete
        else RunRestored(run_id=run_id, experiment_generation=generation)
    )
    _append_run(uow, loaded, event)


def _append_run(
    uow: UnitOfWork,
    loaded: LoadedRun,
    event: RunUpdated | RunDeleted | RunRestored | RunDataLogged | RunTagDeleted,
) -> None:
    loaded.run.apply(event)
    uow.append(
        run_stream(loaded.run.run_id),
        [event],
        expected_version=loaded.run_version,
        state=encode_state(loaded.run),
    )


@dataclass(frozen=True)
class RunData:
    """Already shape-validated data of one logging request (keys, values, limits)."""

    metrics: MetricColumns | None
    params: list[KeyValue]
    tags: list[KeyValue]
    packed_metrics: PackedMetrics | None = None  # bulk ingestion's form of the points


async def log_run_data(uow: UnitOfWork, run_id: str, data: RunData) -> None:
    """Log metrics, params and tags to a run as one event.

    Metric-only requests append at the end of the run's stream whatever its version: points
    never conflict with each other. Params must not change once logged, so a request with
    params is decided on the version it read.
    """
    loaded = await _load_run(uow, run_id)
    loaded.require_active()
    if data.metrics is not None and data.metrics.model_ids:
        await require_logged_models(uow, data.metrics.model_ids)
    decided = decide_run_data(loaded, data)
    if decided is None:
        return
    event, tracked = decided
    if not tracked:
        # Nothing the write model tracks changes: append without deciding on a version.
        uow.append(run_stream(run_id), [event], expected_version=ANY_VERSION)
        return
    _append_run(uow, loaded, event)


def decide_run_data(loaded: LoadedRun, data: RunData) -> tuple[RunDataLogged, bool] | None:
    """The event logging ``data`` to the run (None when nothing would change), and whether it
    changes what the write model tracks (new params, tracked tags), so must be decided on the
    version read."""
    loaded.require_active()
    run_id = loaded.run.run_id
    validate_unique_param_keys([p.key for p in data.params])
    changed = [
        {"key": p.key, "old_value": loaded.run.params[p.key], "new_value": p.value}
        for p in data.params
        if p.key in loaded.run.params and loaded.run.params[p.key] != p.value
    ]
    if changed:
        if len(data.params) == 1:
            p = data.params[0]
            raise invalid(
                f"Changing param values is not allowed. Param with key='{p.key}' was already"
                f" logged with value='{loaded.run.params[p.key]}' for run ID='{run_id}'."
                f" Attempted logging new value '{p.value}'."
            )
        raise invalid(
            "Changing param values is not allowed. Params were already"
            f" logged='{changed}' for run ID='{run_id}'."
        )
    new_params = [p for p in data.params if p.key not in loaded.run.params]
    if data.metrics is None and data.packed_metrics is None and not new_params and not data.tags:
        return None
    event = RunDataLogged(
        run_id=run_id,
        metrics=data.metrics,
        params=new_params,
        tags=data.tags,
        packed_metrics=data.packed_metrics,
    )
    tracked_tags = set(t.key for t in data.tags) - loaded.run.tag_keys
    if any(t.key == LOG_MODEL_HISTORY_TAG for t in data.tags):
        tracked_tags.add(LOG_MODEL_HISTORY_TAG)  # its value is part of the run's state
    return event, bool(new_params or tracked_tags)


async def delete_run_tag(uow: UnitOfWork, run_id: str, key: str) -> None:
    loaded = await _load_run(uow, run_id)
    loaded.require_active()
    if key not in loaded.run.tag_keys:
        raise not_found(f"No tag with name: {key} in run with id {run_id}")
    _append_run(uow, loaded, RunTagDeleted(run_id=run_id, key=key))


async def log_inputs(
    uow: UnitOfWork, run_id: str, datasets: Sequence[DatasetInput], model_ids: Sequence[str]
) -> None:
    loaded = await _load_run(uow, run_id)
    loaded.require_active()
    if not datasets and not model_ids:
        return
    event = RunInputsLogged(run_id=run_id, datasets=list(datasets), model_ids=list(model_ids))
    uow.append(run_stream(run_id), [event], expected_version=ANY_VERSION)


async def log_outputs(uow: UnitOfWork, run_id: str, models: Sequence[ModelOutput]) -> None:
    loaded = await _load_run(uow, run_id)
    loaded.require_active()
    if models:
        event = RunOutputsLogged(run_id=run_id, models=list(models))
        uow.append(run_stream(run_id), [event], expected_version=ANY_VERSION)


async def run_exists(uow: UnitOfWork, run_id: str) -> bool:
    return bool((await uow.heads([run_stream(run_id)]))[run_stream(run_id)].version)


async def experiment_id_for_name(uow: UnitOfWork, name: str, *, artifact_root: str) -> int:
    """The id of the experiment called ``name``, created if there is none (get-or-create)."""
    owner = await uow.name_owner(EXPERIMENT_NAMES, name)
    if owner is not None:
        return int(owner.removeprefix("experiment-"))
    experiment_id = await create_experiment(uow, name, None, [], artifact_root=artifact_root)
    await uow.flush()  # runs created next in this unit read its head
    return experiment_id


async def ensure_default_experiment(uow: UnitOfWork, *, artifact_root: str) -> bool:
    """Create experiment 0 "Default" once; MLflow's fluent API falls back to it."""
    head: StreamHead = (await uow.heads([experiment_stream(DEFAULT_EXPERIMENT_ID)]))[
        experiment_stream(DEFAULT_EXPERIMENT_ID)
    ]
    if head.version:
        return False
    await create_experiment(
        uow,
        DEFAULT_EXPERIMENT_NAME,
        None,
        [],
        artifact_root=artifact_root,
        experiment_id=DEFAULT_EXPERIMENT_ID,
    )
    return True


__all__ = [
    "DEFAULT_EXPERIMENT_ID",
    "RunData",
    "check_length",
    "create_experiment",
    "create_run",
    "delete_experiment_tag",
    "delete_run_tag",
    "ensure_default_experiment",
    "log_inputs",
    "log_outputs",
    "log_run_data",
    "rename_experiment",
    "set_experiment_lifecycle",
    "set_experiment_tag",
    "set_run_lifecycle",
    "update_run",
    "validate_param",
]

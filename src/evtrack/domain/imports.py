"""Decisions of an import: the events that make evtrack show what the source shows.

The events are the ordinary ones (``ExperimentCreated``, ``RunCreated``, ``RunDataLogged``,
``ModelVersionCreated``, ...), so the read models fold imported facts like any others, with
the source's ids: experiment ids and version numbers are taken, not allocated, and the
experiment id sequence is moved past every imported id. What an ordinary command would
stamp with the present (creation and update times) comes from the source in a closing
``*Imported`` event, which also records the fingerprint of the source state: the same
state imported again appends nothing, and an import cut short resumes at what lacks it.

Deciding against state rather than only against idempotency keys keeps that true after
keys expire. An aggregate that exists here but was not imported (a name or id collision
with evtrack's own data) is refused with a clear error, never merged into silently; the
one exception is experiment 0, "Default", which every server creates for itself.
"""

from __future__ import annotations

import numpy as np

from evtrack.domain._aggregates import (
    ACTIVE,
    DELETED,
    ExperimentState,
    RunState,
    decode_experiment,
    decode_run,
    encode_state,
    experiment_stream,
    model_history_tag,
    run_stream,
)
from evtrack.domain._import_registry import import_registered_model
from evtrack.domain._import_shared import tag_changes, unique_pairs
from evtrack.domain._metric_rules import check_arrays
from evtrack.domain._planning import decided_by
from evtrack.domain.commands import PackedPoints
from evtrack.domain.import_commands import (
    FinishExperimentImport,
    ImportedExperiment,
    ImportedRun,
    ImportExperiment,
    ImportRegisteredModel,
    ImportRunPoints,
    ImportRuns,
)
from evtrack.domain.tracking import EXPERIMENT_NAMES, RUN_STATUSES
from evtrack.errors import already_exists, invalid, not_found
from evtrack.eventlog import ANY_VERSION, UnitOfWork
from evtrack.events import (
    Event,
    ExperimentCreated,
    ExperimentDeleted,
    ExperimentImported,
    ExperimentRenamed,
    ExperimentRestored,
    ExperimentTagDeleted,
    ExperimentTagSet,
    RunCreated,
    RunDataLogged,
    RunDeleted,
    RunImported,
    RunRestored,
    RunTagDeleted,
    RunUpdated,
)
from evtrack.events.arrays import pack

_LIFECYCLES = (ACTIVE, DELETED)


# --- experiments ---------------------------------------------------------------------------


def _check_experiment(e: ImportedExperiment) -> None:
    if e.experiment_id < 0:
        raise invalid(f"Cannot import experiment id {e.experiment_id}: ids are non-negative.")
    if e.lifecycle_stage not in _LIFECYCLES:
        raise invalid(
            f"Cannot import experiment {e.experiment_id}: unknown lifecycle stage "
            f"{e.lifecycle_stage!r}."
        )
    if not e.name:
        raise invalid(f"Cannot import experiment {e.experiment_id}: it has no name.")


async def import_experiment(uow: UnitOfWork, c: ImportExperiment) -> bool:
    e = c.experiment
    _check_experiment(e)
    stream = experiment_stream(e.experiment_id)
    head = (await uow.heads([stream], lock=True))[stream]
    if head.state is None:
        owner = await uow.name_owner(EXPERIMENT_NAMES, e.name)
        if owner is not None or not await uow.reserve_name(EXPERIMENT_NAMES, e.name, stream):
            raise already_exists(
                f"Cannot import experiment {e.experiment_id} ({e.name!r}): this server has "
                f"another experiment of that name ({owner})."
            )
        await uow.advance_sequence("experiment_ids", e.experiment_id)
        tags = unique_pairs(e.tags)
        created = ExperimentCreated(
            experiment_id=e.experiment_id,
            name=e.name,
            artifact_location=e.artifact_location,
            tags=tags,
        )
        state = ExperimentState(
            e.experiment_id, e.name, e.artifact_location, tag_keys={t.key for t in tags}
        )
        uow.append(stream, [created], expected_version=0, state=encode_state(state))
        return True
    state = decode_experiment(head.state)
    if state.imported == c.fingerprint:
        return False
    if state.imported is None and state.name != e.name:
        raise already_exists(
            f"Cannot import experiment {e.experiment_id} ({e.name!r}): this server has "
            f"experiment {e.experiment_id} under another name ({state.name!r})."
        )
    events: list[Event] = []
    if state.name != e.name:
        if not await uow.reserve_name(EXPERIMENT_NAMES, e.name, stream):
            raise already_exists(
                f"Cannot rename imported experiment {e.experiment_id} to {e.name!r}: this "
                "server has another experiment of that name."
            )
        await uow.release_name(EXPERIMENT_NAMES, state.name)
        events.append(ExperimentRenamed(experiment_id=e.experiment_id, name=e.name))
    events += tag_changes(
        state.tag_keys,
        e.tags,
        lambda t: ExperimentTagSet(experiment_id=e.experiment_id, key=t.key, value=t.value),
        lambda k: ExperimentTagDeleted(experiment_id=e.experiment_id, key=k),
    )
    await uow.advance_sequence("experiment_ids", e.experiment_id)
    _append_experiment(uow, state, head.version, events)
    return False


async def finish_experiment_import(uow: UnitOfWork, c: FinishExperimentImport) -> None:
    e = c.experiment
    _check_experiment(e)
    stream = experiment_stream(e.experiment_id)
    head = (await uow.heads([stream], lock=True))[stream]
    if head.state is None:
        raise not_found(f"No Experiment with id={e.experiment_id} exists")
    state = decode_experiment(head.state)
    if state.imported == c.fingerprint:
        return
    events: list[Event] = []
    if e.lifecycle_stage == DELETED and state.lifecycle_stage == ACTIVE:
        events.append(ExperimentDeleted(experiment_id=e.experiment_id))
    elif e.lifecycle_stage == ACTIVE and state.lifecycle_stage == DELETED:
        events.append(ExperimentRestored(experiment_id=e.experiment_id))
    events.append(
        ExperimentImported(
            experiment_id=e.experiment_id,
            source=c.source,
            fingerprint=c.fingerprint,
            creation_time=max(0, e.creation_time),
            last_update_time=max(0, e.last_update_time),
        )
    )
    _append_experiment(uow, state, head.version, events)


def _append_experiment(
    uow: UnitOfWork, state: ExperimentState, version: int, events: list[Event]
) -> None:
    for event in events:
        state.apply(event)
    uow.append(
        experiment_stream(state.experiment_id),
        events,
        expected_version=version,
        state=encode_state(state),
    )


# --- runs ----------------------------------------------------------------------------------


def _check_run(r: ImportedRun) -> None:
    if not r.run_id:
        raise invalid("Cannot import a run without an id.")
    if r.status not in RUN_STATUSES:
        raise invalid(f"Cannot import run {r.run_id}: unknown status {r.status!r}.")
    if r.lifecycle_stage not in _LIFECYCLES:
        raise invalid(
            f"Cannot import run {r.run_id}: unknown lifecycle stage {r.lifecycle_stage!r}."
        )


async def import_runs(uow: UnitOfWork, c: ImportRuns) -> list[str]:
    for r in c.runs:
        _check_run(r)
    run_streams = [run_stream(r.run_id) for r in c.runs]
    experiment_streams = sorted({experiment_stream(r.experiment_id) for r in c.runs})
    heads = await uow.heads([*experiment_streams, *run_streams], lock=True)
    experiments: dict[int, ExperimentState] = {}
    for sid in experiment_streams:
        blob = heads[sid].state
        if blob is None:
            raise not_found(f"No Experiment with id={sid.removeprefix('experiment-')} exists")
        found = decode_experiment(blob)
        experiments[found.experiment_id] = found
    pending: list[str] = []
    for r in c.runs:
        head = heads[run_stream(r.run_id)]
        experiment = experiments[r.experiment_id]
        if head.state is None:
            _create_run(uow, experiment, r)
            pending.append(r.run_id)
            continue
        state = decode_run(head.state)
        if state.experiment_id != r.experiment_id:
            raise already_exists(
                f"Cannot import run {r.run_id} into experiment {r.experiment_id}: this server "
                f"has a run with that id in experiment {state.experiment_id}."
            )
        if state.imported == r.fingerprint:
            continue
        pending.append(r.run_id)
        if state.imported is not None:  # imported before, changed at the source since
            _update_run(uow, experiment, state, head.version, r)
    return pending


def _create_run(uow: UnitOfWork, experiment: ExperimentState, r: ImportedRun) -> None:
    tags = unique_pairs(r.tags)
    artifact_uri = f"{experiment.artifact_location.rstrip('/')}/{r.run_id}/artifacts"
    events: list[Event] = [
        RunCreated(
            run_id=r.run_id,
            experiment_id=r.experiment_id,
            user_id=r.user_id,
            run_name=r.run_name,
            start_time=r.start_time,
            artifact_uri=artifact_uri,
            tags=tags,
        )
    ]
    state = RunState(
        r.run_id,
        r.experiment_id,
        "RUNNING",
        artifact_uri,
        experiment_generation=experiment.generation,
        tag_keys={t.key for t in tags},
        model_history=model_history_tag(tags),
    )
    if r.params:
        events.append(RunDataLogged(run_id=r.run_id, params=unique_pairs(r.params)))
    if r.status != "RUNNING" or r.end_time is not None:
        events.append(RunUpdated(run_id=r.run_id, status=r.status, end_time=r.end_time))
    if r.lifecycle_stage == DELETED:
        events.append(RunDeleted(run_id=r.run_id, experiment_generation=experiment.generation))
    for event in events[1:]:
        state.apply(event)
    uow.append(run_stream(r.run_id), events, expected_version=0, state=encode_state(state))


def _update_run(
    uow: UnitOfWork, experiment: ExperimentState, state: RunState, version: int, r: ImportedRun
) -> None:
    """Bring a run imported earlier up to the source's newer state (params never change;
    new ones are added)."""
    new_params = [p for p in unique_pairs(r.params) if p.key not in state.params]
    tags = unique_pairs(r.tags)
    events: list[Event] = []
    if new_params or tags:
        events.append(RunDataLogged(run_id=r.run_id, params=new_params, tags=tags))
    events += [
        RunTagDeleted(run_id=r.run_id, key=k)
        for k in sorted(state.tag_keys - {t.key for t in tags})
    ]
    events.append(
        RunUpdated(run_id=r.run_id, status=r.status, end_time=r.end_time, run_name=r.run_name)
    )
    lifecycle = state.effective_lifecycle(experiment)
    if r.lifecycle_stage == DELETED and lifecycle == ACTIVE:
        events.append(RunDeleted(run_id=r.run_id, experiment_generation=experiment.generation))
    elif r.lifecycle_stage == ACTIVE and lifecycle == DELETED:
        events.append(RunRestored(run_id=r.run_id, experiment_generation=experiment.generation))
    for event in events:
        state.apply(event)
    uow.append(run_stream(r.run_id), events, expected_version=version, state=encode_state(state))


def _points(run_id: str, p: PackedPoints) -> RunDataLogged | None:
    n, odd = divmod(len(p.values), 8)
    if odd or (len(p.key_index), len(p.timestamps), len(p.steps)) != (4 * n, 8 * n, 8 * n):
        raise invalid(f"Points of run {run_id}: arrays of different lengths.")
    if not n:
        return None
    key_index = np.frombuffer(p.key_index, dtype="<u4").astype(np.uint32)
    if int(key_index.max()) >= len(p.names):
        raise invalid(f"Points of run {run_id}: a key index refers past the end of names.")
    timestamps = np.frombuffer(p.timestamps, dtype="<i8").astype(np.int64)
    values = check_arrays(
        np.frombuffer(p.values, dtype="<f8").astype(np.float64), timestamps, f"run {run_id}"
    )
    steps = np.frombuffer(p.steps, dtype="<i8").astype(np.int64)
    return RunDataLogged(
        run_id=run_id, packed_metrics=pack(p.names, key_index, values, timestamps, steps)
    )


async def import_run_points(uow: UnitOfWork, c: ImportRunPoints) -> None:
    logged = None if c.points is None else _points(c.run_id, c.points)
    stream = run_stream(c.run_id)
    head = (await uow.heads([stream], lock=c.complete is not None))[stream]
    if head.state is None:
        raise not_found(f"Run with id={c.run_id} not found")
    if c.complete is None:
        if logged is not None:  # points never conflict: append at the end
            uow.append(stream, [logged], expected_version=ANY_VERSION)
        return
    state = decode_run(head.state)
    if state.imported == c.complete:
        return
    events: list[Event] = [] if logged is None else [logged]
    events.append(RunImported(run_id=c.run_id, source=c.source, fingerprint=c.complete))
    for event in events:
        state.apply(event)
    uow.append(stream, events, expected_version=head.version, state=encode_state(state))


decided_by(
    {
        ImportExperiment: lambda uow, c, _: import_experiment(uow, c),
        FinishExperimentImport: lambda uow, c, _: finish_experiment_import(uow, c),
        ImportRuns: lambda uow, c, _: import_runs(uow, c),
        ImportRunPoints: lambda uow, c, _: import_run_points(uow, c),
        ImportRegisteredModel: lambda uow, c, _: import_registered_model(uow, c),
    }
)

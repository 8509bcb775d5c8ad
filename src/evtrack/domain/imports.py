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

import uuid
from collections.abc import Callable, Sequence

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
from evtrack.domain._metric_rules import check_arrays
from evtrack.domain._planning import decided_by
from evtrack.domain._registry_state import (
    RegisteredModelState,
    decode_registered_model,
    encode_registered_model,
    registered_model_stream,
)
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
from evtrack.domain.registry import MODEL_NAMES, canonical_stage
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
    KeyValue,
    ModelAliasDeleted,
    ModelAliasSet,
    ModelVersionCreated,
    ModelVersionDeleted,
    ModelVersionDescriptionSet,
    ModelVersionStageChanged,
    ModelVersionTagDeleted,
    ModelVersionTagSet,
    RegisteredModelCreated,
    RegisteredModelDescriptionSet,
    RegisteredModelImported,
    RegisteredModelTagDeleted,
    RegisteredModelTagSet,
    RunCreated,
    RunDataLogged,
    RunDeleted,
    RunImported,
    RunRestored,
    RunTagDeleted,
    RunUpdated,
    VersionTimes,
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
        tags = _unique(e.tags)
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
    events += _tag_changes(
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
    tags = _unique(r.tags)
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
        events.append(RunDataLogged(run_id=r.run_id, params=_unique(r.params)))
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
    new_params = [p for p in _unique(r.params) if p.key not in state.params]
    tags = _unique(r.tags)
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


# --- registered models ---------------------------------------------------------------------


async def import_registered_model(uow: UnitOfWork, c: ImportRegisteredModel) -> None:
    owner = await uow.name_owner(MODEL_NAMES, c.name)
    events: list[Event] = []
    if owner is None:
        model_key = uuid.uuid4().hex
        stream = registered_model_stream(model_key)
        if not await uow.reserve_name(MODEL_NAMES, c.name, stream):
            raise already_exists(f"Registered Model (name={c.name}) already exists.")
        tags = _unique(c.tags)
        state = RegisteredModelState(model_key, c.name, tag_keys={t.key for t in tags})
        version = 0
        events.append(
            RegisteredModelCreated(
                model_key=model_key, name=c.name, description=c.description or None, tags=tags
            )
        )
    else:
        head = (await uow.heads([owner], lock=True))[owner]
        assert head.state is not None
        state = decode_registered_model(head.state)
        version = head.version
        if state.imported == c.fingerprint:
            return
        if state.imported is None:
            raise already_exists(
                f"Cannot import registered model {c.name!r}: this server has a model of that "
                "name that was not imported."
            )
        model_key = state.model_key
        events.append(
            RegisteredModelDescriptionSet(model_key=model_key, description=c.description or None)
        )
        events += _tag_changes(
            state.tag_keys,
            c.tags,
            lambda t: RegisteredModelTagSet(model_key=model_key, key=t.key, value=t.value),
            lambda k: RegisteredModelTagDeleted(model_key=model_key, key=k),
        )
    for event in events:
        state.apply(event)
    events += _version_events(state, c)
    closing = RegisteredModelImported(
        model_key=model_key,
        source=c.source,
        fingerprint=c.fingerprint,
        creation_timestamp=max(0, c.creation_timestamp),
        last_updated_timestamp=max(0, c.last_updated_timestamp),
        versions=[
            VersionTimes(v.version, max(0, v.creation_timestamp), max(0, v.last_updated_timestamp))
            for v in sorted(c.versions, key=lambda v: v.version)
        ],
    )
    state.apply(closing)
    events.append(closing)
    uow.append(
        registered_model_stream(model_key),
        events,
        expected_version=version,
        state=encode_registered_model(state),
    )


def _version_events(state: RegisteredModelState, c: ImportRegisteredModel) -> list[Event]:
    """The events turning ``state``'s versions and aliases into the source's, applied to
    ``state`` as they are decided."""
    key = state.model_key
    out: list[Event] = []

    def add(event: Event) -> None:
        state.apply(event)
        out.append(event)

    wanted = {v.version: v for v in c.versions}
    for number in sorted(wanted):
        v = wanted[number]
        stage = canonical_stage(v.current_stage)
        existing = state.live_version(number)
        if existing is None:
            if number in state.versions:
                raise already_exists(
                    f"Cannot import version {number} of {c.name!r}: it was deleted here."
                )
            add(
                ModelVersionCreated(
                    model_key=key,
                    version=number,
                    source=v.source,
                    storage_location=v.source,
                    run_id=v.run_id or None,
                    run_link=v.run_link or None,
                    description=v.description or None,
                    tags=_unique(v.tags),
                )
            )
        else:
            add(
                ModelVersionDescriptionSet(model_key=key, version=number, description=v.description)
            )
            for event in _version_tag_changes(key, number, existing.tag_keys, v.tags):
                add(event)
        current = state.versions[number].stage
        if stage != current:
            add(
                ModelVersionStageChanged(
                    model_key=key,
                    version=number,
                    from_stage=current,
                    to_stage=stage,
                    reason="import",
                )
            )
    for number, found in sorted(state.versions.items()):
        if number not in wanted and not found.deleted:
            add(ModelVersionDeleted(model_key=key, version=number))
    aliases = {a.key: _alias_version(c.name, a) for a in c.aliases}
    for alias, number in sorted(aliases.items()):
        if state.live_version(number) is None:
            raise invalid(f"Cannot import alias {alias!r} of {c.name!r}: no version {number}.")
        previous = state.aliases.get(alias)
        if previous != number:
            add(
                ModelAliasSet(model_key=key, alias=alias, version=number, previous_version=previous)
            )
    for alias, number in sorted(state.aliases.items()):
        if alias not in aliases:
            add(ModelAliasDeleted(model_key=key, alias=alias, version=number))
    return out


def _version_tag_changes(
    key: str, number: int, current_keys: set[str], tags: Sequence[KeyValue]
) -> list[Event]:
    def set_tag(t: KeyValue) -> Event:
        return ModelVersionTagSet(model_key=key, version=number, key=t.key, value=t.value)

    def delete_tag(k: str) -> Event:
        return ModelVersionTagDeleted(model_key=key, version=number, key=k)

    return _tag_changes(current_keys, tags, set_tag, delete_tag)


def _alias_version(name: str, alias: KeyValue) -> int:
    try:
        return int(alias.value)
    except ValueError:
        raise invalid(
            f"Cannot import alias {alias.key!r} of {name!r}: version {alias.value!r} is not a "
            "number."
        ) from None


# --- shared --------------------------------------------------------------------------------


def _unique(items: Sequence[KeyValue]) -> list[KeyValue]:
    """Key-value pairs with each key once (the last value wins, as a series of sets would)."""
    return [KeyValue(k, v) for k, v in {kv.key: kv.value for kv in items}.items()]


def _tag_changes(
    current_keys: set[str],
    tags: Sequence[KeyValue],
    set_tag: Callable[[KeyValue], Event],
    delete_tag: Callable[[str], Event],
) -> list[Event]:
    """Set every source tag (values are not kept in state) and delete tags it no longer has."""
    wanted = _unique(tags)
    keys = {t.key for t in wanted}
    events: list[Event] = [set_tag(t) for t in wanted]
    events += [delete_tag(k) for k in sorted(current_keys - keys)]
    return events


decided_by(
    {
        ImportExperiment: lambda uow, c, _: import_experiment(uow, c),
        FinishExperimentImport: lambda uow, c, _: finish_experiment_import(uow, c),
        ImportRuns: lambda uow, c, _: import_runs(uow, c),
        ImportRunPoints: lambda uow, c, _: import_run_points(uow, c),
        ImportRegisteredModel: lambda uow, c, _: import_registered_model(uow, c),
    }
)

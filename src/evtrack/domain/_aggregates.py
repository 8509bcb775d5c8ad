"""Aggregate state the domain decides on, as folds of each stream's events.

The event store keeps the latest fold next to each stream head (``streams.state``), so a
command reads one row instead of replaying a run's whole history; :func:`fold_experiment` and
:func:`fold_run` recompute it from the log, which is how it is verified and rebuilt.
"""

from __future__ import annotations

from collections.abc import Iterable

import msgspec

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
    RunCreated,
    RunDataLogged,
    RunDeleted,
    RunImported,
    RunRestored,
    RunTagDeleted,
    RunUpdated,
)

ACTIVE = "active"
DELETED = "deleted"
# Run tag holding the legacy (MLflow 2.x ``runs/log-model``) list of models logged to a run.
# Its value is kept in the run's state because log-model appends to it.
LOG_MODEL_HISTORY_TAG = "mlflow.log-model.history"


def experiment_stream(experiment_id: int) -> str:
    return f"experiment-{experiment_id}"


def run_stream(run_id: str) -> str:
    return f"run-{run_id}"


class ExperimentState(msgspec.Struct):
    experiment_id: int
    name: str
    artifact_location: str
    lifecycle_stage: str = ACTIVE
    # Number of delete/restore events so far: a run's own lifecycle holds only until the
    # experiment's lifecycle changes after it.
    generation: int = 0
    tag_keys: set[str] = msgspec.field(default_factory=set)
    # The fingerprint of the source state it was last imported as (None: never imported).
    imported: str | None = None

    def apply(self, event: Event) -> None:
        match event:
            case ExperimentImported(fingerprint=fingerprint):
                self.imported = fingerprint
            case ExperimentRenamed(name=name):
                self.name = name
            case ExperimentDeleted():
                self.lifecycle_stage = DELETED
                self.generation += 1
            case ExperimentRestored():
                self.lifecycle_stage = ACTIVE
                self.generation += 1
            case ExperimentTagSet(key=key):
                self.tag_keys.add(key)
            case ExperimentTagDeleted(key=key):
                self.tag_keys.discard(key)
            case _:
                pass


class RunState(msgspec.Struct):
    run_id: str
    experiment_id: int
    status: str
    artifact_uri: str
    lifecycle_stage: str = ACTIVE
    experiment_generation: int = 0
    params: dict[str, str] = msgspec.field(default_factory=dict)
    tag_keys: set[str] = msgspec.field(default_factory=set)
    model_history: str | None = None  # value of LOG_MODEL_HISTORY_TAG, if set
    imported: str | None = None  # fingerprint of the source state it was imported as

    def effective_lifecycle(self, experiment: ExperimentState) -> str:
        """The run's lifecycle, overridden by experiment deletes/restores that came later."""
        if experiment.generation > self.experiment_generation:
            return experiment.lifecycle_stage
        return self.lifecycle_stage

    def apply(self, event: Event) -> None:
        match event:
            case RunUpdated(status=status):
                if status is not None:
                    self.status = status
            case RunDeleted(experiment_generation=generation):
                self.lifecycle_stage = DELETED
                self.experiment_generation = generation
            case RunRestored(experiment_generation=generation):
                self.lifecycle_stage = ACTIVE
                self.experiment_generation = generation
            case RunDataLogged(params=params, tags=tags):
                for param in params:
                    self.params[param.key] = param.value
                for tag in tags:
                    self.tag_keys.add(tag.key)
                    if tag.key == LOG_MODEL_HISTORY_TAG:
                        self.model_history = tag.value
            case RunTagDeleted(key=key):
                self.tag_keys.discard(key)
                if key == LOG_MODEL_HISTORY_TAG:
                    self.model_history = None
            case RunImported(fingerprint=fingerprint):
                self.imported = fingerprint
            case _:
                pass


def fold_experiment(events: Iterable[Event]) -> ExperimentState | None:
    state: ExperimentState | None = None
    for event in events:
        if isinstance(event, ExperimentCreated):
            state = ExperimentState(
                event.experiment_id,
                event.name,
                event.artifact_location,
                tag_keys={t.key for t in event.tags},
            )
        elif state is not None:
            state.apply(event)
    return state


def fold_run(events: Iterable[Event]) -> RunState | None:
    state: RunState | None = None
    for event in events:
        if isinstance(event, RunCreated):
            state = RunState(
                event.run_id,
                event.experiment_id,
                "RUNNING",
                event.artifact_uri,
                tag_keys={t.key for t in event.tags},
                model_history=model_history_tag(event.tags),
            )
        elif state is not None:
            state.apply(event)
    return state


def model_history_tag(tags: Iterable[KeyValue]) -> str | None:
    """The last value given to LOG_MODEL_HISTORY_TAG in ``tags``, if any."""
    found = None
    for tag in tags:
        if tag.key == LOG_MODEL_HISTORY_TAG:
            found = tag.value
    return found


_encoder = msgspec.msgpack.Encoder()
_experiment_decoder = msgspec.msgpack.Decoder(ExperimentState)
_run_decoder = msgspec.msgpack.Decoder(RunState)


def encode_state(state: ExperimentState | RunState) -> bytes:
    return _encoder.encode(state)


def decode_experiment(blob: bytes) -> ExperimentState:
    return _experiment_decoder.decode(blob)


def decode_run(blob: bytes) -> RunState:
    return _run_decoder.decode(blob)

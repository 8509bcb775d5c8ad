"""The logged-model aggregate: a fold of one model's stream, kept as its stream head's snapshot.

Commands decide on this state (does the model exist, is it deleted, which params and tag keys
it has). Other aggregates read it too: the registry checks a ``models:/m-...`` source against
``artifact_location`` and ``source_run_id``, and run logging checks that the ``model_id`` of
a metric names a model. The snapshot is a msgspec map, so readers may decode just the fields
they need; renaming a field here is therefore a format change.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import msgspec

from evtrack.errors import EvtrackError, not_found
from evtrack.eventlog import UnitOfWork
from evtrack.events import (
    LOGGED_MODEL_PENDING,
    Event,
    LoggedModelCreated,
    LoggedModelDeleted,
    LoggedModelFinalized,
    LoggedModelParamsLogged,
    LoggedModelTagDeleted,
    LoggedModelTagsSet,
)


def logged_model_stream(model_id: str) -> str:
    return f"logged_model-{model_id}"


def model_not_found(model_id: str) -> EvtrackError:
    return not_found(f"Logged model with ID '{model_id}' not found.")


MODEL_VERSIONS_TAG = "mlflow.modelVersions"


class LoggedModelState(msgspec.Struct):
    model_id: str
    experiment_id: int
    artifact_location: str
    source_run_id: str | None = None
    status: str = LOGGED_MODEL_PENDING
    deleted: bool = False
    params: dict[str, str] = msgspec.field(default_factory=dict)
    tag_keys: set[str] = msgspec.field(default_factory=set)
    # The value of the ``mlflow.modelVersions`` tag: registering a version appends to it.
    model_versions_tag: str | None = None

    def apply(self, event: Event) -> None:
        match event:
            case LoggedModelFinalized(status=status):
                self.status = status
            case LoggedModelTagsSet(tags=tags):
                self.tag_keys.update(t.key for t in tags)
                for tag in tags:
                    if tag.key == MODEL_VERSIONS_TAG:
                        self.model_versions_tag = tag.value
            case LoggedModelTagDeleted(key=key):
                self.tag_keys.discard(key)
                if key == MODEL_VERSIONS_TAG:
                    self.model_versions_tag = None
            case LoggedModelParamsLogged(params=params):
                for param in params:
                    self.params[param.key] = param.value
            case LoggedModelDeleted():
                self.deleted = True
            case _:
                pass


def new_logged_model_state(event: LoggedModelCreated) -> LoggedModelState:
    return LoggedModelState(
        model_id=event.model_id,
        experiment_id=event.experiment_id,
        artifact_location=event.artifact_location,
        source_run_id=event.source_run_id,
        params={p.key: p.value for p in event.params},
        tag_keys={t.key for t in event.tags},
        model_versions_tag=next((t.value for t in event.tags if t.key == MODEL_VERSIONS_TAG), None),
    )


def fold_logged_model(events: Iterable[Event]) -> LoggedModelState | None:
    state: LoggedModelState | None = None
    for event in events:
        if isinstance(event, LoggedModelCreated):
            state = new_logged_model_state(event)
        elif state is not None:
            state.apply(event)
    return state


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(LoggedModelState)


def encode_logged_model(state: LoggedModelState) -> bytes:
    return _encoder.encode(state)


def decode_logged_model(blob: bytes) -> LoggedModelState:
    return _decoder.decode(blob)


async def require_logged_models(uow: UnitOfWork, model_ids: Sequence[str | None]) -> None:
    """Fail with MLflow's "not found" unless every named model exists (deleted ones count).

    Metrics logged for a model reference it; MLflow enforces this with a foreign key, which
    also accepts soft-deleted models. The check reads stream heads only, without locking
    them: a model is never un-created, so the answer cannot go stale before commit.
    """
    wanted = sorted({m for m in model_ids if m})
    if not wanted:
        return
    heads = await uow.heads([logged_model_stream(m) for m in wanted])
    for model_id in wanted:
        if heads[logged_model_stream(model_id)].state is None:
            raise model_not_found(model_id)

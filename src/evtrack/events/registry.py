"""Events of the model registry.

Stream: ``registered_model-<key>``, where the key is fixed at creation, so renames move the
name and keep the history. Versions, stages, aliases and promotion requests of a model are
events of its stream: a version number is decided against the model's own history, and a
promotion that archives other versions is one atomic append.
"""

from __future__ import annotations

from evtrack.events._base import Event
from evtrack.events.tracking import KeyValue


class RegisteredModelCreated(Event, frozen=True):
    model_key: str
    name: str
    description: str | None = None
    tags: list[KeyValue] = []


class RegisteredModelRenamed(Event, frozen=True):
    model_key: str
    old_name: str
    name: str


class RegisteredModelDescriptionSet(Event, frozen=True):
    model_key: str
    description: str | None


class RegisteredModelTagSet(Event, frozen=True):
    model_key: str
    key: str
    value: str


class RegisteredModelTagDeleted(Event, frozen=True):
    model_key: str
    key: str


class RegisteredModelDeleted(Event, frozen=True):
    model_key: str
    name: str


class ModelVersionCreated(Event, frozen=True):
    model_key: str
    version: int
    source: str
    storage_location: str
    run_id: str | None = None
    run_link: str | None = None
    description: str | None = None
    model_id: str | None = None
    tags: list[KeyValue] = []


class ModelVersionStageChanged(Event, frozen=True):
    """A version moved between stages.

    ``reason`` says why: ``transition`` (asked for directly), ``archived`` (moved out because
    another version was promoted with archive_existing_versions) or ``approved`` (applied when
    a transition request was approved; ``request_id`` names it).
    """

    model_key: str
    version: int
    from_stage: str
    to_stage: str
    reason: str = "transition"
    request_id: str | None = None


class ModelVersionDescriptionSet(Event, frozen=True):
    model_key: str
    version: int
    description: str | None


class ModelVersionTagSet(Event, frozen=True):
    model_key: str
    version: int
    key: str
    value: str


class ModelVersionTagDeleted(Event, frozen=True):
    model_key: str
    version: int
    key: str


class ModelVersionDeleted(Event, frozen=True):
    model_key: str
    version: int


class ModelAliasSet(Event, frozen=True):
    model_key: str
    alias: str
    version: int
    previous_version: int | None = None


class ModelAliasDeleted(Event, frozen=True):
    model_key: str
    alias: str
    version: int


class TransitionRequested(Event, frozen=True):
    model_key: str
    request_id: str
    version: int
    to_stage: str
    archive_existing_versions: bool = False
    comment: str | None = None


class TransitionApproved(Event, frozen=True):
    model_key: str
    request_id: str
    version: int
    comment: str | None = None


class TransitionRejected(Event, frozen=True):
    model_key: str
    request_id: str
    version: int
    comment: str | None = None


class TransitionCancelled(Event, frozen=True):
    model_key: str
    request_id: str
    version: int

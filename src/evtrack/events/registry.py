"""Events of the model registry.

Stream: ``registered_model-<key>``, where the key is fixed at creation, so renames move the
name and keep the history. Versions, stages, aliases and promotion requests of a model are
events of its stream: a version number is decided against the model's own history, and a
promotion that archives other versions is one atomic append.
"""

from __future__ import annotations

import msgspec

from evtrack.events._base import Event
from evtrack.events._constraints import Int64, Millis, Text
from evtrack.events.tracking import KeyValue


class RegisteredModelCreated(Event, frozen=True):
    model_key: Text
    name: Text
    description: Text | None = None
    tags: list[KeyValue] = []


class RegisteredModelRenamed(Event, frozen=True):
    model_key: Text
    old_name: Text
    name: Text


class RegisteredModelDescriptionSet(Event, frozen=True):
    model_key: Text
    description: Text | None


class RegisteredModelTagSet(Event, frozen=True):
    model_key: Text
    key: Text
    value: Text


class RegisteredModelTagDeleted(Event, frozen=True):
    model_key: Text
    key: Text


class RegisteredModelDeleted(Event, frozen=True):
    model_key: Text
    name: Text


class ModelVersionCreated(Event, frozen=True):
    model_key: Text
    version: Int64
    source: Text
    storage_location: Text
    run_id: Text | None = None
    run_link: Text | None = None
    description: Text | None = None
    model_id: Text | None = None
    tags: list[KeyValue] = []


class ModelVersionStageChanged(Event, frozen=True):
    """A version moved between stages.

    ``reason`` says why: ``transition`` (asked for directly), ``archived`` (moved out because
    another version was promoted with archive_existing_versions) or ``approved`` (applied when
    a transition request was approved; ``request_id`` names it).
    """

    model_key: Text
    version: Int64
    from_stage: Text
    to_stage: Text
    reason: Text = "transition"
    request_id: Text | None = None


class ModelVersionDescriptionSet(Event, frozen=True):
    model_key: Text
    version: Int64
    description: Text | None


class ModelVersionTagSet(Event, frozen=True):
    model_key: Text
    version: Int64
    key: Text
    value: Text


class ModelVersionTagDeleted(Event, frozen=True):
    model_key: Text
    version: Int64
    key: Text


class ModelVersionDeleted(Event, frozen=True):
    model_key: Text
    version: Int64


class ModelAliasSet(Event, frozen=True):
    model_key: Text
    alias: Text
    version: Int64
    previous_version: Int64 | None = None


class ModelAliasDeleted(Event, frozen=True):
    model_key: Text
    alias: Text
    version: Int64


class TransitionRequested(Event, frozen=True):
    model_key: Text
    request_id: Text
    version: Int64
    to_stage: Text
    archive_existing_versions: bool = False
    comment: Text | None = None


class TransitionApproved(Event, frozen=True):
    model_key: Text
    request_id: Text
    version: Int64
    comment: Text | None = None


class TransitionRejected(Event, frozen=True):
    model_key: Text
    request_id: Text
    version: Int64
    comment: Text | None = None


class TransitionCancelled(Event, frozen=True):
    model_key: Text
    request_id: Text
    version: Int64


class VersionTimes(msgspec.Struct, frozen=True, array_like=True):
    version: Int64
    creation_timestamp: Millis
    last_updated_timestamp: Millis


class RegisteredModelImported(Event, frozen=True):
    """The model (its versions, stages, aliases, tags and descriptions) was copied from
    ``source`` and now matches the state ``fingerprint`` names. Appended after the events
    that rebuilt it, it sets the creation and last-update times the source shows, for the
    model and each version (see ``ExperimentImported``)."""

    model_key: Text
    source: Text
    fingerprint: Text
    creation_timestamp: Millis
    last_updated_timestamp: Millis
    versions: list[VersionTimes] = []

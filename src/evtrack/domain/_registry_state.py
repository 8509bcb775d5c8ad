"""The registered-model aggregate: a fold of one model's stream, shared by commands and
time-travel queries (the state "as of" an instant is the fold of the events up to it)."""

from __future__ import annotations

from collections.abc import Iterable

import msgspec

from evtrack.events import (
    Event,
    ModelAliasDeleted,
    ModelAliasSet,
    ModelVersionCreated,
    ModelVersionDeleted,
    ModelVersionStageChanged,
    ModelVersionTagDeleted,
    ModelVersionTagSet,
    RegisteredModelCreated,
    RegisteredModelDeleted,
    RegisteredModelImported,
    RegisteredModelRenamed,
    RegisteredModelTagDeleted,
    RegisteredModelTagSet,
    TransitionApproved,
    TransitionCancelled,
    TransitionRejected,
    TransitionRequested,
)

STAGES = ("None", "Staging", "Production", "Archived")
ACTIVE_STAGES = ("Staging", "Production")


def registered_model_stream(model_key: str) -> str:
    return f"registered_model-{model_key}"


class VersionState(msgspec.Struct):
    version: int
    source: str
    storage_location: str
    run_id: str | None = None
    model_id: str | None = None
    stage: str = "None"
    deleted: bool = False
    tag_keys: set[str] = msgspec.field(default_factory=set)


class RequestState(msgspec.Struct):
    request_id: str
    version: int
    to_stage: str
    from_stage: str
    requested_by: str
    archive_existing_versions: bool = False
    status: str = "PENDING"


class RegisteredModelState(msgspec.Struct):
    model_key: str
    name: str
    deleted: bool = False
    max_version: int = 0
    versions: dict[int, VersionState] = msgspec.field(default_factory=dict)
    aliases: dict[str, int] = msgspec.field(default_factory=dict)
    tag_keys: set[str] = msgspec.field(default_factory=set)
    requests: dict[str, RequestState] = msgspec.field(default_factory=dict)
    imported: str | None = None  # fingerprint of the source state it was imported as

    def live_version(self, version: int) -> VersionState | None:
        found = self.versions.get(version)
        return None if found is None or found.deleted else found

    def in_stage(self, stage: str) -> list[int]:
        return sorted(
            v.version for v in self.versions.values() if not v.deleted and v.stage == stage
        )

    def apply(self, event: Event, actor: str = "") -> None:
        match event:
            case RegisteredModelRenamed(name=name):
                self.name = name
            case RegisteredModelDeleted():
                self.deleted = True
            case RegisteredModelImported(fingerprint=fingerprint):
                self.imported = fingerprint
            case RegisteredModelTagSet(key=key):
                self.tag_keys.add(key)
            case RegisteredModelTagDeleted(key=key):
                self.tag_keys.discard(key)
            case ModelVersionCreated() as e:
                self.max_version = max(self.max_version, e.version)
                self.versions[e.version] = VersionState(
                    e.version,
                    e.source,
                    e.storage_location,
                    e.run_id,
                    e.model_id,
                    tag_keys={t.key for t in e.tags},
                )
            case ModelVersionStageChanged(version=version, to_stage=stage):
                self.versions[version].stage = stage
            case ModelVersionDeleted(version=version):
                self.versions[version].deleted = True
                for request in self.requests.values():
                    if request.version == version and request.status == "PENDING":
                        request.status = "CANCELLED"
            case ModelVersionTagSet(version=version, key=key):
                self.versions[version].tag_keys.add(key)
            case ModelVersionTagDeleted(version=version, key=key):
                self.versions[version].tag_keys.discard(key)
            case ModelAliasSet(alias=alias, version=version):
                self.aliases[alias] = version
            case ModelAliasDeleted(alias=alias):
                self.aliases.pop(alias, None)
            case TransitionRequested() as e:
                self.requests[e.request_id] = RequestState(
                    e.request_id,
                    e.version,
                    e.to_stage,
                    self.versions[e.version].stage,
                    actor,
                    e.archive_existing_versions,
                )
            case TransitionApproved(request_id=rid):
                self.requests[rid].status = "APPROVED"
            case TransitionRejected(request_id=rid):
                self.requests[rid].status = "REJECTED"
            case TransitionCancelled(request_id=rid):
                self.requests[rid].status = "CANCELLED"
            case _:
                pass


def fold_registered_model(events: Iterable[tuple[Event, str]]) -> RegisteredModelState | None:
    """Fold ``(event, actor)`` pairs of one model stream, oldest first."""
    state: RegisteredModelState | None = None
    for event, actor in events:
        if isinstance(event, RegisteredModelCreated):
            state = RegisteredModelState(
                event.model_key, event.name, tag_keys={t.key for t in event.tags}
            )
        elif state is not None:
            state.apply(event, actor)
    return state


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(RegisteredModelState)


def encode_registered_model(state: RegisteredModelState) -> bytes:
    return _encoder.encode(state)


def decode_registered_model(blob: bytes) -> RegisteredModelState:
    return _decoder.decode(blob)

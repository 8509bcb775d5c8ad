"""Commands of the model registry, and the promotion policy that can require approval.

A registered model is one stream; its name is a unique-name reservation pointing at the
stream, so renames and deletes are atomic with the events that record them. Commands lock the
model's stream head while deciding (promotions of one model queue rather than race) and append
with the version they read.
"""

from __future__ import annotations

import json
import re
import urllib.parse
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

import msgspec

from evtrack.domain._aggregates import decode_run, run_stream
from evtrack.domain._logged_model_state import (
    MODEL_VERSIONS_TAG,
    decode_logged_model,
    logged_model_stream,
)
from evtrack.domain._registry_state import (
    ACTIVE_STAGES,
    STAGES,
    RegisteredModelState,
    decode_registered_model,
    encode_registered_model,
    registered_model_stream,
)
from evtrack.domain._sources import SourceOwner, validate_source
from evtrack.domain._validation import (
    check_length,
    invalid_value,
    missing_value,
    validate_entity_name,
)
from evtrack.domain.logged_models import set_logged_model_tags
from evtrack.errors import ErrorCode, EvtrackError, already_exists, conflict, invalid, not_found
from evtrack.eventlog import UnitOfWork
from evtrack.events import (
    Event,
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
    RegisteredModelDeleted,
    RegisteredModelDescriptionSet,
    RegisteredModelRenamed,
    RegisteredModelTagDeleted,
    RegisteredModelTagSet,
    TransitionApproved,
    TransitionCancelled,
    TransitionRejected,
    TransitionRequested,
)

MODEL_NAMES = "registered_model"
MAX_TAG_KEY_LENGTH = 250
MAX_TAG_VALUE_LENGTH = 100_000
MAX_ALIAS_LENGTH = 255
_ALIAS_PATTERN = re.compile(r"^[\w\-]*$")
_VERSION_ALIAS = re.compile(r"^[vV]\d+$")


@dataclass(frozen=True)
class PromotionPolicy:
    """Which stages a version may only enter through an approved transition request.

    ``distinct_approver`` requires the approver to be someone other than the requester
    (four-eyes). An empty policy is MLflow's open-source behaviour: anyone may transition.
    """

    approval_required: frozenset[str] = field(default_factory=frozenset)
    distinct_approver: bool = True

    def requires_approval(self, stage: str) -> bool:
        return stage in self.approval_required


# --- validation ----------------------------------------------------------------------------


def validate_model_name(name: str | None, field_name: str = "name") -> str:
    if name is None or name.strip() == "":
        raise invalid(missing_value(field_name))
    if "/" in name or ":" in name:
        raise invalid(f"Invalid model name '{name}'. Names cannot contain '/' or ':'.")
    import posixpath

    norm = posixpath.normpath(name)
    if norm != name or norm == "." or norm.startswith("..") or norm.startswith("/"):
        raise invalid(
            invalid_value(
                field_name,
                name,
                "Names may be treated as files in certain cases, and must not resolve to other "
                f"names when treated as such. This name would resolve to {norm!r}",
            )
        )
    return name


def parse_version(version: object) -> int:
    try:
        return int(str(version))
    except ValueError:
        raise invalid(f"Parameter 'version' must be an integer, got '{version}'.") from None


def canonical_stage(stage: str) -> str:
    for known in STAGES:
        if known.lower() == stage.lower():
            return known
    raise invalid(
        f"Invalid Model Version stage: {stage}. Value must be one of {', '.join(STAGES)}."
    )


def validate_registry_tag(key: str | None, value: str) -> tuple[str, str]:
    key = validate_entity_name(key, "key", kind="tag")
    check_length("key", MAX_TAG_KEY_LENGTH, key)
    check_length("value", MAX_TAG_VALUE_LENGTH, value)
    return key, value


def validate_alias(alias: str | None, *, for_write: bool) -> str:
    if not alias:
        raise invalid("Registered model alias name cannot be empty.")
    if not _ALIAS_PATTERN.match(alias):
        raise invalid(
            f"Invalid alias name: '{alias}'. Names may only contain alphanumerics, "
            "underscores (_), and dashes (-)."
        )
    check_length("Registered model alias name", MAX_ALIAS_LENGTH, alias)
    if for_write:
        if alias.lower() == "latest":
            raise invalid("'latest' alias name (case insensitive) is reserved.")
        if _VERSION_ALIAS.match(alias):
            raise invalid(f"Version alias name '{alias}' is reserved.")
    return alias


# --- loading -------------------------------------------------------------------------------


@dataclass
class _Loaded:
    state: RegisteredModelState
    version: int

    @property
    def stream(self) -> str:
        return registered_model_stream(self.state.model_key)

    def record(self, uow: UnitOfWork, events: Sequence[Event], actor: str) -> None:
        for event in events:
            self.state.apply(event, actor)
        uow.append(
            self.stream,
            events,
            expected_version=self.version,
            state=encode_registered_model(self.state),
        )

    def live_version(self, version: int) -> int:
        if self.state.live_version(version) is None:
            raise not_found(f"Model Version (name={self.state.name}, version={version}) not found")
        return version


async def _load(uow: UnitOfWork, name: str) -> _Loaded:
    validate_model_name(name)
    owner = await uow.name_owner(MODEL_NAMES, name)
    if owner is None:
        raise not_found(f"Registered Model with name={name} not found")
    head = (await uow.heads([owner], lock=True))[owner]
    assert head.state is not None
    return _Loaded(decode_registered_model(head.state), head.version)


# --- registered models ---------------------------------------------------------------------


async def create_registered_model(
    uow: UnitOfWork, name: str, tags: Sequence[tuple[str, str]], description: str | None
) -> str:
    validate_model_name(name)
    checked = {k: v for k, v in (validate_registry_tag(k, v) for k, v in tags)}
    model_key = uuid.uuid4().hex
    stream = registered_model_stream(model_key)
    if not await uow.reserve_name(MODEL_NAMES, name, stream):
        raise already_exists(f"Registered Model (name={name}) already exists.")
    event = RegisteredModelCreated(
        model_key=model_key,
        name=name,
        description=description or None,
        tags=[KeyValue(k, v) for k, v in checked.items()],
    )
    state = RegisteredModelState(model_key, name, tag_keys=set(checked))
    uow.append(stream, [event], expected_version=0, state=encode_registered_model(state))
    return model_key


async def rename_registered_model(
    uow: UnitOfWork, name: str, new_name: str | None, actor: str
) -> str:
    validate_model_name(new_name, "new_name")
    assert new_name is not None
    loaded = await _load(uow, name)
    if new_name == name:
        return new_name
    if not await uow.reserve_name(MODEL_NAMES, new_name, loaded.stream):
        raise already_exists(f"Registered Model (name={new_name}) already exists.")
    await uow.release_name(MODEL_NAMES, name)
    loaded.record(
        uow,
        [RegisteredModelRenamed(model_key=loaded.state.model_key, old_name=name, name=new_name)],
        actor,
    )
    return new_name


async def update_registered_model(
    uow: UnitOfWork, name: str, description: str | None, actor: str
) -> None:
    loaded = await _load(uow, name)
    loaded.record(
        uow,
        [RegisteredModelDescriptionSet(model_key=loaded.state.model_key, description=description)],
        actor,
    )


async def delete_registered_model(uow: UnitOfWork, name: str, actor: str) -> None:
    loaded = await _load(uow, name)
    await uow.release_name(MODEL_NAMES, name)
    loaded.record(uow, [RegisteredModelDeleted(model_key=loaded.state.model_key, name=name)], actor)


async def set_registered_model_tag(
    uow: UnitOfWork, name: str, key: str, value: str, actor: str
) -> None:
    key, value = validate_registry_tag(key, value)
    loaded = await _load(uow, name)
    loaded.record(
        uow, [RegisteredModelTagSet(model_key=loaded.state.model_key, key=key, value=value)], actor
    )


async def delete_registered_model_tag(uow: UnitOfWork, name: str, key: str, actor: str) -> None:
    validate_entity_name(key, "key", kind="tag")
    loaded = await _load(uow, name)
    if key in loaded.state.tag_keys:
        loaded.record(
            uow, [RegisteredModelTagDeleted(model_key=loaded.state.model_key, key=key)], actor
        )


# --- model versions ------------------------------------------------------------------------


@dataclass(frozen=True)
class NewVersion:
    source: str
    run_id: str | None
    model_id: str | None
    tags: list[tuple[str, str]]
    run_link: str | None
    description: str | None


async def _run_owner(uow: UnitOfWork, run_id: str | None) -> SourceOwner | None:
    if not run_id:
        return None
    head = (await uow.heads([run_stream(run_id)]))[run_stream(run_id)]
    if head.state is None:
        return None
    return SourceOwner("run_id", run_id, decode_run(head.state).artifact_uri)


class _LoggedModelFacts(msgspec.Struct):
    """The fields of a logged model's snapshot the registry needs (others are ignored)."""

    artifact_location: str
    source_run_id: str | None = None


async def _logged_model_owner(
    uow: UnitOfWork, model_id: str | None
) -> tuple[SourceOwner, str | None] | None:
    if not model_id:
        return None
    stream = f"logged_model-{model_id}"
    head = (await uow.heads([stream]))[stream]
    if head.state is None:
        return None
    facts = msgspec.msgpack.decode(head.state, type=_LoggedModelFacts)
    return SourceOwner("model_id", model_id, facts.artifact_location), facts.source_run_id


async def create_model_version(uow: UnitOfWork, name: str, new: NewVersion, actor: str) -> int:
    tags = {k: v for k, v in (validate_registry_tag(k, v) for k, v in new.tags)}
    run_id = new.run_id or None
    storage_location = new.source
    if new.model_id:
        found = await _logged_model_owner(uow, new.model_id)
        validate_source(new.source, found[0] if found else None, owner_kind="model_id")
        if found is None:
            raise not_found(f"Logged model with ID '{new.model_id}' not found.")
        owner, source_run = found
        if urllib.parse.urlparse(new.source).scheme == "models":
            storage_location = owner.artifact_uri
        run_id = run_id or source_run
    else:
        validate_source(
            new.source, await _run_owner(uow, run_id), owner_kind="run_id", requested_id=run_id
        )
        parsed = urllib.parse.urlparse(new.source)
        if parsed.scheme == "models":
            storage_location = await _registered_source_location(uow, new.source)
    loaded = await _load(uow, name)
    version = loaded.state.max_version + 1
    if new.model_id:
        await _note_version_on_logged_model(uow, new.model_id, name, version)
    loaded.record(
        uow,
        [
            ModelVersionCreated(
                model_key=loaded.state.model_key,
                version=version,
                source=new.source,
                storage_location=storage_location,
                run_id=run_id,
                run_link=new.run_link or None,
                description=new.description or None,
                model_id=new.model_id or None,
                tags=[KeyValue(k, v) for k, v in tags.items()],
            )
        ],
        actor,
    )
    return version


async def _note_version_on_logged_model(
    uow: UnitOfWork, model_id: str, name: str, version: int
) -> None:
    """Append ``{"name", "version"}`` to the logged model's ``mlflow.modelVersions`` tag, as
    the reference server does when a version is registered from a logged model."""
    head = (await uow.heads([logged_model_stream(model_id)]))[logged_model_stream(model_id)]
    if head.state is None:
        return
    current = decode_logged_model(head.state).model_versions_tag
    try:
        entries = json.loads(current) if current else []
    except ValueError:
        entries = []
    if not isinstance(entries, list):
        entries = []
    entries.append({"name": name, "version": version})
    await set_logged_model_tags(uow, model_id, [(MODEL_VERSIONS_TAG, json.dumps(entries))])


async def _registered_source_location(uow: UnitOfWork, source: str) -> str:
    """``models:/<name>/<version>`` as a source: the storage location of that version."""
    parts = urllib.parse.urlparse(source).path.strip("/").split("/")
    if len(parts) != 2 or not parts[1].isdigit():
        raise invalid(
            f"Invalid model version source: '{source}'. Registered model sources must name a "
            "version number (models:/<name>/<version>)."
        )
    owner = await uow.name_owner(MODEL_NAMES, parts[0])
    if owner is None:
        raise not_found(f"Registered Model with name={parts[0]} not found")
    head = (await uow.heads([owner]))[owner]
    assert head.state is not None
    state = decode_registered_model(head.state)
    found = state.live_version(int(parts[1]))
    if found is None:
        raise not_found(f"Model Version (name={parts[0]}, version={parts[1]}) not found")
    return found.storage_location


async def update_model_version(
    uow: UnitOfWork, name: str, version: int, description: str | None, actor: str
) -> None:
    loaded = await _load(uow, name)
    loaded.live_version(version)
    loaded.record(
        uow,
        [
            ModelVersionDescriptionSet(
                model_key=loaded.state.model_key, version=version, description=description
            )
        ],
        actor,
    )


async def delete_model_version(uow: UnitOfWork, name: str, version: int, actor: str) -> None:
    loaded = await _load(uow, name)
    loaded.live_version(version)
    key = loaded.state.model_key
    events: list[Event] = [
        ModelAliasDeleted(model_key=key, alias=alias, version=v)
        for alias, v in sorted(loaded.state.aliases.items())
        if v == version
    ]
    events.append(ModelVersionDeleted(model_key=key, version=version))
    loaded.record(uow, events, actor)


async def set_model_version_tag(
    uow: UnitOfWork, name: str, version: int, key: str, value: str, actor: str
) -> None:
    key, value = validate_registry_tag(key, value)
    loaded = await _load(uow, name)
    loaded.live_version(version)
    loaded.record(
        uow,
        [
            ModelVersionTagSet(
                model_key=loaded.state.model_key, version=version, key=key, value=value
            )
        ],
        actor,
    )


async def delete_model_version_tag(
    uow: UnitOfWork, name: str, version: int, key: str, actor: str
) -> None:
    validate_entity_name(key, "key", kind="tag")
    loaded = await _load(uow, name)
    loaded.live_version(version)
    if key in loaded.state.versions[version].tag_keys:
        loaded.record(
            uow,
            [ModelVersionTagDeleted(model_key=loaded.state.model_key, version=version, key=key)],
            actor,
        )


async def set_alias(uow: UnitOfWork, name: str, alias: str, version: int, actor: str) -> None:
    validate_alias(alias, for_write=True)
    loaded = await _load(uow, name)
    loaded.live_version(version)
    previous = loaded.state.aliases.get(alias)
    if previous == version:
        return
    loaded.record(
        uow,
        [
            ModelAliasSet(
                model_key=loaded.state.model_key,
                alias=alias,
                version=version,
                previous_version=previous,
            )
        ],
        actor,
    )


async def delete_alias(uow: UnitOfWork, name: str, alias: str, actor: str) -> None:
    validate_alias(alias, for_write=False)
    loaded = await _load(uow, name)
    version = loaded.state.aliases.get(alias)
    if version is not None:
        loaded.record(
            uow,
            [ModelAliasDeleted(model_key=loaded.state.model_key, alias=alias, version=version)],
            actor,
        )


# --- stages and promotion approval ---------------------------------------------------------


def _stage_events(
    state: RegisteredModelState,
    version: int,
    stage: str,
    archive_existing: bool,
    *,
    reason: str,
    request_id: str | None = None,
) -> list[Event]:
    key = state.model_key
    events: list[Event] = []
    if archive_existing:
        for other in state.in_stage(stage):
            if other != version:
                events.append(
                    ModelVersionStageChanged(
                        model_key=key,
                        version=other,
                        from_stage=stage,
                        to_stage="Archived",
                        reason="archived",
                    )
                )
    current = state.versions[version].stage
    events.append(
        ModelVersionStageChanged(
            model_key=key,
            version=version,
            from_stage=current,
            to_stage=stage,
            reason=reason,
            request_id=request_id,
        )
    )
    return events


def _check_archive_flag(stage: str, archive_existing: bool) -> None:
    if archive_existing and stage not in ACTIVE_STAGES:
        raise invalid(
            "Model version transition cannot archive existing model versions because "
            f"'{stage}' is not an Active stage. Valid stages are {list(ACTIVE_STAGES)}"
        )


async def transition_stage(
    uow: UnitOfWork,
    name: str,
    version: int,
    stage: str,
    archive_existing: bool,
    actor: str,
    policy: PromotionPolicy,
) -> None:
    stage = canonical_stage(stage)
    _check_archive_flag(stage, archive_existing)
    loaded = await _load(uow, name)
    loaded.live_version(version)
    if policy.requires_approval(stage):
        raise EvtrackError(
            ErrorCode.PERMISSION_DENIED,
            f"Moving a model version to '{stage}' requires an approved transition request. "
            f"Request it with `evtrack registry request {name} {version} {stage}` or "
            "POST /api/2.0/evtrack/registry/transition-requests/create.",
        )
    loaded.record(
        uow,
        _stage_events(loaded.state, version, stage, archive_existing, reason="transition"),
        actor,
    )


async def request_transition(
    uow: UnitOfWork,
    name: str,
    version: int,
    stage: str,
    archive_existing: bool,
    comment: str | None,
    actor: str,
) -> str:
    stage = canonical_stage(stage)
    _check_archive_flag(stage, archive_existing)
    loaded = await _load(uow, name)
    loaded.live_version(version)
    if loaded.state.versions[version].stage == stage:
        raise invalid(
            f"Model Version (name={name}, version={version}) is already in stage '{stage}'."
        )
    request_id = uuid.uuid4().hex
    loaded.record(
        uow,
        [
            TransitionRequested(
                model_key=loaded.state.model_key,
                request_id=request_id,
                version=version,
                to_stage=stage,
                archive_existing_versions=archive_existing,
                comment=comment or None,
            )
        ],
        actor,
    )
    return request_id


async def decide_transition(
    uow: UnitOfWork,
    name: str,
    request_id: str,
    decision: str,
    comment: str | None,
    actor: str,
    policy: PromotionPolicy,
) -> None:
    """Approve (and apply), reject or cancel a pending transition request."""
    loaded = await _load(uow, name)
    request = loaded.state.requests.get(request_id)
    if request is None:
        raise not_found(f"Transition request {request_id} not found for registered model {name}")
    if request.status != "PENDING":
        raise invalid(f"Transition request {request_id} is already {request.status.lower()}.")
    key, version = loaded.state.model_key, request.version
    if decision == "cancel":
        if actor != request.requested_by:
            raise EvtrackError(
                ErrorCode.PERMISSION_DENIED, "Only the requester can cancel a transition request."
            )
        loaded.record(
            uow, [TransitionCancelled(model_key=key, request_id=request_id, version=version)], actor
        )
        return
    if decision == "reject":
        loaded.record(
            uow,
            [
                TransitionRejected(
                    model_key=key, request_id=request_id, version=version, comment=comment or None
                )
            ],
            actor,
        )
        return
    if policy.distinct_approver and actor == request.requested_by:
        raise EvtrackError(
            ErrorCode.PERMISSION_DENIED,
            "A transition request must be approved by someone other than its requester.",
        )
    current = loaded.state.live_version(version)
    if current is None:
        raise not_found(f"Model Version (name={name}, version={version}) not found")
    if current.stage != request.from_stage:
        raise conflict(
            f"Model Version (name={name}, version={version}) moved from '{request.from_stage}' to "
            f"'{current.stage}' since the request was made; request the transition again."
        )
    events: list[Event] = [
        TransitionApproved(
            model_key=key, request_id=request_id, version=version, comment=comment or None
        )
    ]
    events += _stage_events(
        loaded.state,
        version,
        request.to_stage,
        request.archive_existing_versions,
        reason="approved",
        request_id=request_id,
    )
    loaded.record(uow, events, actor)

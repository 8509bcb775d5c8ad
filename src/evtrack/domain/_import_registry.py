"""The import of a registered model: versions with their source numbers, stages, aliases,
tags and descriptions, in one append to the model's stream, closed by
``RegisteredModelImported`` with the source's times (see :mod:`evtrack.domain.imports`)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from evtrack.domain._import_shared import tag_changes, unique_pairs
from evtrack.domain._registry_state import (
    RegisteredModelState,
    decode_registered_model,
    encode_registered_model,
    registered_model_stream,
)
from evtrack.domain.import_commands import ImportRegisteredModel
from evtrack.domain.registry import MODEL_NAMES, canonical_stage
from evtrack.errors import already_exists, invalid
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
    RegisteredModelDescriptionSet,
    RegisteredModelImported,
    RegisteredModelTagDeleted,
    RegisteredModelTagSet,
    VersionTimes,
)


async def import_registered_model(uow: UnitOfWork, c: ImportRegisteredModel) -> None:
    owner = await uow.name_owner(MODEL_NAMES, c.name)
    events: list[Event] = []
    if owner is None:
        model_key = uuid.uuid4().hex
        stream = registered_model_stream(model_key)
        if not await uow.reserve_name(MODEL_NAMES, c.name, stream):
            raise already_exists(f"Registered Model (name={c.name}) already exists.")
        tags = unique_pairs(c.tags)
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
        events += tag_changes(
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
                    tags=unique_pairs(v.tags),
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

    return tag_changes(current_keys, tags, set_tag, delete_tag)


def _alias_version(name: str, alias: KeyValue) -> int:
    try:
        return int(alias.value)
    except ValueError:
        raise invalid(
            f"Cannot import alias {alias.key!r} of {name!r}: version {alias.value!r} is not a "
            "number."
        ) from None

"""Planners of the registry commands: each returns the work that decides against the model.

The rules (names, tag limits, aliases, stages, sources, the promotion policy) are the
registry module's, checked with MLflow's texts as the work decides; the actor recorded on the
events, and on a transition request as its requester, is the unit of work's.
"""

from __future__ import annotations

from evtrack.domain import registry
from evtrack.domain._planning import Rules, Work, _planner
from evtrack.domain.registry_commands import (
    CreateModelVersion,
    CreateRegisteredModel,
    DecideTransition,
    DeleteModelAlias,
    DeleteModelVersion,
    DeleteModelVersionTag,
    DeleteRegisteredModel,
    DeleteRegisteredModelTag,
    RenameRegisteredModel,
    RequestTransition,
    SetModelAlias,
    SetModelVersionTag,
    SetRegisteredModelTag,
    TransitionModelVersionStage,
    UpdateModelVersion,
    UpdateRegisteredModel,
)
from evtrack.eventlog import UnitOfWork
from evtrack.events import KeyValue


def _pairs(items: list[KeyValue]) -> list[tuple[str, str]]:
    return [(t.key, t.value) for t in items]


# --- registered models ---------------------------------------------------------------------


@_planner(CreateRegisteredModel)
def _create_registered_model(c: CreateRegisteredModel, rules: Rules) -> Work:
    tags = _pairs(c.tags)

    async def work(uow: UnitOfWork) -> None:
        await registry.create_registered_model(uow, c.name, tags, c.description)

    return work


@_planner(RenameRegisteredModel)
def _rename_registered_model(c: RenameRegisteredModel, rules: Rules) -> Work:
    async def work(uow: UnitOfWork) -> None:
        await registry.rename_registered_model(uow, c.name, c.new_name, uow.metadata.actor)

    return work


@_planner(UpdateRegisteredModel)
def _update_registered_model(c: UpdateRegisteredModel, rules: Rules) -> Work:
    async def work(uow: UnitOfWork) -> None:
        await registry.update_registered_model(uow, c.name, c.description, uow.metadata.actor)

    return work


@_planner(DeleteRegisteredModel)
def _delete_registered_model(c: DeleteRegisteredModel, rules: Rules) -> Work:
    async def work(uow: UnitOfWork) -> None:
        await registry.delete_registered_model(uow, c.name, uow.metadata.actor)

    return work


@_planner(SetRegisteredModelTag)
def _set_registered_model_tag(c: SetRegisteredModelTag, rules: Rules) -> Work:
    async def work(uow: UnitOfWork) -> None:
        await registry.set_registered_model_tag(uow, c.name, c.key, c.value, uow.metadata.actor)

    return work


@_planner(DeleteRegisteredModelTag)
def _delete_registered_model_tag(c: DeleteRegisteredModelTag, rules: Rules) -> Work:
    async def work(uow: UnitOfWork) -> None:
        await registry.delete_registered_model_tag(uow, c.name, c.key, uow.metadata.actor)

    return work


@_planner(SetModelAlias)
def _set_alias(c: SetModelAlias, rules: Rules) -> Work:
    async def work(uow: UnitOfWork) -> None:
        await registry.set_alias(uow, c.name, c.alias, c.version, uow.metadata.actor)

    return work


@_planner(DeleteModelAlias)
def _delete_alias(c: DeleteModelAlias, rules: Rules) -> Work:
    async def work(uow: UnitOfWork) -> None:
        await registry.delete_alias(uow, c.name, c.alias, uow.metadata.actor)

    return work


# --- model versions ------------------------------------------------------------------------


@_planner(CreateModelVersion)
def _create_model_version(c: CreateModelVersion, rules: Rules) -> Work:
    new = registry.NewVersion(
        source=c.source,
        run_id=c.run_id,
        model_id=c.model_id,
        tags=_pairs(c.tags),
        run_link=c.run_link,
        description=c.description,
    )

    async def work(uow: UnitOfWork) -> int:
        return await registry.create_model_version(uow, c.name, new, uow.metadata.actor)

    return work


@_planner(UpdateModelVersion)
def _update_model_version(c: UpdateModelVersion, rules: Rules) -> Work:
    async def work(uow: UnitOfWork) -> None:
        await registry.update_model_version(
            uow, c.name, c.version, c.description, uow.metadata.actor
        )

    return work


@_planner(DeleteModelVersion)
def _delete_model_version(c: DeleteModelVersion, rules: Rules) -> Work:
    async def work(uow: UnitOfWork) -> None:
        await registry.delete_model_version(uow, c.name, c.version, uow.metadata.actor)

    return work


@_planner(SetModelVersionTag)
def _set_model_version_tag(c: SetModelVersionTag, rules: Rules) -> Work:
    async def work(uow: UnitOfWork) -> None:
        await registry.set_model_version_tag(
            uow, c.name, c.version, c.key, c.value, uow.metadata.actor
        )

    return work


@_planner(DeleteModelVersionTag)
def _delete_model_version_tag(c: DeleteModelVersionTag, rules: Rules) -> Work:
    async def work(uow: UnitOfWork) -> None:
        await registry.delete_model_version_tag(uow, c.name, c.version, c.key, uow.metadata.actor)

    return work


@_planner(TransitionModelVersionStage)
def _transition_stage(c: TransitionModelVersionStage, rules: Rules) -> Work:
    async def work(uow: UnitOfWork) -> None:
        await registry.transition_stage(
            uow,
            c.name,
            c.version,
            c.stage,
            c.archive_existing_versions,
            uow.metadata.actor,
            rules.promotion,
        )

    return work


# --- promotion approval (evtrack) ----------------------------------------------------------


@_planner(RequestTransition)
def _request_transition(c: RequestTransition, rules: Rules) -> Work:
    async def work(uow: UnitOfWork) -> str:
        return await registry.request_transition(
            uow,
            c.name,
            c.version,
            c.stage,
            c.archive_existing_versions,
            c.comment,
            uow.metadata.actor,
        )

    return work


@_planner(DecideTransition)
def _decide_transition(c: DecideTransition, rules: Rules) -> Work:
    async def work(uow: UnitOfWork) -> None:
        await registry.decide_transition(
            uow, c.name, c.request_id, c.decision, c.comment, uow.metadata.actor, rules.promotion
        )

    return work

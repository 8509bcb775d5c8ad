"""The registry commands' decisions, against the registered model's stream.

The rules (names, tag limits, aliases, stages, sources, the promotion policy) are the
registry module's, checked with MLflow's texts as the work decides; the actor recorded on the
events, and on a transition request as its requester, is the unit of work's.
"""

from __future__ import annotations

from evtrack.domain import registry
from evtrack.domain import registry_commands as rc
from evtrack.domain._planning import decided_by, pairs
from evtrack.eventlog import UnitOfWork


async def _create_model_version(uow: UnitOfWork, c: rc.CreateModelVersion) -> int:
    new = registry.NewVersion(
        source=c.source,
        run_id=c.run_id,
        model_id=c.model_id,
        tags=pairs(c.tags),
        run_link=c.run_link,
        description=c.description,
    )
    return await registry.create_model_version(uow, c.name, new, uow.metadata.actor)


def _actor(uow: UnitOfWork) -> str:
    return uow.metadata.actor


decided_by(
    {
        # registered models
        rc.CreateRegisteredModel: lambda uow, c, _: registry.create_registered_model(
            uow, c.name, pairs(c.tags), c.description
        ),
        rc.RenameRegisteredModel: lambda uow, c, _: registry.rename_registered_model(
            uow, c.name, c.new_name, _actor(uow)
        ),
        rc.UpdateRegisteredModel: lambda uow, c, _: registry.update_registered_model(
            uow, c.name, c.description, _actor(uow)
        ),
        rc.DeleteRegisteredModel: lambda uow, c, _: registry.delete_registered_model(
            uow, c.name, _actor(uow)
        ),
        rc.SetRegisteredModelTag: lambda uow, c, _: registry.set_registered_model_tag(
            uow, c.name, c.key, c.value, _actor(uow)
        ),
        rc.DeleteRegisteredModelTag: lambda uow, c, _: registry.delete_registered_model_tag(
            uow, c.name, c.key, _actor(uow)
        ),
        rc.SetModelAlias: lambda uow, c, _: registry.set_alias(
            uow, c.name, c.alias, c.version, _actor(uow)
        ),
        rc.DeleteModelAlias: lambda uow, c, _: registry.delete_alias(
            uow, c.name, c.alias, _actor(uow)
        ),
        # model versions
        rc.CreateModelVersion: lambda uow, c, _: _create_model_version(uow, c),
        rc.UpdateModelVersion: lambda uow, c, _: registry.update_model_version(
            uow, c.name, c.version, c.description, _actor(uow)
        ),
        rc.DeleteModelVersion: lambda uow, c, _: registry.delete_model_version(
            uow, c.name, c.version, _actor(uow)
        ),
        rc.SetModelVersionTag: lambda uow, c, _: registry.set_model_version_tag(
            uow, c.name, c.version, c.key, c.value, _actor(uow)
        ),
        rc.DeleteModelVersionTag: lambda uow, c, _: registry.delete_model_version_tag(
            uow, c.name, c.version, c.key, _actor(uow)
        ),
        rc.TransitionModelVersionStage: lambda uow, c, rules: registry.transition_stage(
            uow,
            c.name,
            c.version,
            c.stage,
            c.archive_existing_versions,
            _actor(uow),
            rules.promotion,
        ),
        # promotion approval (evtrack)
        rc.RequestTransition: lambda uow, c, _: registry.request_transition(
            uow, c.name, c.version, c.stage, c.archive_existing_versions, c.comment, _actor(uow)
        ),
        rc.DecideTransition: lambda uow, c, rules: registry.decide_transition(
            uow, c.name, c.request_id, c.decision, c.comment, _actor(uow), rules.promotion
        ),
    }
)

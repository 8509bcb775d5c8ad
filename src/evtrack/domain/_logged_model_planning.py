"""Planners of the logged-model commands and of the legacy ``runs/log-model``.

The rules (model names, tag and param keys, final statuses, the MLmodel document) are the
logged-models module's, checked with the reference's texts as the work decides.
"""

from __future__ import annotations

from evtrack.domain import logged_models
from evtrack.domain._planning import Rules, Work, _planner
from evtrack.domain.logged_model_commands import (
    CreateLoggedModel,
    DeleteLoggedModel,
    DeleteLoggedModelTag,
    FinalizeLoggedModel,
    LogLoggedModelParams,
    LogRunModel,
    SetLoggedModelTags,
)
from evtrack.eventlog import UnitOfWork
from evtrack.events import KeyValue


def _pairs(items: list[KeyValue]) -> list[tuple[str, str]]:
    return [(t.key, t.value) for t in items]


@_planner(CreateLoggedModel)
def _create(c: CreateLoggedModel, rules: Rules) -> Work:
    params, tags = _pairs(c.params), _pairs(c.tags)

    async def work(uow: UnitOfWork) -> str:
        return await logged_models.create_logged_model(
            uow,
            c.experiment_id,
            name=c.name,
            model_type=c.model_type,
            source_run_id=c.source_run_id,
            params=params,
            tags=tags,
        )

    return work


@_planner(FinalizeLoggedModel)
def _finalize(c: FinalizeLoggedModel, rules: Rules) -> Work:
    async def work(uow: UnitOfWork) -> None:
        await logged_models.finalize_logged_model(uow, c.model_id, c.status)

    return work


@_planner(SetLoggedModelTags)
def _set_tags(c: SetLoggedModelTags, rules: Rules) -> Work:
    tags = _pairs(c.tags)

    async def work(uow: UnitOfWork) -> None:
        await logged_models.set_logged_model_tags(uow, c.model_id, tags)

    return work


@_planner(DeleteLoggedModelTag)
def _delete_tag(c: DeleteLoggedModelTag, rules: Rules) -> Work:
    async def work(uow: UnitOfWork) -> None:
        await logged_models.delete_logged_model_tag(uow, c.model_id, c.key)

    return work


@_planner(LogLoggedModelParams)
def _log_params(c: LogLoggedModelParams, rules: Rules) -> Work:
    params = _pairs(c.params)

    async def work(uow: UnitOfWork) -> None:
        await logged_models.log_logged_model_params(uow, c.model_id, params)

    return work


@_planner(DeleteLoggedModel)
def _delete(c: DeleteLoggedModel, rules: Rules) -> Work:
    async def work(uow: UnitOfWork) -> None:
        await logged_models.delete_logged_model(uow, c.model_id)

    return work


@_planner(LogRunModel)
def _log_run_model(c: LogRunModel, rules: Rules) -> Work:
    async def work(uow: UnitOfWork) -> None:
        await logged_models.record_logged_model(uow, c.run_id, c.model_json)

    return work

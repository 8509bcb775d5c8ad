"""From a command to the work that decides its events.

:func:`plan` checks everything a command can be judged on by itself (names, lengths, ranges,
limits: the rules that need no state) and returns the unit of work that decides against the
current state of the streams it touches. The application runs that work atomically,
perhaps more than once on a version conflict; the checks before it run once.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from evtrack.domain import tracking
from evtrack.domain._ingest import apply_ingest, plan_ingest
from evtrack.domain._metric_rules import check_columns
from evtrack.domain._validation import (
    MAX_DATASET_DIGEST_SIZE,
    MAX_DATASET_NAME_SIZE,
    check_length,
    validate_batch_limits,
    validate_param,
    validate_run_tag,
)
from evtrack.domain.commands import (
    Command,
    CreateExperiment,
    CreateRun,
    DeleteExperiment,
    DeleteExperimentTag,
    DeleteRun,
    DeleteRunTag,
    EnsureDefaultExperiment,
    Ingest,
    IngestSummary,
    LogInputs,
    LogOutputs,
    LogRunData,
    RenameExperiment,
    RestoreExperiment,
    RestoreRun,
    SetExperimentTag,
    UpdateRun,
)
from evtrack.domain.registry import PromotionPolicy
from evtrack.eventlog import UnitOfWork
from evtrack.events import KeyValue, MetricColumns

C = TypeVar("C", bound=Command)
Work = Callable[[UnitOfWork], Awaitable[Any]]
Planner = Callable[[Any, "Rules"], Work]


@dataclass(frozen=True)
class Rules:
    """The deployment's own rules, which the operator sets and no request can change: today
    the promotion policy (stages that need an approved request, four-eyes approval)."""

    promotion: PromotionPolicy = field(default_factory=PromotionPolicy)


OPEN_RULES = Rules()
"""MLflow's open-source behaviour: no stage needs an approved request."""


ARTIFACT_ROOT = "mlflow-artifacts:"
"""Where new experiments keep their artifacts: behind the server's artifact proxy, so clients
need no storage credentials and the operator may move the store."""

_PLANNERS: dict[type[Command], Planner] = {}


def _planner(
    cls: type[C],
) -> Callable[[Callable[[C, Rules], Work]], Callable[[C, Rules], Work]]:
    def register(fn: Callable[[C, Rules], Work]) -> Callable[[C, Rules], Work]:
        _PLANNERS[cls] = fn
        return fn

    return register


Decide = Callable[[UnitOfWork, Any, Rules], Awaitable[Any]]
"""The decision of a command against stream state: ``decide(uow, command, rules)``."""


def decided_by(table: Mapping[type[Command], Decide]) -> None:
    """Register commands that have nothing to check before their transaction: their work is
    their decision, which checks every rule against the state it reads."""
    for cls, decide in table.items():
        _PLANNERS[cls] = _deciding(decide)


def _deciding(decide: Decide) -> Planner:
    def planner(command: Command, rules: Rules) -> Work:
        async def work(uow: UnitOfWork) -> Any:
            return await decide(uow, command, rules)

        return work

    return planner


def pairs(items: Sequence[KeyValue]) -> list[tuple[str, str]]:
    return [(t.key, t.value) for t in items]


def plan(command: Command, rules: Rules = OPEN_RULES) -> Work:
    """The work that carries out ``command``; raises ``EvtrackError`` for bad input."""
    planner = _PLANNERS.get(type(command))
    if planner is None:
        raise TypeError(f"no planner for {type(command).__name__}")
    return planner(command, rules)


# --- experiments ---------------------------------------------------------------------------


decided_by(
    {
        CreateExperiment: lambda uow, c, _: tracking.create_experiment(
            uow, c.name, c.artifact_location, pairs(c.tags), artifact_root=ARTIFACT_ROOT
        ),
        RenameExperiment: lambda uow, c, _: tracking.rename_experiment(
            uow, c.experiment_id, c.new_name
        ),
        DeleteExperiment: lambda uow, c, _: tracking.set_experiment_lifecycle(
            uow, c.experiment_id, delete=True
        ),
        RestoreExperiment: lambda uow, c, _: tracking.set_experiment_lifecycle(
            uow, c.experiment_id, delete=False
        ),
        SetExperimentTag: lambda uow, c, _: tracking.set_experiment_tag(
            uow, c.experiment_id, c.key, c.value
        ),
        DeleteExperimentTag: lambda uow, c, _: tracking.delete_experiment_tag(
            uow, c.experiment_id, c.key
        ),
        EnsureDefaultExperiment: lambda uow, c, _: tracking.ensure_default_experiment(
            uow, artifact_root=ARTIFACT_ROOT
        ),
        CreateRun: lambda uow, c, _: tracking.create_run(
            uow, c.experiment_id, c.user_id, c.run_name, c.start_time, pairs(c.tags)
        ),
        UpdateRun: lambda uow, c, _: tracking.update_run(
            uow, c.run_id, c.status, c.end_time, c.run_name
        ),
        DeleteRun: lambda uow, c, _: tracking.set_run_lifecycle(uow, c.run_id, delete=True),
        RestoreRun: lambda uow, c, _: tracking.set_run_lifecycle(uow, c.run_id, delete=False),
        DeleteRunTag: lambda uow, c, _: tracking.delete_run_tag(uow, c.run_id, c.key),
        LogOutputs: lambda uow, c, _: tracking.log_outputs(uow, c.run_id, c.models),
    }
)


# --- runs ----------------------------------------------------------------------------------


def _metric_columns(c: LogRunData) -> MetricColumns | None:
    m = c.metrics
    if m is None or not m.keys:
        return None
    return check_columns(
        m.keys,
        m.values,
        m.timestamps,
        m.steps,
        point_path=(lambda i: "") if c.single else (lambda i: f"metrics[{i}]"),
        model_ids=m.model_ids,
        dataset_names=m.dataset_names,
        dataset_digests=m.dataset_digests,
    )


@_planner(LogRunData)
def _log_run_data(c: LogRunData, rules: Rules) -> Work:
    if not c.single:
        validate_batch_limits(len(c.metrics.keys) if c.metrics else 0, len(c.params), len(c.tags))

    def path(kind: str, i: int) -> str:
        return "" if c.single else f"{kind}[{i}]"

    data = tracking.RunData(
        _metric_columns(c),
        [
            KeyValue(*validate_param(p.key, p.value, path("params", i)))
            for i, p in enumerate(c.params)
        ],
        [
            KeyValue(*validate_run_tag(t.key, t.value, path("tags", i)))
            for i, t in enumerate(c.tags)
        ],
    )

    async def work(uow: UnitOfWork) -> None:
        await tracking.log_run_data(uow, c.run_id, data)

    return work


@_planner(LogInputs)
def _log_inputs(c: LogInputs, rules: Rules) -> Work:
    for dataset in c.datasets:
        check_length("dataset name", MAX_DATASET_NAME_SIZE, dataset.name)
        check_length("dataset digest", MAX_DATASET_DIGEST_SIZE, dataset.digest)

    async def work(uow: UnitOfWork) -> None:
        await tracking.log_inputs(uow, c.run_id, c.datasets, c.model_ids)

    return work


# --- ingestion -----------------------------------------------------------------------------


@_planner(Ingest)
def _ingest(c: Ingest, rules: Rules) -> Work:
    checked = plan_ingest(c.records)

    async def work(uow: UnitOfWork) -> IngestSummary:
        await apply_ingest(uow, checked, artifact_root=ARTIFACT_ROOT, authorized=c.authorized)
        return checked.summary

    return work

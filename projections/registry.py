"""All projections evtrack runs, in one place for the runtime and the CLI."""

from __future__ import annotations

from evtrack.projector import Projection


def all_projections() -> list[Projection]:
    from evtrack.projections.auth.handlers import projection as auth
    from evtrack.projections.experiments.handlers import projection as experiments
    from evtrack.projections.logged_models.handlers import projection as logged_models
    from evtrack.projections.metrics.handlers import projection as metrics
    from evtrack.projections.model_registry.handlers import projection as model_registry
    from evtrack.projections.runs.handlers import projection as runs

    return [experiments, runs, metrics, model_registry, logged_models, auth]


def projection_named(name: str) -> Projection:
    for projection in all_projections():
        if projection.name == name:
            return projection
    raise KeyError(name)

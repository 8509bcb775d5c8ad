"""The domain: which events a command produces, decided against write-model state."""

from evtrack.domain import commands, tracking
from evtrack.domain._aggregates import (
    ExperimentState,
    RunState,
    decode_experiment,
    decode_run,
    experiment_stream,
    fold_experiment,
    fold_run,
    run_stream,
)
from evtrack.domain._planning import ARTIFACT_ROOT, plan
from evtrack.domain.commands import Command

__all__ = [
    "ARTIFACT_ROOT",
    "Command",
    "ExperimentState",
    "RunState",
    "commands",
    "decode_experiment",
    "decode_run",
    "experiment_stream",
    "fold_experiment",
    "fold_run",
    "plan",
    "run_stream",
    "tracking",
]

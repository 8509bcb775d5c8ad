"""The domain: which events a command produces, decided against write-model state."""

from evtrack.domain import tracking
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

__all__ = [
    "ExperimentState",
    "RunState",
    "decode_experiment",
    "decode_run",
    "experiment_stream",
    "fold_experiment",
    "fold_run",
    "run_stream",
    "tracking",
]

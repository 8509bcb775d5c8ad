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
from evtrack.domain._validation import (
    DOUBLE_MAX,
    MAX_BATCH_LOG_REQUEST_SIZE,
    invalid_value,
    parse_experiment_id,
    validate_run_id,
)
from evtrack.domain.commands import Command

__all__ = [
    "ARTIFACT_ROOT",
    "DOUBLE_MAX",
    "MAX_BATCH_LOG_REQUEST_SIZE",
    "Command",
    "ExperimentState",
    "RunState",
    "commands",
    "decode_experiment",
    "decode_run",
    "experiment_stream",
    "fold_experiment",
    "fold_run",
    "invalid_value",
    "parse_experiment_id",
    "plan",
    "run_stream",
    "tracking",
    "validate_run_id",
]

"""The domain: which events a command produces, decided against write-model state."""

from evtrack.domain import (
    _logged_model_planning,  # noqa: F401  (registers the logged-model planners)
    _registry_planning,  # noqa: F401  (registers the registry planners)
    auth,  # noqa: F401  (registers the user and permission planners)
    auth_commands,
    commands,
    import_commands,
    imports,  # noqa: F401  (registers the import planners)
    logged_model_commands,
    registry_commands,
    tracking,
)
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
from evtrack.domain._logged_model_state import logged_model_stream, model_not_found
from evtrack.domain._planning import ARTIFACT_ROOT, OPEN_RULES, Rules, plan
from evtrack.domain._registry_state import (
    STAGES,
    RegisteredModelState,
    fold_registered_model,
    registered_model_stream,
)
from evtrack.domain._validation import (
    MAX_BATCH_LOG_REQUEST_SIZE,
    invalid_value,
    missing_value,
    parse_experiment_id,
    validate_run_id,
)
from evtrack.domain.commands import Command
from evtrack.events import DOUBLE_MAX

__all__ = [
    "ARTIFACT_ROOT",
    "DOUBLE_MAX",
    "MAX_BATCH_LOG_REQUEST_SIZE",
    "OPEN_RULES",
    "STAGES",
    "Command",
    "ExperimentState",
    "RegisteredModelState",
    "Rules",
    "RunState",
    "auth_commands",
    "commands",
    "decode_experiment",
    "decode_run",
    "experiment_stream",
    "fold_experiment",
    "fold_registered_model",
    "fold_run",
    "import_commands",
    "invalid_value",
    "logged_model_commands",
    "logged_model_stream",
    "missing_value",
    "model_not_found",
    "parse_experiment_id",
    "plan",
    "registered_model_stream",
    "registry_commands",
    "run_stream",
    "tracking",
    "validate_run_id",
]

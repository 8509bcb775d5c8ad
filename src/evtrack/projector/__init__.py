"""The projector runtime: applies the log to read models, exactly once, in log order."""

from evtrack.projector import _binary_copy as binary_copy
from evtrack.projector._doorbell import Doorbell
from evtrack.projector._projection import Projection, load_schema
from evtrack.projector._runtime import (
    DOORBELL_CHANNEL,
    ProjectorRuntime,
    apply_next_batch,
    ensure_current,
    install,
    read_checkpoints,
    rebuild,
)

__all__ = [
    "DOORBELL_CHANNEL",
    "Doorbell",
    "Projection",
    "ProjectorRuntime",
    "apply_next_batch",
    "binary_copy",
    "ensure_current",
    "install",
    "load_schema",
    "read_checkpoints",
    "rebuild",
]

"""The projector runtime: applies the log to read models, exactly once, in log order.

It owns its bookkeeping tables (``projection_checkpoints``, ``parked_events``); nothing
outside this package names them.
"""

from evtrack.eventlog import Conn, RecordedEvent
from evtrack.projector import _binary_copy as binary_copy
from evtrack.projector._doorbell import Doorbell
from evtrack.projector._parking import (
    Parked,
    RetryOutcome,
    list_parked,
    parked_counts,
    recent_parked,
    retry_parked,
)
from evtrack.projector._projection import Projection, UndecodableEvent, load_schema
from evtrack.projector._runtime import (
    DOORBELL_CHANNEL,
    ProjectorRuntime,
    RebuildRunning,
    apply_next_batch,
    ensure_current,
    install,
    lease_key,
    rebuild,
    rebuild_key,
    remove_rebuild_leftovers,
)
from evtrack.projector._tables import checkpoint_rows, ensure_tables, read_checkpoints

__all__ = [
    "DOORBELL_CHANNEL",
    "Conn",
    "Doorbell",
    "Parked",
    "Projection",
    "ProjectorRuntime",
    "RebuildRunning",
    "RecordedEvent",
    "RetryOutcome",
    "UndecodableEvent",
    "apply_next_batch",
    "binary_copy",
    "checkpoint_rows",
    "ensure_current",
    "ensure_tables",
    "install",
    "lease_key",
    "list_parked",
    "load_schema",
    "parked_counts",
    "read_checkpoints",
    "rebuild",
    "rebuild_key",
    "recent_parked",
    "remove_rebuild_leftovers",
    "retry_parked",
]

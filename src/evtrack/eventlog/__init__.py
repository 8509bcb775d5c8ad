"""The event log: storage and ordering of events, knowing nothing of what they mean.

The domain writes through a :class:`UnitOfWork` that a :class:`Recorder` runs in one
transaction; readers read in (transaction id, global position) order below the read horizon.
:class:`PostgresRecorder` (alias ``EventStore``) is the one users run; :class:`InMemoryRecorder`
keeps the same contract for tests without a database. Every read of the ``events`` table goes
through the functions here.
"""

from evtrack.eventlog._archive import (
    ArchivedEvent,
    LogReader,
    WriteModel,
    append_archived,
    last_restored,
    restore_write_model,
)
from evtrack.eventlog._availability import database_unavailable
from evtrack.eventlog._db import Conn
from evtrack.eventlog._memory import DeadlockDetected, InMemoryRecorder
from evtrack.eventlog._migrations import available_migrations, upgrade
from evtrack.eventlog._positions import LOG_START, LogPosition
from evtrack.eventlog._postgres import EventStore, PostgresRecorder, PostgresUnitOfWork
from evtrack.eventlog._pruning import (
    DEFAULT_EXPLICIT_RETENTION_S,
    Pruned,
    prune_idempotency_keys,
)
from evtrack.eventlog._reads import (
    Executor,
    LogPage,
    count_events_after,
    last_global_position,
    position_before_head,
    read_after,
    read_after_cursor,
    read_positions,
    read_stream_history,
)
from evtrack.eventlog._recorder import (
    ANY_VERSION,
    KEEP,
    Committed,
    IdempotencyKey,
    Recorder,
    StreamHead,
    UnitOfWork,
    Work,
    WrongExpectedVersion,
)
from evtrack.eventlog._records import RecordedEvent

__all__ = [
    "ANY_VERSION",
    "DEFAULT_EXPLICIT_RETENTION_S",
    "KEEP",
    "LOG_START",
    "ArchivedEvent",
    "Committed",
    "Conn",
    "DeadlockDetected",
    "EventStore",
    "Executor",
    "IdempotencyKey",
    "InMemoryRecorder",
    "LogPage",
    "LogPosition",
    "LogReader",
    "PostgresRecorder",
    "PostgresUnitOfWork",
    "Pruned",
    "RecordedEvent",
    "Recorder",
    "StreamHead",
    "UnitOfWork",
    "Work",
    "WriteModel",
    "WrongExpectedVersion",
    "append_archived",
    "available_migrations",
    "count_events_after",
    "database_unavailable",
    "last_global_position",
    "last_restored",
    "position_before_head",
    "prune_idempotency_keys",
    "read_after",
    "read_after_cursor",
    "read_positions",
    "read_stream_history",
    "restore_write_model",
    "upgrade",
]

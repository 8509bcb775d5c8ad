"""The event log: storage and ordering of events, knowing nothing of what they mean."""

from evtrack.eventlog._db import Conn
from evtrack.eventlog._migrations import available_migrations, upgrade
from evtrack.eventlog._positions import LOG_START, LogPosition
from evtrack.eventlog._records import RecordedEvent
from evtrack.eventlog._store import (
    ANY_VERSION,
    EventStore,
    IdempotencyKey,
    LogPage,
    StreamHead,
    UnitOfWork,
    WrongExpectedVersion,
    read_after,
    read_after_cursor,
    read_positions,
)

__all__ = [
    "ANY_VERSION",
    "LOG_START",
    "Conn",
    "EventStore",
    "IdempotencyKey",
    "LogPage",
    "LogPosition",
    "RecordedEvent",
    "StreamHead",
    "UnitOfWork",
    "WrongExpectedVersion",
    "available_migrations",
    "read_after",
    "read_after_cursor",
    "read_positions",
    "upgrade",
]

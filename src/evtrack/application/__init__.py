"""The application layer: commands in, events out, and reads that see their writes.

The HTTP layer talks to evtrack through this package only: :class:`CommandExecutor` runs a
domain command for a :class:`Context`, :class:`Freshness` holds a read back until the read
models it needs have caught up with the log (or refuses it), :class:`Readiness` says whether
the node is fit to serve.
"""

from evtrack.application._context import Context
from evtrack.application._executor import CommandExecutor
from evtrack.application._feed import EventFeed, FeedFilter
from evtrack.application._freshness import Freshness
from evtrack.application._outage import RETRY_AFTER_S, OutageLog
from evtrack.application._readiness import Readiness, ReadinessReport, ReadModelLag
from evtrack.application._status import ErrorLog, RecentError, StatusBoard
from evtrack.eventlog import LOG_START, LogPosition, RecordedEvent

__all__ = [
    "LOG_START",
    "RETRY_AFTER_S",
    "CommandExecutor",
    "Context",
    "ErrorLog",
    "EventFeed",
    "FeedFilter",
    "Freshness",
    "LogPosition",
    "OutageLog",
    "ReadModelLag",
    "Readiness",
    "ReadinessReport",
    "RecentError",
    "RecordedEvent",
    "StatusBoard",
]

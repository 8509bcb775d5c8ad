"""One log line when the database goes away, one when it is back: never one per request."""

from __future__ import annotations

import time

import structlog

from evtrack.application._status import ErrorLog
from evtrack.eventlog import database_unavailable

log = structlog.get_logger("evtrack.database")

RETRY_AFTER_S = 1
"""What a 503 during an outage tells clients to wait: a restart takes seconds, and MLflow's
client backs off on its own between retries."""


class OutageLog:
    """Tells database outages from other failures and logs each outage once."""

    def __init__(self, errors: ErrorLog | None = None) -> None:
        self._down_since: float | None = None
        self._refused = 0
        self._errors = errors  # where the status page reads the last errors

    @staticmethod
    def is_outage(exc: BaseException) -> bool:
        return database_unavailable(exc)

    def failed(self, exc: BaseException) -> None:
        """A request failed because the database is unavailable."""
        self._refused += 1
        if self._down_since is None:
            self._down_since = time.monotonic()
            log.warning("database.unavailable", error=f"{type(exc).__name__}: {exc}")
            if self._errors is not None:
                self._errors.record("database", f"unavailable: {type(exc).__name__}: {exc}")

    def succeeded(self, started: float) -> None:
        """A request that began at ``started`` (``time.monotonic()``) was served: if it began
        after the outage did, the database is back. One that began before may have done its
        database work just before the outage and finish just after another request failed;
        taking it for a recovery would log the same outage twice."""
        if self._down_since is not None and started >= self._down_since:
            log.info(
                "database.recovered",
                outage_s=round(time.monotonic() - self._down_since, 2),
                requests_refused=self._refused,
            )
            if self._errors is not None:
                self._errors.record(
                    "database",
                    f"recovered after {time.monotonic() - self._down_since:.1f} s "
                    f"({self._refused} requests refused)",
                )
            self._down_since, self._refused = None, 0

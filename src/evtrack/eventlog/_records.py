"""Events as read back from the log, with where and when they were recorded."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from evtrack.eventlog._positions import LogPosition
from evtrack.events import Event, decode_event


@dataclass(frozen=True, slots=True)
class RecordedEvent:
    position: LogPosition
    stream_id: str
    stream_position: int
    event_type: str
    event: Event | None  # None when the reader asked for payloads of other types only
    actor: str
    metadata: dict[str, Any]
    recorded_at: datetime
    decode_error: str | None = None  # set (with event None) when a lenient read could not decode

    @property
    def recorded_at_ms(self) -> int:
        return int(self.recorded_at.timestamp() * 1000)


def record_from_row(row: Any, *, lenient: bool = False) -> RecordedEvent:
    """The record of an ``events`` row. A payload that does not decode raises, unless
    ``lenient``: then the record carries ``decode_error`` instead of its event, so that a
    reader going through the log in order (a projector) can set that one event aside."""
    payload = row["payload"]
    event: Event | None = None
    decode_error: str | None = None
    if payload is not None:
        try:
            event = decode_event(row["event_type"], row["schema_version"], payload)
        except Exception as exc:
            if not lenient:
                raise
            decode_error = f"{type(exc).__name__}: {exc}"
    return RecordedEvent(
        position=LogPosition(row["transaction_id"], row["global_position"]),
        stream_id=row["stream_id"],
        stream_position=row["stream_position"],
        event_type=row["event_type"],
        event=event,
        actor=row["actor"],
        metadata=row["metadata"],
        recorded_at=row["recorded_at"],
        decode_error=decode_error,
    )

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

    @property
    def recorded_at_ms(self) -> int:
        return int(self.recorded_at.timestamp() * 1000)


def record_from_row(row: Any) -> RecordedEvent:
    payload = row["payload"]
    event = (
        decode_event(row["event_type"], row["schema_version"], payload)
        if payload is not None
        else None
    )
    return RecordedEvent(
        position=LogPosition(row["transaction_id"], row["global_position"]),
        stream_id=row["stream_id"],
        stream_position=row["stream_position"],
        event_type=row["event_type"],
        event=event,
        actor=row["actor"],
        metadata=row["metadata"],
        recorded_at=row["recorded_at"],
    )

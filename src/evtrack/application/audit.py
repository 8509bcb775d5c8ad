"""Audit and time travel, read straight from the event log.

History is the stream's events with who, when and what changed; "as of" answers fold a
registered model's events up to an instant, with the same fold the domain decides on.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgspec

from evtrack.domain import (
    STAGES,
    RegisteredModelState,
    fold_registered_model,
    registered_model_stream,
)
from evtrack.errors import invalid, not_found
from evtrack.eventlog import Executor, RecordedEvent, read_stream_history
from evtrack.events import SECRET_FIELDS, RunDataLogged
from evtrack.events.arrays import metric_arrays


def parse_instant(value: str) -> datetime:
    """An instant as epoch milliseconds or ISO 8601 (naive means UTC)."""
    text = value.strip()
    if text.lstrip("-").isdigit():
        return datetime.fromtimestamp(int(text) / 1000, tz=UTC)
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise invalid(f"Invalid instant {value!r}: use epoch milliseconds or ISO 8601.") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def describe(record: RecordedEvent) -> dict[str, Any]:
    """One history entry: the event's facts, with metric columns summarised."""
    change: dict[str, Any] = (
        msgspec.to_builtins(msgspec.structs.asdict(record.event))
        if record.event is not None
        else {}
    )
    for secret in SECRET_FIELDS.intersection(change):
        change[secret] = "REDACTED"  # credentials never leave the log
    if isinstance(record.event, RunDataLogged):
        arrays = metric_arrays(record.event)
        change.pop("packed_metrics", None)
        if arrays is not None:
            change["metrics"] = {"points": len(arrays), "keys": sorted(arrays.names)}
    meta = record.metadata or {}
    entry: dict[str, Any] = {
        "position": f"{record.position.transaction_id}-{record.position.global_position}",
        "stream_id": record.stream_id,
        "stream_position": record.stream_position,
        "type": record.event_type,
        "recorded_at": record.recorded_at.astimezone(UTC).isoformat(),
        "timestamp": record.recorded_at_ms,
        "actor": record.actor,
        "change": change,
    }
    if meta.get("request_id"):
        entry["request_id"] = meta["request_id"]
    if meta.get("client"):
        entry["client"] = meta["client"]
    if meta.get("claimed_actor"):
        # With authentication off: who the request said it was, never verified.
        entry["claimed_actor"] = meta["claimed_actor"]
    return entry


async def model_streams(db: Executor, name: str) -> list[str]:
    """Every registered-model stream that has ever carried ``name``, oldest first."""
    rows = await db.fetch(
        "SELECT model_key FROM rm_registry.model_names WHERE name = $1 ORDER BY since", name
    )
    if not rows:
        raise not_found(f"No registered model has ever been named {name!r}")
    return [registered_model_stream(r["model_key"]) for r in rows]


async def model_history(
    db: Executor, name: str, version: int | None = None
) -> list[dict[str, Any]]:
    records = await read_stream_history(db, await model_streams(db, name))
    if version is not None:
        records = [r for r in records if getattr(r.event, "version", None) == version]
    return [describe(r) for r in records]


async def stream_history(db: Executor, stream_id: str) -> list[dict[str, Any]]:
    records = await read_stream_history(db, [stream_id])
    if not records:
        raise not_found(f"No events recorded for {stream_id}")
    return [describe(r) for r in records]


async def model_as_of(db: Executor, name: str, at: datetime) -> dict[str, Any]:
    """Stages, versions and aliases of the model that carried ``name`` at instant ``at``."""
    state: RegisteredModelState | None = None
    for stream in await model_streams(db, name):
        folded = fold_registered_model(
            (r.event, r.actor) for r in await read_stream_history(db, [stream], until=at) if r.event
        )
        if folded is not None and folded.name == name and not folded.deleted:
            state = folded
    if state is None:
        raise not_found(f"No registered model was named {name!r} at {at.isoformat()}")
    live = [v for v in sorted(state.versions) if not state.versions[v].deleted]
    return {
        "name": name,
        "as_of": at.astimezone(UTC).isoformat(),
        "versions": [{"version": str(v), "current_stage": state.versions[v].stage} for v in live],
        "stages": {s: [str(v) for v in state.in_stage(s)] for s in STAGES if state.in_stage(s)},
        "aliases": {a: str(v) for a, v in sorted(state.aliases.items())},
    }

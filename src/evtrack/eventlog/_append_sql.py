"""The SQL of an append: moving stream heads and the events' columns, shared by the
transactional unit of work and the optimistic one."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec

from evtrack.eventlog._recorder import KEEP, PendingAppend
from evtrack.events import Metadata, encode_event


def move_head_sql(
    pending: PendingAppend, *, first_arg: int = 1, gate: str = "true"
) -> tuple[str, list[Any]]:
    """SQL moving the stream head past the pending events, returning its new ``version``
    (no row when the stream is not at the expected version), and its arguments, numbered
    from ``first_arg`` (the stream id is always the first of them). The head moves only
    where the SQL condition ``gate`` holds (an idempotency claim that succeeded)."""
    p = [f"${i}" for i in range(first_arg, first_arg + 5)]
    count = len(pending.events)
    keep = pending.state is KEEP
    state = None if keep else pending.state
    if pending.expected is None:
        return (
            f"""INSERT INTO streams AS s (stream_id, version, state)
                SELECT {p[0]}::text, {p[1]}::bigint, {p[2]}::bytea WHERE {gate}
                ON CONFLICT (stream_id) DO UPDATE
                SET version = s.version + {p[1]}::bigint,
                    state = CASE WHEN {p[3]}::bool THEN s.state ELSE excluded.state END
                RETURNING version""",
            [pending.stream_id, count, state, keep],
        )
    if pending.expected == 0:
        return (
            f"""INSERT INTO streams (stream_id, version, state)
                SELECT {p[0]}::text, {p[1]}::bigint, {p[2]}::bytea WHERE {gate}
                ON CONFLICT (stream_id) DO NOTHING RETURNING version""",
            [pending.stream_id, count, state],
        )
    return (
        f"""UPDATE streams
            SET version = version + {p[2]}::bigint,
                state = CASE WHEN {p[4]}::bool THEN state ELSE {p[3]}::bytea END
            WHERE stream_id = {p[0]}::text AND version = {p[1]}::bigint AND {gate}
            RETURNING version""",
        [pending.stream_id, pending.expected, count, state, keep],
    )


@dataclass
class EventColumns:
    streams: list[str] = field(default_factory=list)
    positions: list[int] = field(default_factory=list)
    types: list[str] = field(default_factory=list)
    versions: list[int] = field(default_factory=list)
    payloads: list[bytes] = field(default_factory=list)


def event_columns(pending_appends: Sequence[PendingAppend]) -> EventColumns:
    """The events of ``pending_appends`` as columns, in the order they are inserted (and so
    read): each stream's first event, then each stream's second, and so on.

    Within a stream, events keep their order; across streams any order is the log's order,
    and this one puts events of a kind side by side (a thousand runs' ``RunCreated``, then
    their data, then their ends), so projectors apply each kind to all runs in one statement.
    """
    columns = EventColumns()
    if len({p.stream_id for p in pending_appends}) < len(pending_appends):
        # A stream appended to twice: its appends keep their order, one after the other.
        order = [(p, i) for p in pending_appends for i in range(len(p.events))]
    else:
        rounds = max((len(p.events) for p in pending_appends), default=0)
        order = [(p, i) for i in range(rounds) for p in pending_appends if i < len(p.events)]
    for pending, offset in order:
        event = pending.events[offset]
        columns.streams.append(pending.stream_id)
        columns.positions.append(pending.first_position + offset)
        columns.types.append(event.type_name())
        columns.versions.append(event.schema_version)
        columns.payloads.append(encode_event(event))
    return columns


def one_stream_append(
    pending: PendingAppend, metadata: Metadata, args: list[Any], *, gate: str = "true"
) -> tuple[str, EventColumns]:
    """The CTEs ``head`` (the stream's head moved past ``pending``'s events, where ``gate``
    holds) and ``appended`` (its events inserted at the positions after it), as one
    statement's text; their arguments are added to ``args``."""
    head, head_args = move_head_sql(pending, first_arg=len(args) + 1, gate=gate)
    stream = f"${len(args) + 1}"
    args += head_args
    columns = event_columns([pending])
    n = len(args)
    args += [
        len(pending.events),
        columns.types,
        columns.versions,
        columns.payloads,
        metadata.actor,
        msgspec.json.encode(metadata).decode(),
    ]
    sql = f"""head AS ({head}),
        appended AS (
            INSERT INTO events
                (stream_id, stream_position, event_type, schema_version, payload, actor, metadata)
            SELECT {stream}, head.version - ${n + 1} + x.ord, x.t, x.v, x.b,
                   ${n + 5}, ${n + 6}::jsonb
            FROM head, unnest(${n + 2}::text[], ${n + 3}::int2[], ${n + 4}::bytea[])
                 WITH ORDINALITY AS x(t, v, b, ord)
            RETURNING global_position)"""
    return sql, columns

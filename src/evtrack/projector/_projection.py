"""What a projection is: a schema, and handlers that apply events to it.

A projection module (``evtrack.projections.<name>.handlers``) builds one :class:`Projection`
with the decorator API below. Handlers receive the connection of the transaction in which the
projector also moves its checkpoint, with ``search_path`` set to the projection's schema, so
they use unqualified table names and the same code fills the live schema and a rebuild.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, TypeVar

from evtrack.eventlog import Conn, RecordedEvent
from evtrack.events import Event

E = TypeVar("E", bound=Event)
Handler = Callable[[Conn, Any, RecordedEvent], Awaitable[None]]
BatchHandler = Callable[[Conn, Sequence[RecordedEvent]], Awaitable[None]]


class UndecodableEvent(Exception):
    """A stored payload that the event types of this version cannot read: the projection
    fails on it like on any event it cannot apply, so it is parked (see ``_parking``)."""


@dataclass
class Projection:
    name: str
    schema_sql: str
    handlers: dict[str, Handler] = field(default_factory=dict)
    batch_handlers: dict[str, BatchHandler] = field(default_factory=dict)

    @property
    def schema_name(self) -> str:
        return f"rm_{self.name}"

    @property
    def schema_hash(self) -> str:
        return hashlib.sha256(self.schema_sql.encode()).hexdigest()[:16]

    @property
    def event_types(self) -> frozenset[str]:
        return frozenset(self.handlers) | frozenset(self.batch_handlers)

    def on(
        self, event_type: type[E]
    ) -> Callable[[Callable[[Conn, E, RecordedEvent], Awaitable[None]]], Handler]:
        """Register a handler called once per event of ``event_type``, in log order."""

        def register(
            fn: Callable[[Conn, E, RecordedEvent], Awaitable[None]],
        ) -> Handler:
            self.handlers[event_type.type_name()] = fn
            return fn

        return register

    def on_batch(self, event_type: type[Event]) -> Callable[[BatchHandler], BatchHandler]:
        """Register a handler for consecutive runs of ``event_type`` (fewer round trips).

        The runtime calls it with each maximal run of consecutive events of that type within
        a batch, so ordering relative to other event types is preserved.
        """

        def register(fn: BatchHandler) -> BatchHandler:
            self.batch_handlers[event_type.type_name()] = fn
            return fn

        return register

    async def apply(self, conn: Conn, records: Sequence[RecordedEvent]) -> None:
        group: list[RecordedEvent] = []
        group_type: str | None = None
        for record in records:
            if record.event is None:
                if record.decode_error is not None:
                    raise UndecodableEvent(record.decode_error)
                continue
            if record.event_type in self.batch_handlers:
                if group_type not in (None, record.event_type):
                    await self._flush(conn, group_type, group)
                    group = []
                group_type = record.event_type
                group.append(record)
                continue
            if group:
                await self._flush(conn, group_type, group)
                group, group_type = [], None
            handler = self.handlers.get(record.event_type)
            if handler is not None:
                await handler(conn, record.event, record)
        if group:
            await self._flush(conn, group_type, group)

    async def _flush(self, conn: Conn, event_type: str | None, group: list[RecordedEvent]) -> None:
        assert event_type is not None
        await self.batch_handlers[event_type](conn, group)


def load_schema(projection_package: str) -> str:
    return resources.files(projection_package).joinpath("schema.sql").read_text()

"""The recorder seam: what the domain writes through and what readers read the log with.

The domain decides inside a :class:`UnitOfWork` and knows nothing of where the log lives. A
:class:`Recorder` runs one unit as one all-or-nothing transaction (invariant 4), answers a
reused idempotency key with the first answer (invariant 5), refuses a stale expected version
(invariant 6), and reads the log in (transaction id, global position) order below the read
horizon (invariant 2). PostgreSQL is the recorder users run; an in-memory one with the same
contract lets the domain be tested without a database.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Generic, Literal, Protocol, TypeVar

from evtrack.eventlog._positions import LogPosition
from evtrack.eventlog._records import RecordedEvent
from evtrack.events import Event, Metadata

R = TypeVar("R")

ANY_VERSION = None
"""Expected version meaning "append at the end, whatever the version" (e.g. metric points)."""


class _Keep(enum.Enum):
    KEEP = "keep"


KEEP: Final = _Keep.KEEP
"""``state`` of an append that leaves the stream's snapshot as it is."""

KeepState = Literal[_Keep.KEEP]


class WrongExpectedVersion(Exception):
    """A stream moved on since the command read it."""

    def __init__(self, stream_id: str, expected: int | None) -> None:
        super().__init__(f"stream {stream_id} is not at version {expected}")
        self.stream_id = stream_id
        self.expected = expected


@dataclass(frozen=True, slots=True)
class StreamHead:
    stream_id: str
    version: int  # 0 for a stream that does not exist yet
    state: bytes | None


@dataclass
class PendingAppend:
    stream_id: str
    events: list[Event]
    expected: int | None
    state: bytes | KeepState | None
    first_position: int = 0  # known once the stream head has moved


class AppendBuffer:
    """The ``append`` every unit of work shares: events wait in the unit until it commits."""

    _pending: list[PendingAppend]

    def append(
        self,
        stream_id: str,
        events: Sequence[Event],
        *,
        expected_version: int | None,
        state: bytes | KeepState | None = KEEP,
    ) -> None:
        """Buffer events for ``stream_id``; ``state`` is the aggregate snapshot after them."""
        if events:
            self._pending.append(PendingAppend(stream_id, list(events), expected_version, state))


def heads_from_rows(rows: Iterable[Any], stream_ids: Sequence[str]) -> dict[str, StreamHead]:
    """Stream heads from ``streams`` rows (``stream_id``, ``version``, ``state``); version 0
    for a stream with no row (it does not exist yet). Rows without a stream id are skipped."""
    found = {
        r["stream_id"]: StreamHead(r["stream_id"], r["version"], r["state"])
        for r in rows
        if r["stream_id"] is not None
    }
    return {sid: found.get(sid, StreamHead(sid, 0, None)) for sid in stream_ids}


@dataclass(frozen=True)
class IdempotencyKey:
    """A write's idempotency key.

    ``derived`` keys are computed from the request itself (for clients that send none); they
    only protect against retries, so they expire after the recorder's derived-key TTL and an
    identical request made later is a new request.
    """

    value: str
    derived: bool

    @classmethod
    def from_parts(cls, *parts: str | bytes, derived: bool) -> IdempotencyKey:
        digest = hashlib.sha256()
        for part in parts:
            digest.update(part.encode() if isinstance(part, str) else part)
            digest.update(b"\0")
        return cls(digest.hexdigest(), derived)


class UnitOfWork(Protocol):
    """The transaction a command runs in. Reads see committed state and this unit's flushed
    appends; appends are buffered until :meth:`flush` or the commit."""

    @property
    def metadata(self) -> Metadata:
        """Who and which request the events of this unit are recorded for."""
        ...

    async def heads(
        self, stream_ids: Sequence[str], *, lock: bool = False
    ) -> dict[str, StreamHead]:
        """Current heads of ``stream_ids`` (version 0 for streams that do not exist yet).

        ``lock`` holds the heads until commit, for streams that many writers decide on at
        once (a run that several training ranks log to): they queue instead of conflicting
        and retrying. The append still checks the version it read.
        """
        ...

    def append(
        self,
        stream_id: str,
        events: Sequence[Event],
        *,
        expected_version: int | None,
        state: bytes | KeepState | None = KEEP,
    ) -> None:
        """Buffer events for ``stream_id``; ``state`` is the aggregate snapshot after them."""
        ...

    async def reserve_name(self, scope: str, name: str, owner: str) -> bool:
        """Claim a unique name; False if someone else holds it."""
        ...

    async def name_owner(self, scope: str, name: str) -> str | None:
        """Who holds ``name`` in ``scope``, if anyone."""
        ...

    async def release_name(self, scope: str, name: str) -> None:
        """Give ``name`` up (it may be reserved again, by this unit or after its commit)."""
        ...

    async def next_sequence_value(self, sequence: str) -> int:
        """The next value of a named counter; never reused, even if the unit fails."""
        ...

    async def advance_sequence(self, sequence: str, at_least: int) -> None:
        """Move a named counter so that it never again hands out ``at_least`` or less (ids
        copied from another server must not be handed out afresh)."""
        ...

    async def flush(self) -> None:
        """Write what is buffered now, so later reads in this unit see it (heads included).
        A stale expected version is reported here, or at the commit."""
        ...


Work = Callable[[UnitOfWork], Awaitable[R]]
"""A command: decides in a unit of work and returns its answer. It may run more than once
(the caller retries conflicts), so it must have no effect outside the unit."""


@dataclass(frozen=True, slots=True)
class Committed(Generic[R]):
    """The outcome of one transaction."""

    result: R
    appended_types: frozenset[str]  # event types appended; empty for a replay
    last_position: int  # global position of the last event appended; 0 if none
    replayed: bool  # the idempotency key was used before: ``result`` is the stored answer


class Recorder(Protocol):
    """Storage of the event log: append with expected versions and idempotency, and ordered
    reads."""

    async def transact(
        self,
        work: Work[R],
        *,
        metadata: Metadata,
        result_type: type[R],
        idempotency_key: IdempotencyKey | None,
        contended: bool = False,
    ) -> Committed[R]:
        """Run ``work`` once, atomically, and commit what it appended.

        With ``idempotency_key`` already used (and not an expired derived key), what ``work``
        decides is dropped: the stored answer is decoded as ``result_type`` and returned with
        ``replayed=True``. Otherwise the answer is stored with the events. If ``work`` raises,
        nothing is appended and no key is stored. A stale expected version raises
        :class:`WrongExpectedVersion`; retrying is the caller's decision. ``contended`` (a
        retry after a conflict) asks for the heads ``work`` reads to be held until commit,
        so that writers to one hot stream queue rather than conflict again.
        """
        ...

    async def read_after(
        self, after: LogPosition, limit: int, payload_types: Sequence[str] | None = None
    ) -> list[RecordedEvent]:
        """Up to ``limit`` events after ``after`` in (transaction id, global position) order,
        only from below the read horizon: no event of a transaction still running, and none
        after one, so a late committer is read in its place, never skipped. Payloads are
        decoded for ``payload_types`` only (all when None); other events have ``event=None``."""
        ...

    async def read_stream(self, stream_id: str) -> list[RecordedEvent]:
        """Every committed event of one stream, in stream order."""
        ...

    async def last_visible_position(self) -> LogPosition:
        """The position of the newest committed event (the read-your-writes target)."""
        ...

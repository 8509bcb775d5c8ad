"""Reads of the metric history read model (columnar chunks plus per-series overviews).

History pages follow MLflow's order (timestamp, step, value) and drop identical points, as
MLflow stores each distinct point once. Paging is by key, not offset: a page token names the
last point returned, and a page reads only the chunks that can hold the points after it, so
the 40th page of a million-point series costs what the first does.

Points are merged here, not in SQL: PostgreSQL sends each chosen chunk's three arrays in
their binary form (``array_send``), numpy decodes, filters, sorts and de-duplicates them, and
the page is built from plain lists. Unnesting a 50,000-point chunk into rows, sorting them
with DISTINCT and decoding one record per point costs several times more than that, and a
page of a long series touches one or two such chunks.

Which chunks a page needs follows from their timestamp ranges: taken in order of their first
timestamp (``min_ts``), once some chunks are loaded, every point before the next chunk's
``min_ts`` is among them. A page loads chunks until it holds ``limit`` points below that
bound (or every chunk is loaded); the chunk metadata is read in growing batches, so a series
of a million one-point chunks does not list them all for every page.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from itertools import repeat
from typing import Any, NamedTuple, TypeAlias

import asyncpg
import msgspec
import numpy as np
import numpy.typing as npt

from evtrack.errors import invalid
from evtrack.eventlog import Conn
from evtrack.wire import mlflow as wire

Executor: TypeAlias = "Conn | asyncpg.Pool[Any]"
I64: TypeAlias = npt.NDArray[np.int64]
F64: TypeAlias = npt.NDArray[np.float64]

STREAM_PIECE_POINTS = 50_000
"""Points per piece of a streamed full history: what one piece holds in memory."""

MAX_LOADED_POINTS = 2_000_000
"""Most points a page or piece may load into memory at once (about 32 bytes each). Only
series whose chunks overlap heavily (many chunks spanning the same time range) get there;
their pages are then merged by PostgreSQL (slower, but its sort spills to disk)."""

FIRST_METADATA_BATCH = 64
"""Chunk rows listed beyond the page size in the first metadata batch: every chunk holds at
least one point, so ``limit + 64`` rows are enough unless chunks overlap the cursor."""

MAX_TOKEN_SKIPS = 16
"""Most chunk resume points a page token carries (see ``_Cursor``)."""

MIN_RESUMED_CHUNK = 1000
"""Chunks with fewer elements left than this get no resume point in a page token."""

_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1
_INT8_ELEMENTS = np.dtype([("len", ">i4"), ("v", ">i8")])
_FLOAT8_ELEMENTS = np.dtype([("len", ">i4"), ("v", ">f8")])

_CHUNKS_SQL = """
    SELECT seq, n, min_ts, max_ts FROM rm_metrics.chunks
    WHERE run_id = $1 AND key = $2 AND max_ts >= $3 AND (min_ts, seq) > ($4, $5)
    ORDER BY min_ts, seq
    LIMIT $6
"""

_ARRAYS_SQL = """
    SELECT c.seq, substr(array_send(c.timestamps[coalesce(s.skip, 0) + 1:]), 21),
           substr(array_send(c.steps[coalesce(s.skip, 0) + 1:]), 21),
           substr(array_send(c.vals[coalesce(s.skip, 0) + 1:]), 21)
    FROM rm_metrics.chunks c
    LEFT JOIN unnest($4::bigint[], $5::integer[]) AS s(seq, skip) ON s.seq = c.seq
    WHERE c.run_id = $1 AND c.key = $2 AND c.seq = ANY($3::bigint[])
    ORDER BY c.min_ts, c.seq
"""

# The fallback for heavily overlapping chunks: PostgreSQL merges, with bounded memory.
_SQL_PAGE_FIRST = """
    SELECT DISTINCT u.ts, u.step, u.v
    FROM rm_metrics.chunks c, unnest(c.timestamps, c.steps, c.vals) AS u(ts, step, v)
    WHERE c.run_id = $1 AND c.key = $2
    ORDER BY 1, 2, 3
    LIMIT $3
"""
_SQL_PAGE_AFTER = """
    SELECT DISTINCT u.ts, u.step, u.v
    FROM rm_metrics.chunks c, unnest(c.timestamps, c.steps, c.vals) AS u(ts, step, v)
    WHERE c.run_id = $1 AND c.key = $2 AND c.max_ts >= $3
      AND (u.ts, u.step, u.v) > ($3, $4, $5)
    ORDER BY 1, 2, 3
    LIMIT $6
"""


# ------------------------------------------------------------------------------ page tokens


class _Cursor(msgspec.Struct, array_like=True):
    """The last point of a page, and where the chunks that straddle it can be resumed:
    ``skips`` pairs a chunk's seq with how many of its leading elements are known to come
    before the point, so the next page reads the rest of a 50,000-point chunk, not all of
    it. Skipping is only ever an optimisation: the points left are still filtered."""

    ts: int
    step: int
    value: float
    skips: list[tuple[int, int]] = []


_token_encoder = msgspec.json.Encoder()
_NON_FINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def _encode_token(point: tuple[int, int, float], skips: list[tuple[int, int]]) -> str:
    ts, step, value = point
    fields: list[Any] = [ts, step, wire.json_double(value)]
    if skips:
        fields.append(skips)
    return base64.urlsafe_b64encode(_token_encoder.encode(fields)).decode()


def _decode_token(token: str | None) -> _Cursor | None:
    if not token:
        return None
    try:
        raw = msgspec.json.decode(base64.urlsafe_b64decode(token.encode()))
        if isinstance(raw, list) and len(raw) >= 3 and isinstance(raw[2], str):
            raw[2] = _NON_FINITE[raw[2]]
        return msgspec.convert(raw, _Cursor)
    except (
        ValueError,
        KeyError,
        binascii.Error,
        msgspec.DecodeError,
        msgspec.ValidationError,
    ) as exc:
        raise invalid(f"Invalid page token, could not base64-decode or parse: {token!r}") from exc


# ---------------------------------------------------------------------------------- points


class HistoryPoint(msgspec.Struct, gc=False):
    """One point of a history answer: the JSON of a ``wire.Metric`` without run, model or
    dataset. Four fields and no garbage-collector tracking make it about twice as cheap to
    build and encode, which is most of a 25,000-point page's cost in Python."""

    key: str
    value: float | str
    timestamp: int
    step: int


def _metric(key: str, ts: int, step: int, value: float, run_id: str | None = None) -> wire.Metric:
    return wire.Metric(
        key=key, value=wire.json_double(value), timestamp=ts, step=step, run_id=run_id
    )


def value_order(vals: F64) -> I64:
    """Integers that sort like PostgreSQL sorts float8: -0.0 equals 0.0, and NaN equals NaN
    and comes after +Infinity. Comparing and de-duplicating on these keeps the numpy merge
    and the SQL fallback in one order, and makes NaN points collapse as they do in SQL."""
    bits = (vals + 0.0).view(np.int64)  # -0.0 + 0.0 is +0.0
    keys = bits ^ ((bits >> 63) & np.int64(_INT64_MAX))
    keys[np.isnan(vals)] = _INT64_MAX
    return keys


@dataclass(frozen=True, slots=True)
class Points:
    """Metric points as columns. Sorted and de-duplicated once they leave ``merged``."""

    ts: I64
    steps: I64
    vals: F64
    order: I64  # value_order(vals)

    @classmethod
    def of(cls, ts: I64, steps: I64, vals: F64) -> Points:
        return cls(ts, steps, vals, value_order(vals))

    @classmethod
    def empty(cls) -> Points:
        return cls.of(np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.float64))

    def __len__(self) -> int:
        return len(self.ts)

    def last(self) -> tuple[int, int, float]:
        return int(self.ts[-1]), int(self.steps[-1]), float(self.vals[-1])

    def select(self, index: Any) -> Points:
        return Points(self.ts[index], self.steps[index], self.vals[index], self.order[index])

    def split(self, count: int) -> tuple[Points, Points]:
        return self.select(slice(None, count)), self.select(slice(count, None))

    def count_below(self, bound: int | None) -> int:
        """How many (sorted) points have a timestamp below ``bound``."""
        if bound is None:
            return len(self)
        return int(np.searchsorted(self.ts, bound, side="left"))

    def after(self, cursor: _Cursor | None) -> Points:
        """The points after ``cursor`` in (timestamp, step, value) order."""
        if cursor is None or not len(self):
            return self
        ts, steps = self.ts, self.steps
        corder = int(value_order(np.array([cursor.value], np.float64))[0])
        later = (ts > cursor.ts) | (
            (ts == cursor.ts)
            & ((steps > cursor.step) | ((steps == cursor.step) & (self.order > corder)))
        )
        return self if later.all() else self.select(later)

    def merged(self, other: Points) -> Points:
        """Both point sets in MLflow's order, each distinct point once."""
        both = self if not len(other) else other if not len(self) else _concat(self, other)
        if len(both) < 2 or bool((both.ts[1:] > both.ts[:-1]).all()):
            return both  # already in order, and no two points share a timestamp
        both = both.select(np.lexsort((both.order, both.steps, both.ts)))
        ts, steps, order = both.ts, both.steps, both.order
        distinct = np.empty(len(both), dtype=bool)
        distinct[0] = True
        distinct[1:] = (ts[1:] != ts[:-1]) | (steps[1:] != steps[:-1]) | (order[1:] != order[:-1])
        return both if distinct.all() else both.select(distinct)

    def to_wire(self, key: str) -> list[HistoryPoint]:
        """Wire objects, built from plain lists (no per-point numpy scalars or keywords)."""
        vals: list[Any] = self.vals.tolist()
        if not bool(np.isfinite(self.vals).all()):
            vals = [wire.json_double(v) for v in vals]
        return list(map(HistoryPoint, repeat(key), vals, self.ts.tolist(), self.steps.tolist()))


def _concat(a: Points, b: Points) -> Points:
    return Points(
        np.concatenate((a.ts, b.ts)),
        np.concatenate((a.steps, b.steps)),
        np.concatenate((a.vals, b.vals)),
        np.concatenate((a.order, b.order)),
    )


def _column(blobs: list[bytes], elements: np.dtype[Any], native: type[Any]) -> Any:
    """One array column of several chunks, as one numpy array. Each blob is an
    ``array_send`` of a 1-D array without its header, which PostgreSQL strips (``substr``):
    a page of one-point chunks has tens of thousands of them."""
    raw = b"".join(blobs)
    if len(raw) % elements.itemsize:
        raise ValueError("unexpected binary array layout in rm_metrics.chunks")
    items = np.frombuffer(raw, elements)
    if not bool((items["len"] == 8).all()):
        raise ValueError("NULL element in rm_metrics.chunks arrays")
    return items["v"].astype(native)


# ------------------------------------------------------------------------------ chunk sweep


class _Chunk(NamedTuple):
    seq: int
    n: int
    min_ts: int
    max_ts: int


class _Loaded(NamedTuple):
    """A chunk loaded for a page: from element ``skip`` on, its timestamps in array order."""

    seq: int
    max_ts: int
    skip: int
    ts: I64


class _TooMuch(Exception):
    """A page would need more than MAX_LOADED_POINTS points in memory."""


class _Sweep:
    """Points of one series after a cursor, in MLflow's order, handed out in pieces.

    Chunks are loaded in order of their first timestamp. ``pending`` holds the loaded points
    not handed out yet (after the cursor, sorted, distinct); those with a timestamp below the
    next unloaded chunk's first timestamp are final: no chunk still unloaded can come before
    them or repeat them.
    """

    def __init__(
        self, conn: Conn, run_id: str, key: str, cursor: _Cursor | None, *, paged: bool
    ) -> None:
        self._conn = conn
        self._paged = paged
        self._run_id = run_id
        self._key = key
        self._cursor = cursor
        self._skips = dict(cursor.skips) if cursor is not None else {}
        self._chunks: list[_Chunk] = []
        self._listed_all = False
        self._next = 0  # index in _chunks of the first chunk not loaded
        self._pending = Points.empty()
        self._loaded: list[_Loaded] = []
        self._prefetching: asyncio.Future[None] | None = None

    async def take(self, want: int) -> tuple[Points, bool]:
        """Up to ``want`` next points, and whether any come after them."""
        prefetching, self._prefetching = self._prefetching, None
        if prefetching is not None:
            await prefetching
        growth = 1
        while True:
            bound = await self._bound(want)
            ready = self._pending.count_below(bound)
            if ready >= want or bound is None:
                break
            await self._load_more((want - ready) * growth, want)
            growth *= 2  # duplicates or skewed chunks: look further on each retry
        out, self._pending = self._pending.split(min(want, ready))
        return out, bool(len(self._pending)) or bound is not None

    async def prefetch(self, want: int) -> None:
        """Start loading what the next ``take(want)`` needs, and return once its query is on
        its way: PostgreSQL then reads the next chunks while the caller turns this piece into
        JSON and writes it. Nothing else may use the connection until ``take`` or ``close``."""
        self._prefetching = asyncio.ensure_future(self._top_up(want))
        await asyncio.sleep(0)  # let the task send its query

    async def close(self) -> None:
        """Stop a prefetch still running (the reader went away)."""
        prefetching, self._prefetching = self._prefetching, None
        if prefetching is not None and not prefetching.done():
            prefetching.cancel()
        if prefetching is not None:
            with contextlib.suppress(asyncio.CancelledError, _TooMuch):
                await prefetching

    async def _top_up(self, want: int) -> None:
        bound = await self._bound(want)
        ready = self._pending.count_below(bound)
        if ready < want and bound is not None:
            await self._load_more(want - ready, want)

    def skips_after(self, last: tuple[int, int, float]) -> list[tuple[int, int]]:
        """Resume points for the chunks loaded here that the next page, which starts after
        ``last``, will list again: how many leading elements come before ``last``'s
        timestamp. The largest MAX_TOKEN_SKIPS, to keep tokens short."""
        ts = last[0]
        skips = []
        for chunk in self._loaded:
            if chunk.max_ts < ts:
                continue  # the next page does not list it
            before = chunk.ts >= ts
            lead = int(np.argmax(before)) if before.any() else len(chunk.ts)
            if chunk.skip + lead:
                skips.append((chunk.seq, chunk.skip + lead))
        skips.sort(key=lambda s: -s[1])
        return skips[:MAX_TOKEN_SKIPS]

    async def _bound(self, want: int) -> int | None:
        """The first timestamp of the next chunk to load (None: all are loaded)."""
        chunk = await self._chunk(self._next, want)
        return None if chunk is None else chunk.min_ts

    async def _chunk(self, index: int, want: int) -> _Chunk | None:
        while index >= len(self._chunks) and not self._listed_all:
            await self._list_chunks(max(want + FIRST_METADATA_BATCH, 4 * len(self._chunks)))
        return self._chunks[index] if index < len(self._chunks) else None

    async def _list_chunks(self, batch: int) -> None:
        last = self._chunks[-1] if self._chunks else None
        rows = await self._conn.fetch(
            _CHUNKS_SQL,
            self._run_id,
            self._key,
            _INT64_MIN if self._cursor is None else self._cursor.ts,
            _INT64_MIN if last is None else last.min_ts,
            _INT64_MIN if last is None else last.seq,
            batch,
        )
        self._chunks.extend(map(_Chunk._make, rows))
        self._listed_all = len(rows) < batch

    def _expected(self, chunk: _Chunk) -> float:
        """Points of ``chunk`` expected after the cursor (evenly spread timestamps assumed)."""
        cursor = self._cursor
        skip = min(max(self._skips.get(chunk.seq, 0), 0), chunk.n)
        if cursor is None or chunk.min_ts > cursor.ts or skip:
            return chunk.n - skip  # a resume point already leaves out what comes before
        return chunk.n * (chunk.max_ts - cursor.ts + 1) / (chunk.max_ts - chunk.min_ts + 1)

    async def _load_more(self, target: float, want: int) -> None:
        """Load the next chunks, at least one, expected to hold ``target`` more points."""
        group: list[_Chunk] = []
        expected = 0.0
        while expected < target or not group:
            index = self._next + len(group)
            if index >= len(self._chunks) and await self._chunk(index, want) is None:
                break  # every chunk is in the group
            chunk = self._chunks[index]
            group.append(chunk)
            expected += self._expected(chunk)
        if len(self._pending) + sum(c.n for c in group) > MAX_LOADED_POINTS:
            raise _TooMuch
        skips = {c.seq: min(max(self._skips.get(c.seq, 0), 0), c.n) for c in group}
        resumed = [seq for seq, skip in skips.items() if skip]
        rows = await self._conn.fetch(
            _ARRAYS_SQL,
            self._run_id,
            self._key,
            [c.seq for c in group],
            resumed,
            [skips[seq] for seq in resumed],
        )
        loaded = Points.of(
            _column([r[1] for r in rows], _INT8_ELEMENTS, np.int64),
            _column([r[2] for r in rows], _INT8_ELEMENTS, np.int64),
            _column([r[3] for r in rows], _FLOAT8_ELEMENTS, np.float64),
        )
        if self._paged:  # resume points are only wanted for a next page
            self._remember(group, skips, rows, loaded.ts)
        self._pending = self._pending.merged(loaded.after(self._cursor))
        self._next += len(group)

    def _remember(
        self, group: list[_Chunk], skips: dict[int, int], rows: list[Any], ts: I64
    ) -> None:
        """Keep, for ``skips_after``, where each large chunk's elements lie in ``ts``. Small
        chunks are left out: resuming them saves nothing, and a page of one-point chunks has
        tens of thousands of them."""
        max_ts = {c.seq: c.max_ts for c in group}
        start = 0
        for row in rows:
            seq, count = row[0], len(row[1]) // _INT8_ELEMENTS.itemsize
            if count >= MIN_RESUMED_CHUNK:
                self._loaded.append(
                    _Loaded(seq, max_ts[seq], skips[seq], ts[start : start + count])
                )
            start += count


# ------------------------------------------------------------------------ fallback in SQL


async def _sql_points(
    conn: Conn, run_id: str, key: str, cursor: _Cursor | None, limit: int
) -> Points:
    """Up to ``limit`` points after ``cursor``, merged by PostgreSQL (bounded memory here)."""
    if cursor is None:
        rows = await conn.fetch(_SQL_PAGE_FIRST, run_id, key, limit)
    else:
        rows = await conn.fetch(
            _SQL_PAGE_AFTER, run_id, key, cursor.ts, cursor.step, cursor.value, limit
        )
    return Points.of(
        np.array([r[0] for r in rows], np.int64),
        np.array([r[1] for r in rows], np.int64),
        np.array([r[2] for r in rows], np.float64),
    )


async def _sql_page(
    conn: Conn, run_id: str, key: str, cursor: _Cursor | None, limit: int
) -> tuple[Points, bool]:
    points = await _sql_points(conn, run_id, key, cursor, limit + 1)
    page, rest = points.split(limit)
    return page, bool(len(rest))


def _cursor_at(points: Points) -> _Cursor:
    return _Cursor(*points.last())


# ------------------------------------------------------------------------------ public API


@asynccontextmanager
async def _connection(db: Executor) -> AsyncIterator[Conn]:
    """One connection for the few queries of a page (a connection passed in is used as it
    is). No transaction: chunk rows never change once written, so listing them and then
    reading some of them agree without one, and a page saves two round trips."""
    if not isinstance(db, asyncpg.Pool):
        yield db
        return
    async with db.acquire() as conn:
        yield conn


async def metric_history_page(
    db: Executor, run_id: str, key: str, *, page_token: str | None, limit: int
) -> tuple[list[HistoryPoint], str | None]:
    """One page of a series in MLflow's order, and the token of the next page (if any)."""
    cursor = _decode_token(page_token)
    if limit <= 0:
        return [], None
    skips: list[tuple[int, int]] = []
    async with _connection(db) as conn:
        try:
            sweep = _Sweep(conn, run_id, key, cursor, paged=True)
            points, more = await sweep.take(limit)
            if more and len(points):
                skips = sweep.skips_after(points.last())
        except _TooMuch:
            points, more = await _sql_page(conn, run_id, key, cursor, limit)
    token = _encode_token(points.last(), skips) if more and len(points) else None
    return points.to_wire(key), token


async def stream_metric_history(
    pool: asyncpg.Pool[Any], run_id: str, key: str
) -> AsyncIterator[list[HistoryPoint]]:
    """The whole series in MLflow's order, in pieces of at most STREAM_PIECE_POINTS, from
    one snapshot. Memory stays bounded by the chunks a piece needs, so a million points
    never sit in memory at once."""
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        sweep = _Sweep(conn, run_id, key, None, paged=False)
        cursor: _Cursor | None = None
        try:
            while True:
                try:
                    points, more = await sweep.take(STREAM_PIECE_POINTS)
                except _TooMuch:
                    break
                if more:
                    await sweep.prefetch(STREAM_PIECE_POINTS)
                if len(points):
                    cursor = _cursor_at(points)
                    yield points.to_wire(key)
                if not more:
                    return
        finally:
            await sweep.close()
        while True:  # heavily overlapping chunks: let PostgreSQL merge, piece by piece
            points, more = await _sql_page(conn, run_id, key, cursor, STREAM_PIECE_POINTS)
            if len(points):
                cursor = _cursor_at(points)
                yield points.to_wire(key)
            if not more:
                return

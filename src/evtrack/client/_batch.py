"""Reading spooled frames back and turning a range of them into one ingest request body.

This runs on the sender thread, next to a training loop that shares the GIL with it. Metric
points, the bulk of any spool, never become Python objects here: a stretch of equal point
frames (``m`` frames, or ``M`` frames of one ``log_metrics`` shape) is read with one
``np.frombuffer`` over a record type that covers whole frames, and its columns are copied
out as arrays. Those pieces are handed to their runs once the range is decoded (with one
stable sort by run when pieces mix runs, so the work per run does not grow with the number
of pieces), and the request carries each run's points packed (``IngestRecord.packed``),
written straight from the arrays.

The work is still cut up (pieces of a few thousand points, a few dozen runs) with a
``pause()`` in between, which sleeps briefly so a waiting training thread gets the GIL
within about a piece's time instead of the interpreter's 5 ms switch interval; with numpy
doing the per-point work, a piece of 4096 points costs about a tenth of a millisecond.
"""

from __future__ import annotations

import itertools
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec
import numpy as np
import numpy.typing as npt

from evtrack.client._format import (
    DATA_START,
    FRAME_HEADER,
    FRAME_OVERHEAD,
    POINT,
    POINT_FRAME_DTYPE,
    POINTS_HEAD,
    POINTS_ITEM,
    REF,
    STRUCTURAL,
    T_ARTIFACT,
    T_END,
    T_KEY,
    T_PARAMS,
    T_POINT,
    T_POINTS,
    T_RUN,
    T_SEAL,
    T_START,
    T_TAGS,
    SpooledArtifact,
    points_frame_dtype,
)
from evtrack.client._spool import AckState, SegmentReader
from evtrack.wire.ingest import (
    IngestKeyValue,
    IngestMetrics,
    IngestRecord,
    IngestRequest,
    IngestRunEnd,
    IngestRunStart,
)

Pause = Callable[[], None]
U32 = npt.NDArray[np.uint32]
F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
Frames = npt.NDArray[np.void]  # whole frames viewed through a record type

BULK_POINTS = 4096  # metric points decoded per piece (then a pause)
RUN_COST = 256  # the fixed per-run work of a batch, in points, for pacing pauses
RECORD_FRAMES = 64  # other records decoded per piece
POINT_BYTES = 28  # what a point adds to a request body, for Limits.max_bytes
UNNAMED = 0xFFFFFFFF  # RunData key position: this key id is not in the run's names yet
_NO_POSITIONS: npt.NDArray[np.uint32] = np.full(0, UNNAMED, dtype=np.uint32)

_start_decoder = msgspec.msgpack.Decoder(IngestRunStart)
_end_decoder = msgspec.msgpack.Decoder(IngestRunEnd)
_kv_decoder = msgspec.msgpack.Decoder(list[IngestKeyValue])
_artifact_decoder = msgspec.msgpack.Decoder(SpooledArtifact)
_encoder = msgspec.msgpack.Encoder()


def no_pause() -> None:
    return None


class CorruptSpool(Exception):
    """A frame that cannot be decoded although its checksum matched (a bug, or a foreign
    file in the spool). The range is handed to the rejection path rather than crashing."""


@dataclass
class Cursor:
    """Delivery state of one segment, owned by the sender thread."""

    seq: int
    reader: SegmentReader
    ack: AckState
    # Intern tables, filled from K/R frames; ids never change meaning within a segment, so
    # tables that already know later entries are still right for earlier ranges.
    keys: dict[int, str] = field(default_factory=dict)
    runs: dict[int, str] = field(default_factory=dict)
    scanned: int = DATA_START  # K/R frames before this offset are in the tables
    end: int | None = None  # end of valid data, once known (sealed or recovered segments)

    @property
    def buf(self) -> Any:
        mm = self.reader.mm
        if mm is None:
            raise CorruptSpool(f"{self.reader.path} is empty")
        return mm


def recover(cursor: Cursor, pause: Pause) -> int:
    """Find where a segment's valid frames end, checking every checksum (for segments whose
    writer is gone: the last frame may be torn). Fills the intern tables on the way."""
    buf = cursor.buf
    size = cursor.reader.size
    pos = DATA_START
    count = 0
    while pos + FRAME_OVERHEAD <= size:
        length, crc = FRAME_HEADER.unpack_from(buf, pos)
        if length == 0 or pos + FRAME_OVERHEAD + length > size:
            break
        payload = buf[pos + FRAME_OVERHEAD : pos + FRAME_OVERHEAD + length]
        if zlib.crc32(payload) != crc:
            break
        kind = payload[0]
        if kind == T_SEAL:
            pos += FRAME_OVERHEAD + length
            break
        if kind in (T_KEY, T_RUN):
            _intern(cursor, kind, payload)
        pos += FRAME_OVERHEAD + length
        count += 1
        if count % 4096 == 0:
            pause()
    cursor.scanned = pos
    cursor.end = pos
    return pos


def _intern(cursor: Cursor, kind: int, payload: bytes) -> None:
    _, ident = REF.unpack_from(payload)
    text = payload[REF.size :].decode()
    (cursor.keys if kind == T_KEY else cursor.runs)[ident] = text


def _scan_tables(cursor: Cursor, upto: int, pause: Pause) -> None:
    """Bring the intern tables up to ``upto`` (frames already known to be valid)."""
    buf = cursor.buf
    pos = cursor.scanned
    count = 0
    while pos + FRAME_OVERHEAD <= upto:
        length, _ = FRAME_HEADER.unpack_from(buf, pos)
        if length == 0:
            break
        kind = buf[pos + FRAME_OVERHEAD]
        if kind in (T_KEY, T_RUN):
            _intern(cursor, kind, buf[pos + FRAME_OVERHEAD : pos + FRAME_OVERHEAD + length])
        pos += FRAME_OVERHEAD + length
        count += 1
        if count % 4096 == 0:
            pause()
    cursor.scanned = max(cursor.scanned, pos)


class RunData:
    """One run's share of a batch: its other records as decoded, and its metric points as
    numpy column parts, one part per decoded piece. The parts go into the request body as
    they are (no joining copy), so ``key_index`` is made final while decoding: ``names`` are
    the keys the run's points use, in order of first use, and ``key_index`` indexes them.
    """

    __slots__ = (
        "_position",
        "end",
        "key_index",
        "names",
        "params",
        "points",
        "start",
        "steps",
        "tags",
        "timestamps",
        "values",
    )

    def __init__(self) -> None:
        self.names: list[str] = []
        # segment key id -> index into names (UNNAMED where the run has not used it yet);
        # replaced, never written, while it is the shared empty array
        self._position: U32 = _NO_POSITIONS
        self.key_index: list[U32] = []
        self.values: list[F64] = []
        self.timestamps: list[I64] = []
        self.steps: list[I64] = []
        self.points = 0
        self.params: list[IngestKeyValue] = []
        self.tags: list[IngestKeyValue] = []
        self.start: IngestRunStart | None = None
        self.end: IngestRunEnd | None = None

    def add_points(
        self, keys: dict[int, str], key_ids: U32, values: F64, timestamps: I64, steps: I64
    ) -> None:
        """Append points given by segment key ids (``keys`` is the segment's table)."""
        self.key_index.append(self._indexes(keys, key_ids))
        self.values.append(values)
        self.timestamps.append(timestamps)
        self.steps.append(steps)
        self.points += len(values)

    def _indexes(self, keys: dict[int, str], key_ids: U32) -> U32:
        """``key_ids`` as indexes into ``names``, naming ids the run had not used yet. The
        lookup is one gather; only a piece with a new key takes the slow path."""
        top = int(key_ids.max())
        if len(self.names) <= 1 and top == int(key_ids.min()):  # the run logs one key
            return np.full(len(key_ids), self._name(keys, top), dtype=np.uint32)
        if top >= len(self._position):
            if top not in keys:
                raise CorruptSpool(f"key id {top} used but not interned")
            self._grow(top)
        index = self._position[key_ids]
        if int(index.max()) == UNNAMED:  # UNNAMED is the largest uint32: some id is new
            ids, first = np.unique(key_ids[index == UNNAMED], return_index=True)
            new = ids[np.argsort(first)]  # in order of first use
            names = [keys.get(ident) for ident in new.tolist()]
            if None in names:
                raise CorruptSpool("a key id used but not interned")
            start = len(self.names)
            self._position[new] = np.arange(start, start + len(new), dtype=np.uint32)
            self.names.extend(name for name in names if name is not None)
            index = self._position[key_ids]
        return index

    def _name(self, keys: dict[int, str], ident: int) -> int:
        """The index into ``names`` of segment key id ``ident``, adding it if new."""
        if ident < len(self._position) and self._position[ident] != UNNAMED:
            return int(self._position[ident])
        name = keys.get(ident)
        if name is None:
            raise CorruptSpool(f"key id {ident} used but not interned")
        if ident >= len(self._position):
            self._grow(ident)
        self._position[ident] = len(self.names)
        self.names.append(name)
        return len(self.names) - 1

    def _grow(self, ident: int) -> None:
        """Make the position table cover key id ``ident`` (an id the segment interned, so
        the table stays as small as the segment's key table)."""
        grown = np.full(max(ident + 1, 2 * len(self._position)), UNNAMED, dtype=np.uint32)
        grown[: len(self._position)] = self._position
        self._position = grown

    def metric_lists(self) -> dict[str, list[Any]]:
        """The points as plain lists (``IngestMetrics`` fields): for copies of rejected
        records that people read and for servers older than packed ingestion, not for the
        hot path."""
        names = self.names
        return {
            "keys": [names[i] for part in self.key_index for i in part.tolist()],
            "values": [v for part in self.values for v in part.tolist()],
            "timestamps": [t for part in self.timestamps for t in part.tolist()],
            "steps": [s for part in self.steps for s in part.tolist()],
        }


@dataclass
class Batch:
    """A contiguous range of one segment, decoded and ready to send as one request."""

    seq: int
    start: int
    end: int
    runs: dict[str, RunData] = field(default_factory=dict)
    artifacts: list[tuple[str, SpooledArtifact]] = field(default_factory=list)
    points: int = 0
    data_frames: int = 0
    # Records of runs the server said are gone (see Delivery.dead_runs): not sent.
    skipped: dict[str, RunData] = field(default_factory=dict)
    skipped_artifacts: list[tuple[str, SpooledArtifact]] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.runs and not self.artifacts


@dataclass
class Limits:
    max_points: int = 50_000
    max_bytes: int = 8 * 1024 * 1024
    max_runs: int = 1000


def decode_range(
    cursor: Cursor,
    start: int,
    limit: int,
    limits: Limits | None,
    pause: Pause,
    dead: frozenset[str] | set[str] = frozenset(),
) -> Batch:
    """Decode frames from ``start`` up to ``limit`` (a frame boundary). With ``limits``, stop
    early at a frame boundary once the batch is full; without, take the whole range (used to
    resend a recorded in-flight range exactly). Records of ``dead`` runs go to ``skipped``."""
    if start > cursor.scanned:
        _scan_tables(cursor, start, pause)
    decoder = _Decoder(cursor, start, limit, limits, dead)
    try:
        decoder.run(pause)
        decoder.distribute(pause)
    except CorruptSpool as exc:
        raise CorruptSpool(f"segment {cursor.seq} at offset {decoder.pos}: {exc}") from None
    except (KeyError, IndexError, ValueError, struct.error, msgspec.DecodeError) as exc:
        raise CorruptSpool(f"segment {cursor.seq} at offset {decoder.pos}: {exc!r}") from exc
    cursor.scanned = max(cursor.scanned, decoder.pos)
    decoder.batch.end = decoder.pos
    return decoder.batch


class _Paced:
    """Pauses once enough work is done since the last pause, counted in points (a run's
    fixed cost, its handful of small numpy and msgpack calls, as ``RUN_COST`` points)."""

    def __init__(self, pause: Pause) -> None:
        self.pause = pause
        self.done = 0

    def spent(self, work: int) -> None:
        self.done += work
        if self.done >= BULK_POINTS:
            self.pause()
            self.done = 0


@dataclass(frozen=True, slots=True)
class _Piece:
    """Points decoded from one stretch of frames: of one run (``run`` its index) or of
    several (``run`` holds each point's run index)."""

    run: int | U32
    key_ids: U32
    values: F64
    timestamps: I64
    steps: I64

    @property
    def columns(self) -> tuple[U32, F64, I64, I64]:
        return self.key_ids, self.values, self.timestamps, self.steps


class _Decoder:
    """The state of one ``decode_range`` call: the batch so far and where it stands."""

    def __init__(
        self,
        cursor: Cursor,
        start: int,
        limit: int,
        limits: Limits | None,
        dead: frozenset[str] | set[str],
    ) -> None:
        self.cursor = cursor
        self.buf = cursor.buf
        self.limit = limit
        self.dead = dead
        self.batch = Batch(cursor.seq, start, start)
        self.max_points = limits.max_points if limits else 1 << 62
        self.max_bytes = limits.max_bytes if limits else 1 << 62
        self.max_runs = limits.max_runs if limits else 1 << 62
        self.size = 0
        self.pos = start
        self.pieces: list[_Piece] = []  # metric points, in spool order
        self.owners: dict[int, RunData] = {}  # run index -> its RunData (runs or skipped)

    def run(self, pause: Pause) -> None:
        buf, limit, batch = self.buf, self.limit, self.batch
        records = 0
        while self.pos < limit:
            if batch.points >= self.max_points or self.size >= self.max_bytes:
                return
            pos = self.pos
            if pos + FRAME_OVERHEAD > limit:
                return
            length = FRAME_HEADER.unpack_from(buf, pos)[0]
            if length == 0:
                return
            kind = buf[pos + FRAME_OVERHEAD]
            if kind in (T_POINT, T_POINTS):
                taken = self._points(pos, length, kind)
                if taken == 0:
                    return  # the batch is full
                self.pos += taken
                pause()
                continue
            if kind == T_SEAL:
                self.pos += FRAME_OVERHEAD + length
                return
            if not self._record(pos, length, kind):
                return
            self.pos += FRAME_OVERHEAD + length
            if kind not in STRUCTURAL:
                records += 1
                if records % RECORD_FRAMES == 0:
                    pause()

    def _run_data(self, idx: int) -> RunData | None:
        """The batch's share of run ``idx``; None if it is new and the batch has its runs."""
        run_id = self.cursor.runs.get(idx)
        if run_id is None:
            raise CorruptSpool(f"run index {idx} used before interned")
        batch = self.batch
        target = batch.skipped if run_id in self.dead else batch.runs
        data = target.get(run_id)
        if data is None:
            if target is batch.runs and len(batch.runs) >= self.max_runs:
                return None
            data = target[run_id] = self.owners[idx] = RunData()
        return data

    # ------------------------------------------------------------------------ metric points

    def _points(self, pos: int, length: int, kind: int) -> int:
        """Decode the run of point frames at ``pos`` that have this frame's type and length
        (so one record type covers them all), as far as the batch has room. Returns the
        bytes consumed: 0 when the batch is full."""
        per_frame, dtype = _point_layout(kind, length)
        frame_size = FRAME_OVERHEAD + length
        count = self._room(pos, frame_size, per_frame)
        if count == 0:
            return 0
        # A view of the map itself: the columns below are copies (``astype``, ``repeat``,
        # boolean indexing), so no array outlives this call still pinning the mapping.
        frames: Frames = np.frombuffer(self.buf, dtype=dtype, count=count, offset=pos)
        alike = (frames["type"] == kind) & (frames["length"] == length)
        if not alike.all():
            frames = frames[: int(alike.argmin())]  # frame 0 is alike: it was read above
        if kind == T_POINTS and bool((frames["count"] != per_frame).any()):
            raise CorruptSpool("a points frame whose count disagrees with its length")
        frames = self._route(frames, per_frame, kind)
        n = len(frames)
        self.batch.points += n * per_frame
        self.batch.data_frames += n
        self.size += n * per_frame * POINT_BYTES
        return n * frame_size

    def _room(self, pos: int, frame_size: int, per_frame: int) -> int:
        """How many frames of ``frame_size`` (``per_frame`` points each) to take at ``pos``:
        within the range, one piece, and the batch limits. A lone frame larger than the
        limits still goes, in a batch of its own, as it always has."""
        fit = (self.limit - pos) // frame_size
        if fit == 0:
            raise CorruptSpool("a frame crosses the end of the range")
        if per_frame == 0:
            return min(fit, RECORD_FRAMES)
        by_points = (self.max_points - self.batch.points) // per_frame
        by_bytes = (self.max_bytes - self.size) // (per_frame * POINT_BYTES)
        count = min(fit, max(1, BULK_POINTS // per_frame), by_points, by_bytes)
        if count <= 0:
            return 0 if self.batch.points else 1
        return count

    def _route(self, frames: Frames, per_frame: int, kind: int) -> Frames:
        """Check that the batch has room for the runs of ``frames`` and keep their points
        as one piece. Frames from the first one of a run the batch has no room for are
        left out (the returned frames end before it)."""
        runs = frames["run"]
        first = int(runs[0])
        if bool((runs == first).all()):  # the usual case: one run logging
            if self._run_data(first) is None:
                return frames[:0]
            self._keep(frames, per_frame, kind, first)
            return frames
        ids, first_at = np.unique(runs, return_index=True)
        owners = self.owners
        new = [
            (at, i)
            for i, at in zip(ids.tolist(), first_at.tolist(), strict=True)
            if i not in owners
        ]
        end = len(frames)
        for at, idx in sorted(new):  # runs new to the batch, in order of first appearance
            if self._run_data(idx) is None:
                end = at
                break
        frames = frames[:end]
        self._keep(frames, per_frame, kind, np.repeat(frames["run"], per_frame))
        return frames

    def _keep(self, frames: Frames, per_frame: int, kind: int, run: int | U32) -> None:
        """Copy the points out of ``frames`` (``m``: one point per frame; ``M``: the frame's
        items, sharing its timestamp and step) as a piece of the batch."""
        if per_frame == 0 or not len(frames):
            return
        if kind == T_POINTS:
            items = frames["items"]
            key_ids = items["key"].astype(np.uint32).reshape(-1)  # astype copies (and packs)
            values = items["value"].astype(np.float64).reshape(-1)
            timestamps = np.repeat(frames["timestamp"], per_frame)  # a new array
            steps = np.repeat(frames["step"], per_frame)
        else:
            key_ids = frames["key"].astype(np.uint32)
            values = frames["value"].astype(np.float64)
            timestamps = frames["timestamp"].astype(np.int64)
            steps = frames["step"].astype(np.int64)
        self.pieces.append(_Piece(run, key_ids, values, timestamps, steps))

    def distribute(self, pause: Pause) -> None:
        """Give each run its points. Pieces of one run each go to it as they are; when
        pieces mix runs, the batch's points are grouped by run with one stable sort, so the
        work per run is done once per batch, not once per piece."""
        pieces, keys = self.pieces, self.cursor.keys
        paced = _Paced(pause)
        if all(isinstance(piece.run, int) for piece in pieces):
            for piece in pieces:
                assert isinstance(piece.run, int)
                self.owners[piece.run].add_points(keys, *piece.columns)
                paced.spent(RUN_COST)
            return
        runs = np.concatenate(
            [
                np.full(len(p.values), p.run, dtype=np.uint32) if isinstance(p.run, int) else p.run
                for p in pieces
            ]
        )
        order = np.argsort(runs, kind="stable")  # spool order kept within each run
        runs = runs[order]
        pause()
        columns = []
        for i in range(4):
            columns.append(np.concatenate([p.columns[i] for p in pieces])[order])
            pause()
        bounds = [0, *(np.flatnonzero(runs[1:] != runs[:-1]) + 1).tolist(), len(runs)]
        for lo, hi in itertools.pairwise(bounds):
            key_ids, values, timestamps, steps = (column[lo:hi] for column in columns)
            self.owners[int(runs[lo])].add_points(keys, key_ids, values, timestamps, steps)
            paced.spent(RUN_COST + hi - lo)

    # ------------------------------------------------------------------------ other records

    def _record(self, pos: int, length: int, kind: int) -> bool:
        """Decode one non-point frame; False when the batch has no room for its run."""
        cursor = self.cursor
        payload = self.buf[pos + FRAME_OVERHEAD : pos + FRAME_OVERHEAD + length]
        if kind in STRUCTURAL:
            if pos >= cursor.scanned:
                _intern(cursor, kind, payload)
            return True
        ref = REF.unpack_from(payload)[1]
        batch = self.batch
        if kind == T_ARTIFACT:
            run_id = cursor.runs.get(ref)
            if run_id is None:
                raise CorruptSpool(f"run index {ref} used before interned")
            target = batch.skipped_artifacts if run_id in self.dead else batch.artifacts
            target.append((run_id, _artifact_decoder.decode(payload[REF.size :])))
            batch.data_frames += 1
            return True
        data = self._run_data(ref)
        if data is None:
            return False
        body = payload[REF.size :]
        if kind == T_START:
            if data.start is None:
                data.start = _start_decoder.decode(body)
        elif kind == T_END:
            data.end = _end_decoder.decode(body)
        elif kind == T_PARAMS:
            data.params.extend(_kv_decoder.decode(body))
        elif kind == T_TAGS:
            data.tags.extend(_kv_decoder.decode(body))
        else:
            raise CorruptSpool(f"unknown record type {kind}")
        self.size += length
        batch.data_frames += 1
        return True


def _point_layout(kind: int, length: int) -> tuple[int, np.dtype[np.void]]:
    """(points per frame, record type of the whole frame) for a point frame of ``length``."""
    if kind == T_POINT:
        if length != POINT.size:
            raise CorruptSpool(f"a point frame of {length} bytes (expected {POINT.size})")
        return 1, POINT_FRAME_DTYPE
    count, rest = divmod(length - POINTS_HEAD.size, POINTS_ITEM.size)
    if count < 0 or rest:
        raise CorruptSpool(f"a points frame of {length} bytes is not a whole number of items")
    return count, points_frame_dtype(count)


def split_point(cursor: Cursor, start: int, end: int) -> int | None:
    """The frame boundary halfway (by data frames) through ``[start, end)``; None when the
    range holds a single data frame and cannot be split."""
    buf = cursor.buf
    offsets = []
    pos = start
    while pos + FRAME_OVERHEAD <= end:
        length = FRAME_HEADER.unpack_from(buf, pos)[0]
        if length == 0:
            break
        if buf[pos + FRAME_OVERHEAD] not in STRUCTURAL:
            offsets.append(pos)
        pos += FRAME_OVERHEAD + length
    if len(offsets) < 2:
        return None
    return offsets[len(offsets) // 2]


def point_payload(run: int, key: int, value: float, timestamp: int, step: int) -> bytes:
    return POINT.pack(T_POINT, run, key, value, timestamp, step)


# ------------------------------------------------------------------------ request encoding


def _array_header(n: int) -> bytes:
    if n < 16:
        return bytes((0x90 | n,))
    if n < 0x10000:
        return b"\xdc" + n.to_bytes(2, "big")
    return b"\xdd" + n.to_bytes(4, "big")


def _map_header(n: int) -> bytes:
    return bytes((0x80 | n,))


def _bin_header(n: int) -> bytes:
    if n < 0x100:
        return b"\xc4" + n.to_bytes(1, "big")
    if n < 0x10000:
        return b"\xc5" + n.to_bytes(2, "big")
    return b"\xc6" + n.to_bytes(4, "big")


def _bin(parts: list[Any], dtype: str, out: list[bytes | memoryview]) -> None:
    """One MessagePack ``bin`` made of array parts: a header for their total size, then
    each part's bytes in the wire's byte order (a view, no copy, on little-endian hosts)."""
    raw = [np.ascontiguousarray(part, dtype=dtype).data.cast("B") for part in parts]
    out.append(_bin_header(sum(map(len, raw))))
    out.extend(raw)


def _packed(data: RunData, out: list[bytes | memoryview]) -> None:
    """``IngestPackedMetrics`` of one run: the arrays go into the body as they are."""
    out.append(_map_header(5))
    out.append(_encoder.encode("names"))
    out.append(_encoder.encode(data.names))
    for name, parts, dtype in (
        ("key_index", data.key_index, "<u4"),
        ("values", data.values, "<f8"),
        ("timestamps", data.timestamps, "<i8"),
        ("steps", data.steps, "<i8"),
    ):
        out.append(_encoder.encode(name))
        _bin(parts, dtype, out)


def encode_request(runs: dict[str, RunData], pause: Pause, *, packed: bool = True) -> bytes:
    """The msgpack body of ``IngestRequest(records=[...])``, one record per run with its
    points ``packed``; byte for byte what ``msgspec`` would produce (fields in struct order).
    ``packed=False`` sends points as lists (``metrics``), for servers older than packed
    ingestion; that makes Python objects per point and is much slower."""
    out: list[bytes | memoryview] = [_map_header(1), _encoder.encode("records")]
    out.append(_array_header(len(runs)))
    paced = _Paced(pause)
    for run_id, data in runs.items():
        paced.spent(RUN_COST + data.points)
        rest: list[tuple[str, Any]] = []
        if data.points and not packed:
            rest.append(("metrics", IngestMetrics(**data.metric_lists())))
        if data.params:
            rest.append(("params", data.params))
        if data.tags:
            rest.append(("tags", data.tags))
        if data.start is not None:
            rest.append(("start", data.start))
        if data.end is not None:
            rest.append(("end", data.end))
        has_points = data.points > 0 and packed
        out.append(_map_header(1 + len(rest) + has_points))
        out.append(_encoder.encode("run_id"))
        out.append(_encoder.encode(run_id))
        for name, value in rest:
            out.append(_encoder.encode(name))
            out.append(_encoder.encode(value))
        if has_points:
            out.append(_encoder.encode("packed"))
            _packed(data, out)
    pause()
    body = b"".join(out)
    pause()
    return body


def encode_point_lists(runs: dict[str, RunData]) -> bytes:
    """A request with the runs' metric points only, as lists: what is still to apply after
    a server older than packed ingestion applied a request but ignored its ``packed``."""
    return _encoder.encode(
        IngestRequest(
            [
                IngestRecord(run_id, metrics=IngestMetrics(**data.metric_lists()))
                for run_id, data in runs.items()
                if data.points
            ]
        )
    )

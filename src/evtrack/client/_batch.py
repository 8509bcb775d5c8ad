"""Reading spooled frames back and turning a range of them into one ingest request body.

This runs on the sender thread, next to a training loop that shares the GIL with it. The
work is therefore cut into short pieces (a few hundred frames, a few thousand column items)
with a ``pause()`` between them, which sleeps briefly so a waiting training thread gets the
GIL within tens of microseconds instead of the interpreter's 5 ms switch interval. Runs of
single-point frames, the bulk of any spool, are decoded with ``struct.iter_unpack`` and
``zip`` rather than a Python loop per point.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec

from evtrack.client._format import (
    DATA_START,
    FRAME_HEADER,
    FRAME_OVERHEAD,
    POINT,
    POINT_FRAME,
    POINT_FRAME_SIZE,
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
)
from evtrack.client._spool import AckState, SegmentReader
from evtrack.wire.ingest import IngestKeyValue, IngestRunEnd, IngestRunStart

Pause = Callable[[], None]

BULK_FRAMES = 256
COLUMN_CHUNK = 2048
_POINT_TYPE = b"m"

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
    """One run's share of a batch, as the columns and lists of an ``IngestRecord``."""

    __slots__ = ("end", "keys", "params", "start", "steps", "tags", "timestamps", "values")

    def __init__(self) -> None:
        self.keys: list[str] = []
        self.values: list[float] = []
        self.timestamps: list[int] = []
        self.steps: list[int] = []
        self.params: list[IngestKeyValue] = []
        self.tags: list[IngestKeyValue] = []
        self.start: IngestRunStart | None = None
        self.end: IngestRunEnd | None = None


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
    buf = cursor.buf
    keys, runs_by_idx = cursor.keys, cursor.runs
    batch = Batch(cursor.seq, start, start)
    runs = batch.runs
    max_points = limits.max_points if limits else 1 << 62
    max_bytes = limits.max_bytes if limits else 1 << 62
    max_runs = limits.max_runs if limits else 1 << 62
    size = 0
    pos = start
    frames = 0

    def run_data(idx: int) -> RunData | None:
        run_id = runs_by_idx.get(idx)
        if run_id is None:
            raise CorruptSpool(f"segment {cursor.seq}: run index {idx} used before interned")
        target = batch.skipped if run_id in dead else runs
        data = target.get(run_id)
        if data is None:
            if len(runs) >= max_runs and target is runs:
                return None
            data = target[run_id] = RunData()
        return data

    try:
        while pos < limit:
            if batch.points >= max_points or size >= max_bytes:
                break
            if pos + FRAME_OVERHEAD > limit:
                break
            length = FRAME_HEADER.unpack_from(buf, pos)[0]
            if length == 0:
                break
            kind = buf[pos + FRAME_OVERHEAD]
            if kind == T_POINT:
                room = min((limit - pos) // POINT_FRAME_SIZE, max_points - batch.points)
                n = min(room, BULK_FRAMES)
                kinds = buf[pos + FRAME_OVERHEAD : pos + n * POINT_FRAME_SIZE : POINT_FRAME_SIZE]
                n = len(kinds) - len(kinds.lstrip(_POINT_TYPE))
                block = buf[pos : pos + n * POINT_FRAME_SIZE]
                cols = list(zip(*POINT_FRAME.iter_unpack(block), strict=True))
                run_col = cols[3]
                first = run_col[0]
                if run_col.count(first) == n:
                    data = run_data(first)
                    if data is None:
                        break
                    key_ids = cols[4]
                    data.keys.extend(map(keys.__getitem__, key_ids))
                    data.values.extend(cols[5])
                    data.timestamps.extend(cols[6])
                    data.steps.extend(cols[7])
                else:
                    taken = 0
                    for i in range(n):
                        data = run_data(run_col[i])
                        if data is None:
                            break
                        data.keys.append(keys[cols[4][i]])
                        data.values.append(cols[5][i])
                        data.timestamps.append(cols[6][i])
                        data.steps.append(cols[7][i])
                        taken += 1
                    if taken < n:
                        n = taken
                        pos += n * POINT_FRAME_SIZE
                        batch.points += n
                        batch.data_frames += n
                        break
                pos += n * POINT_FRAME_SIZE
                batch.points += n
                batch.data_frames += n
                size += n * 24
                frames += n
                pause()
                continue
            payload = buf[pos + FRAME_OVERHEAD : pos + FRAME_OVERHEAD + length]
            if kind in STRUCTURAL:
                if kind == T_SEAL:
                    pos += FRAME_OVERHEAD + length
                    break
                if pos >= cursor.scanned:
                    _intern(cursor, kind, payload)
                pos += FRAME_OVERHEAD + length
                continue
            ref = REF.unpack_from(payload)[1]
            if kind == T_ARTIFACT:
                run_id = runs_by_idx.get(ref)
                if run_id is None:
                    raise CorruptSpool(f"segment {cursor.seq}: run index {ref} not interned")
                target = batch.skipped_artifacts if run_id in dead else batch.artifacts
                target.append((run_id, _artifact_decoder.decode(payload[REF.size :])))
            elif kind == T_POINTS:
                _, idx, ts, step, count = POINTS_HEAD.unpack_from(payload)
                data = run_data(idx)
                if data is None:
                    break
                if batch.points and batch.points + count > max_points:
                    break
                items = list(
                    zip(*POINTS_ITEM.iter_unpack(payload[POINTS_HEAD.size :]), strict=True)
                )
                if items:
                    data.keys.extend(map(keys.__getitem__, items[0]))
                    data.values.extend(items[1])
                    data.timestamps.extend([ts] * count)
                    data.steps.extend([step] * count)
                batch.points += count
                size += count * 24
            else:
                data = run_data(ref)
                if data is None:
                    break
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
                    raise CorruptSpool(f"segment {cursor.seq}: unknown record type {kind}")
                size += length
            batch.data_frames += 1
            pos += FRAME_OVERHEAD + length
            frames += 1
            if frames % 64 == 0:
                pause()
    except (KeyError, IndexError, ValueError, struct.error, msgspec.DecodeError) as exc:
        raise CorruptSpool(f"segment {cursor.seq} at offset {pos}: {exc!r}") from exc
    cursor.scanned = max(cursor.scanned, pos)
    batch.end = pos
    return batch


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


def _column(items: list[Any], out: list[bytes | memoryview], pause: Pause) -> None:
    """Encode a list as a msgpack array in pieces, so no single encode call holds the GIL
    for long; each piece's own array header is cut off and one header covers them all."""
    out.append(_array_header(len(items)))
    for i in range(0, len(items), COLUMN_CHUNK):
        part = items[i : i + COLUMN_CHUNK]
        encoded = _encoder.encode(part)
        out.append(memoryview(encoded)[len(_array_header(len(part))) :])
        pause()


def encode_request(runs: dict[str, RunData], pause: Pause) -> bytes:
    """The msgpack body of ``IngestRequest(records=[...])``, one record per run, built
    piecewise; byte for byte what ``msgspec`` would produce (fields in struct order)."""
    out: list[bytes | memoryview] = [_map_header(1), _encoder.encode("records")]
    out.append(_array_header(len(runs)))
    for run_id, data in runs.items():
        rest: list[tuple[str, Any]] = []
        if data.params:
            rest.append(("params", data.params))
        if data.tags:
            rest.append(("tags", data.tags))
        if data.start is not None:
            rest.append(("start", data.start))
        if data.end is not None:
            rest.append(("end", data.end))
        has_metrics = bool(data.keys)
        out.append(_map_header(1 + has_metrics + len(rest)))
        out.append(_encoder.encode("run_id"))
        out.append(_encoder.encode(run_id))
        if has_metrics:
            out.append(_encoder.encode("metrics"))
            out.append(_map_header(4))
            for name, column in (
                ("keys", data.keys),
                ("values", data.values),
                ("timestamps", data.timestamps),
                ("steps", data.steps),
            ):
                out.append(_encoder.encode(name))
                _column(column, out, pause)
        for name, value in rest:
            out.append(_encoder.encode(name))
            out.append(_encoder.encode(value))
    return b"".join(out)

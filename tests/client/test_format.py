"""The spool format on its own (no server): encoding, torn tails, resumption."""

from __future__ import annotations

import math
from pathlib import Path

import msgspec
import pytest

from evtrack.client import Client
from evtrack.client._batch import (
    CorruptSpool,
    Cursor,
    Limits,
    RunData,
    decode_range,
    encode_request,
    no_pause,
    recover,
)
from evtrack.client._format import DATA_START
from evtrack.client._spool import AckState, SegmentReader, client_folders, list_segments
from evtrack.wire.ingest import IngestRequest

from ._helpers import Point, log_mixed, packed_points, value_bits


def _spooled_client(spool: Path) -> Client:
    # Nothing listens on port 9; adoption off: the test reads the files itself.
    return Client("http://127.0.0.1:9", spool_dir=spool, adopt_orphans=False)


def _steps(data: RunData) -> list[int]:
    return [step for part in data.steps for step in part.tolist()]


def _cursor(spool: Path) -> Cursor:
    [folder] = client_folders(spool)
    seq = list_segments(folder)[0]
    return Cursor(seq, SegmentReader(folder / f"seg-{seq:08d}.log"), AckState())


@pytest.mark.parametrize(
    ("step", "timestamp", "message"),
    [
        (2**63, 1, "step must be a 64-bit integer"),
        (-(2**63) - 1, 1, "step must be a 64-bit integer"),
        (10**30, 1, "step must be a 64-bit integer"),
        (0, -1, "timestamp must be milliseconds"),
        (0, 2**63, "timestamp must be milliseconds"),
    ],
)
def test_points_the_server_would_refuse_fail_at_the_call_and_are_not_spooled(
    spool: Path, step: int, timestamp: int, message: str
) -> None:
    """The server's int64 rules hold in the client too: a bad point raises where it is
    logged, on the hot path (a known key) and the first-sight path alike, and nothing of it
    reaches the spool, where it would get its whole batch refused later."""
    client = _spooled_client(spool)
    try:
        run = client.start_run(experiment_id="1")
        with pytest.raises(ValueError, match=message):
            run.log_metric("fresh", 1.0, step=step, timestamp=timestamp)  # first sight
        run.log_metric("known", 1.0, step=0, timestamp=1)
        with pytest.raises(ValueError, match=message):
            run.log_metric("known", 1.0, step=step, timestamp=timestamp)  # hot path
        with pytest.raises(ValueError, match=message):
            run.log_metrics({"known": 1.0, "other": 2.0}, step=step, timestamp=timestamp)
        run.log_metric("known", 2.0, step=1, timestamp=2)
        with client._lock:
            assert client._writer is not None
            end = client._writer.pos
        cursor = _cursor(spool)
        batch = decode_range(cursor, DATA_START, end, Limits(), no_pause)
        decoded = msgspec.msgpack.decode(encode_request(batch.runs, no_pause), type=IngestRequest)
        [record] = decoded.records
        assert record.packed is not None
        assert packed_points(record.packed) == [
            Point("known", 1.0, 1, 0),
            Point("known", 2.0, 2, 1),
        ]
        cursor.reader.close()
    finally:
        client.close(0.2)


def test_a_range_decodes_to_the_request_msgspec_would_build(spool: Path) -> None:
    client = _spooled_client(spool)
    try:
        run = client.start_run(experiment_name="fmt", run_name="r", tags={"t": "1"})
        other = client.start_run(experiment_id="7")
        for i in range(5000):
            run.log_metric("loss", i / 7, step=i, timestamp=1000 + i)
            if i % 100 == 0:
                other.log_metric("acc", -i, step=i, timestamp=5)
        run.log_metrics({"a": math.nan, "b": math.inf, "c": 0.0}, step=9, timestamp=77)
        run.log_params({"lr": 0.1})
        run.set_tags({"x": "y"})
        other.end("KILLED")
        with client._lock:
            assert client._writer is not None
            end = client._writer.pos
        cursor = _cursor(spool)
        batch = decode_range(cursor, DATA_START, end, Limits(), no_pause)
        assert batch.end == end
        body = encode_request(batch.runs, no_pause)
        decoded = msgspec.msgpack.decode(body, type=IngestRequest)
        assert msgspec.msgpack.encode(decoded) == body  # byte-compatible with msgspec
        records = {r.run_id: r for r in decoded.records}
        main, side = records[run.run_id], records[other.run_id]
        assert main.start is not None and main.start.experiment_name == "fmt"
        assert [t.key for t in main.start.tags] == ["t"]
        assert main.metrics is None and main.packed is not None
        points = packed_points(main.packed)
        assert [p.key for p in points[:5000]] == ["loss"] * 5000
        assert points[4999].step == 4999 and points[0].timestamp == 1000
        assert [p.key for p in points[5000:]] == ["a", "b", "c"]
        assert math.isnan(points[5000].value) and points[5001].value == math.inf
        assert main.packed.names == ["loss", "a", "b", "c"]  # the keys used, in first use
        assert [(p.key, p.value) for p in main.params] == [("lr", "0.1")]
        assert side.start is not None and side.start.experiment_id == "7"
        assert side.end is not None and side.end.status == "KILLED"
        assert side.packed is not None and len(packed_points(side.packed)) == 50
        assert side.packed.names == ["acc"]
        assert batch.points == 5053
        cursor.reader.close()
    finally:
        client.close(0.2)


def test_limits_cut_batches_at_frame_boundaries(spool: Path) -> None:
    client = _spooled_client(spool)
    try:
        run = client.start_run()
        for i in range(1000):
            run.log_metric("m", float(i), step=i)
        assert client._writer is not None
        end = client._writer.pos
        cursor = _cursor(spool)
        seen, start = [], DATA_START
        while start < end:
            batch = decode_range(cursor, start, end, Limits(max_points=300), no_pause)
            assert batch.points <= 300
            record = batch.runs[run.run_id]
            seen.extend(_steps(record))
            start = batch.end
        assert seen == list(range(1000))
        cursor.reader.close()
    finally:
        client.close(0.2)


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_a_torn_last_frame_ends_the_segment(spool: Path, damage: str) -> None:
    """A frame cut short (or garbled) by a crash is where the readable data ends; every
    complete frame before it is still delivered."""
    client = _spooled_client(spool)
    run = client.start_run()
    for i in range(100):
        run.log_metric("m", float(i), step=i)
    assert client._writer is not None
    end = client._writer.pos
    client._writer.mm[end - 41 : end] = (
        b"\x00" * 41 if damage == "truncate" else client._writer.mm[end - 41 : end - 1] + b"!"
    )
    [folder] = client_folders(spool)
    cursor = Cursor(1, SegmentReader(folder / "seg-00000001.log"), AckState())
    valid_end = recover(cursor, no_pause)
    assert valid_end == end - 41
    batch = decode_range(cursor, DATA_START, valid_end, Limits(), no_pause)
    assert _steps(batch.runs[run.run_id]) == list(range(99))
    cursor.reader.close()
    client._abandoned = True
    client.close(0.2)


def test_segment_rolls_lose_nothing(spool: Path) -> None:
    """Many small segments, rolled while the sender prepares spares ahead: every point is
    in some segment, in order, and none was dropped."""
    client = Client(
        "http://127.0.0.1:9", spool_dir=spool, adopt_orphans=False, segment_bytes=64 * 1024
    )
    try:
        run = client.start_run()
        n = 100_000  # ~4 MB: some 60 segments
        for i in range(n):
            run.log_metric("m", float(i), step=i)
        assert client.stats().dropped == 0
        with client._lock:
            client._seal_writer()  # as close() would
        [folder] = client_folders(spool)
        steps: list[int] = []
        for seq in list_segments(folder):
            reader = SegmentReader(folder / f"seg-{seq:08d}.log")
            cursor = Cursor(seq, reader, AckState())
            end = recover(cursor, no_pause)
            batch = decode_range(cursor, DATA_START, end, None, no_pause)
            if run.run_id in batch.runs:
                steps.extend(_steps(batch.runs[run.run_id]))
            reader.close()
        assert len(list_segments(folder)) > 50
        assert steps == list(range(n))
    finally:
        client._abandoned = True
        client.close(0.2)


def _decode_all(
    cursor: Cursor, end: int, limits: Limits
) -> tuple[dict[str, list[Point]], list[tuple[int, int]]]:
    """Cut ``[DATA_START, end)`` into batches as the sender does, and read each request
    body back: the points per run, and the ranges. Checks on the way that bodies are what
    msgspec would encode and that a recorded range, decoded again without limits (a resend
    after a crash), gives the same body byte for byte."""
    points: dict[str, list[Point]] = {}
    ranges = []
    start = DATA_START
    while start < end:
        batch = decode_range(cursor, start, end, limits, no_pause)
        assert batch.end > start
        assert len(batch.runs) <= limits.max_runs
        body = encode_request(batch.runs, no_pause)
        decoded = msgspec.msgpack.decode(body, type=IngestRequest)
        assert msgspec.msgpack.encode(decoded) == body
        again = decode_range(cursor, batch.start, batch.end, None, no_pause)
        assert encode_request(again.runs, no_pause) == body
        # The lists form (for servers older than packed points) carries the same points.
        lists = encode_request(batch.runs, no_pause, packed=False)
        as_lists = msgspec.msgpack.decode(lists, type=IngestRequest)
        assert msgspec.msgpack.encode(as_lists) == lists
        got = 0
        for record, listed in zip(decoded.records, as_lists.records, strict=True):
            assert record.metrics is None and listed.packed is None
            if record.packed is not None:
                record_points = packed_points(record.packed)
                assert record.packed.names == list(dict.fromkeys(p.key for p in record_points))
                assert listed.metrics is not None
                m = listed.metrics
                columns = zip(m.keys, m.values, m.timestamps, m.steps, strict=True)
                assert value_bits([Point(*c) for c in columns]) == value_bits(record_points)
                points.setdefault(record.run_id, []).extend(record_points)
                got += len(record_points)
        assert got == batch.points <= limits.max_points
        ranges.append((batch.start, batch.end))
        start = batch.end
    return points, ranges


@pytest.mark.parametrize(
    "limits",
    [Limits(), Limits(max_points=777), Limits(max_points=5000, max_runs=2)],
    ids=["default", "777-points", "2-runs"],
)
def test_mixed_frames_of_several_runs_decode_to_exactly_the_logged_points(
    spool: Path, limits: Limits
) -> None:
    """Single points and log_metrics calls of several shapes, from three runs taking turns
    and then in long stretches, with NaN, infinities, -0.0 and subnormals: every batch's
    packed arrays, read back, are exactly the points logged, bit for bit and in order,
    however the limits cut the range."""
    client = _spooled_client(spool)
    try:
        runs = [client.start_run(experiment_id="1") for _ in range(3)]
        expected = log_mixed(runs, 1500)
        assert client._writer is not None
        end = client._writer.pos
        cursor = _cursor(spool)
        got, ranges = _decode_all(cursor, end, limits)
        assert {run_id: value_bits(p) for run_id, p in got.items()} == {
            run_id: value_bits(p) for run_id, p in expected.items()
        }
        if limits.max_points < 50_000 or limits.max_runs < 3:
            assert len(ranges) > 3
        # Decoded batches hold copies, never views of the map: it closes while they live.
        batch = decode_range(cursor, DATA_START, end, None, no_pause)
        assert cursor.reader.mm is not None
        cursor.reader.mm.close()  # BufferError if any array still pointed into it
        assert sum(data.points for data in batch.runs.values()) == batch.points
        cursor.reader.close()
    finally:
        client.close(0.2)


@pytest.mark.parametrize("damage", ["key id", "points count", "point length"])
def test_undecodable_point_frames_are_corrupt_spool(spool: Path, damage: str) -> None:
    """A point frame naming a key the segment never interned, an ``M`` frame whose count
    disagrees with its length, or an ``m`` frame of the wrong length: CorruptSpool (the
    delivery copies the range to rejected/), never wrong points."""
    client = _spooled_client(spool)
    try:
        run = client.start_run()
        run.log_metrics({"a": 1.0, "b": 2.0}, step=0)
        for i in range(10):
            run.log_metric("a", float(i), step=i)
        assert client._writer is not None
        mm = client._writer.mm
        at = client._writer.pos
        if damage == "points count":
            run.log_metrics({"a": 1.0, "b": 2.0}, step=1)
            mm[at + 8 + 1 + 4 + 8 + 8] = 3  # count: 3 items in a frame sized for 2
        else:
            run.log_metric("a", 1.0, step=11)
            if damage == "key id":
                mm[at + 8 + 1 + 4] = 99  # key id 99 was never interned
            else:
                mm[at] = 34  # length 34, not 33
        end = client._writer.pos
        cursor = _cursor(spool)
        with pytest.raises(CorruptSpool):
            decode_range(cursor, DATA_START, end, Limits(), no_pause)
        cursor.reader.close()
    finally:
        client._abandoned = True
        client.close(0.2)

"""The spool format on its own (no server): encoding, torn tails, resumption."""

from __future__ import annotations

import math
from pathlib import Path

import msgspec
import pytest

from evtrack.client import Client
from evtrack.client._batch import Cursor, Limits, decode_range, encode_request, no_pause, recover
from evtrack.client._format import DATA_START
from evtrack.client._spool import AckState, SegmentReader, client_folders, list_segments
from evtrack.wire.ingest import IngestRequest


def _spooled_client(spool: Path) -> Client:
    # Nothing listens on port 9; adoption off: the test reads the files itself.
    return Client("http://127.0.0.1:9", spool_dir=spool, adopt_orphans=False)


def _cursor(spool: Path) -> Cursor:
    [folder] = client_folders(spool)
    seq = list_segments(folder)[0]
    return Cursor(seq, SegmentReader(folder / f"seg-{seq:08d}.log"), AckState())


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
        assert main.metrics is not None
        assert main.metrics.keys[:5000] == ["loss"] * 5000
        assert main.metrics.steps[4999] == 4999 and main.metrics.timestamps[0] == 1000
        assert main.metrics.keys[5000:] == ["a", "b", "c"]
        assert math.isnan(main.metrics.values[5000]) and main.metrics.values[5001] == math.inf
        assert [(p.key, p.value) for p in main.params] == [("lr", "0.1")]
        assert side.start is not None and side.start.experiment_id == "7"
        assert side.end is not None and side.end.status == "KILLED"
        assert side.metrics is not None and len(side.metrics.values) == 50
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
            seen.extend(record.steps)
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
    assert batch.runs[run.run_id].steps == list(range(99))
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
                steps.extend(batch.runs[run.run_id].steps)
            reader.close()
        assert len(list_segments(folder)) > 50
        assert steps == list(range(n))
    finally:
        client._abandoned = True
        client.close(0.2)

"""Packed metric arrays through the real server: what the spool held is what the server keeps.

The sender sends every run's points as ``IngestRecord.packed`` (little-endian arrays). These
tests log every framing the spool knows (single points, ``log_metrics`` of several shapes,
several runs taking turns, long stretches of one shape) with values that are easy to get
wrong (NaN, infinities, -0.0, subnormals) and read them back through the MLflow API and the
event log.
"""

from __future__ import annotations

import math
import struct
from pathlib import Path
from typing import Any

import msgspec
import requests
from _support.server import EvtrackServer

from evtrack.client import Client
from evtrack.client._batch import Cursor, Limits, decode_range, encode_request, no_pause, recover
from evtrack.client._format import DATA_START
from evtrack.client._spool import (
    AckState,
    LockedFolder,
    SegmentReader,
    client_folders,
    list_segments,
    segment_path,
)
from evtrack.client._sync import sync_spool
from evtrack.client._transport import Transport
from evtrack.wire.ingest import INGEST_PATH

from ._helpers import (
    Point,
    create_experiment,
    history,
    log_mixed,
    logged_points,
    value_bits,
    wait_for,
)

DOUBLE_MAX = 1.7976931348623157e308


def _as_stored(value: float) -> float:
    """What the server keeps of a logged value: infinities clamped, as MLflow does."""
    if math.isinf(value):
        return math.copysign(DOUBLE_MAX, value)
    return value


def _bits(value: float) -> bytes:
    return struct.pack("<d", value)


def _series(url: str, run_id: str, key: str, n: int) -> list[dict[str, Any]]:
    """get-history of one series, once the read model holds its ``n`` points."""
    got: list[dict[str, Any]] = []

    def complete() -> bool:
        got[:] = history(url, run_id, key)
        return len(got) >= n

    wait_for(complete, 60, f"{key} of run {run_id} in the read model")
    return got


def _check_history(url: str, run_id: str, points: list[Point]) -> None:
    """Every series of the run, read through get-history, is exactly ``points``."""
    by_key: dict[str, list[Point]] = {}
    for p in points:
        by_key.setdefault(p.key, []).append(p)
    for key, series in by_key.items():
        want = sorted((p.step, p.timestamp, _bits(_as_stored(p.value))) for p in series)
        have = sorted(
            (
                m["step"],
                m["timestamp"],
                _bits(math.nan if m["value"] == "NaN" else float(m["value"])),
            )
            for m in _series(url, run_id, key, len(series))
        )
        assert have == want, f"{key} of run {run_id}"


def test_mixed_frames_arrive_exactly_as_logged(evtrack_server: EvtrackServer, spool: Path) -> None:
    """Three runs, every framing, batches cut at 997 points (mid-stretch, mid-run): the log
    holds exactly the logged points per run, and every series reads back bit for bit."""
    url = evtrack_server.url
    exp = create_experiment(url)
    with Client(url, spool_dir=spool, batch_max_points=997, batch_interval=3600) as client:
        runs = [client.start_run(experiment_id=exp) for _ in range(3)]
        expected = log_mixed(runs, 1000, long_runs=3000)
        assert client.flush(60)
        stats = client.stats()
    total = sum(len(p) for p in expected.values())
    assert (stats.delivered_points, stats.rejected_points, stats.dropped) == (total, 0, 0)
    assert stats.requests >= total // 997
    for run_id, points in expected.items():
        logged, events = logged_points(evtrack_server.dsn, run_id)
        assert logged == len(points)
        assert events > 1
        _check_history(url, run_id, points)


def test_a_recorded_packed_range_is_resent_exactly_once(
    evtrack_server: EvtrackServer, spool: Path
) -> None:
    """The server applied two packed batches; the process died before acknowledging the
    second, whose range is still marked in flight. ``evtrack sync`` decodes that range
    again, sends it under its key (the server answers from its idempotency table, the
    resent body is the same byte for byte), then sends the rest: each point once."""
    url = evtrack_server.url
    exp = create_experiment(url)
    writer = Client("http://127.0.0.1:9", spool_dir=spool, adopt_orphans=False)
    runs = [writer.start_run(experiment_id=exp) for _ in range(2)]
    expected = log_mixed(runs, 800, long_runs=1500)
    writer.close(0.2)  # nobody listens on port 9: everything stays in the spool

    [path] = client_folders(spool)
    [seq] = list_segments(path)
    cursor = Cursor(seq, SegmentReader(segment_path(path, seq)), AckState())
    end = recover(cursor, no_pause)
    limits = Limits(max_points=1000)
    first = decode_range(cursor, DATA_START, end, limits, no_pause)
    second = decode_range(cursor, first.end, end, limits, no_pause)
    assert DATA_START < first.end < second.end < end
    folder = LockedFolder.try_lock(path)
    assert folder is not None
    transport = Transport(url, user=str(folder.meta().get("user") or "") or None)
    try:
        for batch in (first, second):
            key = f"{path.name}:{seq}:{batch.start}-{batch.end}"
            body = encode_request(batch.runs, no_pause)
            response = transport.post_ingest(INGEST_PATH, body, key, 30)
            assert response.status == 200, response.message
    finally:
        transport.close()
        cursor.reader.close()
        folder.release()
    applied = first.points + second.points
    assert sum(logged_points(evtrack_server.dsn, r.run_id)[0] for r in runs) == applied
    # Killed after the second batch's 200 and before its ack:
    (path / f"seg-{seq:08d}.ack").write_text(f"{first.end} {second.start} {second.end}\n")

    report = sync_spool(spool, url, say=lambda _: None)
    assert report.ok and report.delivered == [path.name]
    for run_id, points in expected.items():
        assert logged_points(evtrack_server.dsn, run_id)[0] == len(points)
        _check_history(url, run_id, points)


def test_a_deleted_runs_points_are_set_aside_and_the_rest_delivered(
    evtrack_server: EvtrackServer, spool: Path
) -> None:
    """One of two runs is deleted on the server while the client logs to both: the server
    refuses the batch, the client sets the deleted run's points aside in rejected/ (as
    lists, exactly the logged points) and delivers the other run's, each once."""
    url = evtrack_server.url
    exp = create_experiment(url)
    with Client(url, spool_dir=spool, batch_max_points=2000, batch_interval=3600) as client:
        keep, gone = (client.start_run(experiment_id=exp) for _ in range(2))
        gone.log_metric("first", 1.0, step=0, timestamp=1)
        assert client.flush(30)
        requests.post(
            f"{url}/api/2.0/mlflow/runs/delete", json={"run_id": gone.run_id}, timeout=30
        ).raise_for_status()
        expected = log_mixed([keep, gone], 300, long_runs=600)
        assert client.flush(60)
        stats = client.stats()
    assert logged_points(evtrack_server.dsn, keep.run_id)[0] == len(expected[keep.run_id])
    assert logged_points(evtrack_server.dsn, gone.run_id)[0] == 1
    set_aside: dict[str, list[Point]] = {}
    for path in sorted((spool / "rejected").glob("*.dead.msgpack")):
        for run_id, record in msgspec.msgpack.decode(path.read_bytes()).items():
            m = record["metrics"]
            columns = zip(m["keys"], m["values"], m["timestamps"], m["steps"], strict=True)
            set_aside.setdefault(run_id, []).extend(Point(*c) for c in columns)
    assert set(set_aside) == {gone.run_id}
    assert value_bits(set_aside[gone.run_id]) == value_bits(expected[gone.run_id])
    assert stats.rejected_points == len(expected[gone.run_id])
    _check_history(url, keep.run_id, expected[keep.run_id])

"""Down-sampling for charts (get-history-bulk-interval): bucket arithmetic, and the overview
path for long series, which must keep both ends and respect max_results without reading
every point."""

from __future__ import annotations

import itertools
import uuid

import msgspec
import pytest
import requests
from _support.server import EvtrackServer

from evtrack.queries.metric_samples import bucket_starts, sample_rows


@pytest.mark.parametrize(
    ("total", "buckets"), [(10, 4), (7, 7), (3, 10), (100, 7), (2501, 2500), (1, 1)]
)
def test_buckets_match_ntile(total: int, buckets: int) -> None:
    starts = bucket_starts(total, buckets)
    assert len(starts) == min(total, buckets)
    assert starts[0] == 0 and starts == sorted(set(starts))
    sizes = [b - a for a, b in zip(starts, [*starts[1:], total], strict=True)]
    assert max(sizes) - min(sizes) <= 1  # NTILE: near-equal buckets, bigger ones first
    assert sizes == sorted(sizes, reverse=True)


def test_sampling_keeps_first_and_last_and_the_limit() -> None:
    rows = list(range(1000))
    for limit in (1, 2, 3, 10, 999, 1000, 5000):
        picked = sample_rows(rows, limit)
        assert len(picked) == min(limit, 1000)
        assert picked[-1] == 999
        if limit > 1:
            assert picked[0] == 0
        assert picked == sorted(picked)


def _ingest(server: EvtrackServer, run_id: str, steps: range) -> None:
    record = {
        "run_id": run_id,
        "start": {"experiment_name": "sampling"},
        "metrics": {
            "keys": ["loss"] * len(steps),
            "values": [float(s) for s in steps],
            "timestamps": [1000 + s for s in steps],
            "steps": list(steps),
        },
    }
    resp = requests.post(
        f"{server.url}/api/2.0/evtrack/ingest",
        data=msgspec.msgpack.encode([record]),
        headers={"Content-Type": "application/msgpack"},
    )
    assert resp.status_code == 200, resp.text


def _sampled(server: EvtrackServer, run_id: str, **params: object) -> list[dict[str, object]]:
    resp = requests.get(
        f"{server.url}/api/2.0/mlflow/metrics/get-history-bulk-interval",
        params={"run_ids": run_id, "metric_key": "loss", **params},
    )
    assert resp.status_code == 200, resp.text
    metrics: list[dict[str, object]] = resp.json().get("metrics", [])
    return metrics


def test_long_series_are_sampled_from_the_overview(shared_server: EvtrackServer) -> None:
    run_id = uuid.uuid4().hex
    for start in range(0, 200_000, 50_000):  # four requests, so the overview folds across chunks
        _ingest(shared_server, run_id, range(start, start + 50_000))
    for limit in (10, 320, 2500):
        points = _sampled(shared_server, run_id, max_results=limit)
        steps = [int(p["step"]) for p in points]  # type: ignore[call-overload]
        assert len(points) == limit
        assert steps[0] == 0 and steps[-1] == 199_999  # both ends, always
        assert steps == sorted(steps)
        gaps = [b - a for a, b in itertools.pairwise(steps[:-1])]  # the last may be replaced
        assert max(gaps) <= 2 * 200_000 / limit + 64  # evenly spread across the series
    zoomed = _sampled(shared_server, run_id, max_results=100, start_step=50_000, end_step=150_000)
    zsteps = [int(p["step"]) for p in zoomed]  # type: ignore[call-overload]
    assert 90 <= len(zoomed) <= 100
    assert all(50_000 <= s <= 150_000 for s in zsteps)


def test_short_series_are_sampled_exactly(shared_server: EvtrackServer) -> None:
    run_id = uuid.uuid4().hex
    _ingest(shared_server, run_id, range(1000))
    points = _sampled(shared_server, run_id, max_results=7)
    assert [int(p["step"]) for p in points] == [0, 143, 286, 429, 572, 715, 999]  # type: ignore[call-overload]

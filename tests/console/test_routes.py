"""The console's JSON routes and page plumbing over plain HTTP: the min/max buckets of a long
series, the status snapshot and its stream, the event stream's filters, static files, and
errors shown as pages."""

from __future__ import annotations

import itertools
import math
import re
import time
from collections.abc import Iterator
from typing import Any

import msgspec
import numpy as np
import pytest
import requests

from ._seed import LONG_POINTS, MODEL, SPIKE_STEP, SPIKE_VALUE, Account, Seeded


def _get(seeded: Seeded, path: str, who: Account | None = None, **params: Any) -> Any:
    return requests.get(
        f"{seeded.url}{path}",
        params=params or None,
        auth=(who or seeded.admin).auth,
        timeout=60,
    )


def _buckets(seeded: Seeded, **params: Any) -> dict[str, Any]:
    response = _get(seeded, "/api/2.0/evtrack/metrics/buckets", seeded.bob, **params)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


@pytest.fixture(scope="module")
def long_series() -> tuple[np.ndarray, np.ndarray]:
    """The long series as the seed logged it (steps, values), in the order logged."""
    steps = np.arange(LONG_POINTS, dtype=np.int64)
    values = np.array(
        [1.0 / (1.0 + s / 5000.0) + 0.02 * math.sin(s / 40.0) for s in range(LONG_POINTS)]
    )
    return np.append(steps, SPIKE_STEP), np.append(values, SPIKE_VALUE)


def _check_buckets(
    answer: dict[str, Any], steps: np.ndarray, values: np.ndarray, low: int, high: int
) -> None:
    """Each bucket holds exactly the points of its step range, with their extremes; the
    buckets are ordered, disjoint, and cover every point of the window."""
    order = np.argsort(steps, kind="stable")
    steps, values = steps[order], values[order]
    inside = (steps >= low) & (steps <= high)
    assert answer["window"] == {"start_step": low, "end_step": high, "points": int(inside.sum())}
    b = answer["buckets"]
    assert sum(b["count"]) == inside.sum()
    assert all(x <= y for x, y in zip(b["first_step"], b["last_step"], strict=True))
    assert all(y < x for y, x in zip(b["last_step"], b["first_step"][1:], strict=False))
    starts = np.searchsorted(steps, b["first_step"], side="left")
    ends = np.searchsorted(steps, b["last_step"], side="right")
    for i, (start, end) in enumerate(zip(starts, ends, strict=True)):
        assert end - start == b["count"][i]
        chosen, where = values[start:end], steps[start:end]
        assert b["min"][i] == pytest.approx(chosen.min(), rel=1e-12)
        assert b["max"][i] == pytest.approx(chosen.max(), rel=1e-12)
        assert chosen[where == b["max_step"][i]].max() == pytest.approx(b["max"][i], rel=1e-12)


def test_buckets_of_a_million_points_keep_the_spike(
    seeded: Seeded, long_series: tuple[np.ndarray, np.ndarray]
) -> None:
    steps, values = long_series
    answer = _buckets(seeded, run_id=seeded.long_run_id, key="loss", buckets=1000)
    assert answer["mode"] == "buckets"
    assert answer["series"] == {
        "points": LONG_POINTS + 1,
        "first_step": 0,
        "last_step": LONG_POINTS - 1,
    }
    assert len(answer["buckets"]["count"]) == 1000
    _check_buckets(answer, steps, values, 0, LONG_POINTS - 1)
    top = int(np.argmax(answer["buckets"]["max"]))
    assert answer["buckets"]["max"][top] == SPIKE_VALUE
    assert answer["buckets"]["max_step"][top] == SPIKE_STEP
    # Every other bucket stays near the curve: the spike is one bucket wide, not smeared.
    assert sorted(answer["buckets"]["max"])[-2] < 2


def test_a_zoomed_window_is_bucketed_then_raw(
    seeded: Seeded, long_series: tuple[np.ndarray, np.ndarray]
) -> None:
    steps, values = long_series
    low, high = SPIKE_STEP - 5000, SPIKE_STEP + 5000
    answer = _buckets(
        seeded,
        run_id=seeded.long_run_id,
        key="loss",
        start_step=low,
        end_step=high,
        buckets=7,
    )
    assert answer["mode"] == "buckets" and len(answer["buckets"]["count"]) == 7
    _check_buckets(answer, steps, values, low, high)

    low, high = SPIKE_STEP - 10, SPIKE_STEP + 10
    raw = _buckets(seeded, run_id=seeded.long_run_id, key="loss", start_step=low, end_step=high)
    assert raw["mode"] == "raw"
    assert raw["window"]["points"] == 22  # 21 steps and the spike's second value
    assert raw["points"]["steps"] == sorted(raw["points"]["steps"])
    assert raw["points"]["steps"].count(SPIKE_STEP) == 2
    assert max(raw["points"]["values"]) == SPIKE_VALUE
    forced = _buckets(
        seeded,
        run_id=seeded.long_run_id,
        key="loss",
        start_step=low,
        end_step=high,
        raw_limit=0,
    )
    assert forced["mode"] == "buckets"
    _check_buckets(forced, steps, values, low, high)


def test_buckets_of_odd_values_and_missing_series(seeded: Seeded) -> None:
    logged = requests.post(
        f"{seeded.url}/api/2.0/mlflow/runs/log-batch",
        json={
            "run_id": seeded.run_id,
            "metrics": [
                {"key": "odd", "value": v, "timestamp": 1, "step": s}
                for s, v in [(0, 1.0), (1, "NaN"), (2, "Infinity"), (3, "-Infinity"), (3, 2.0)]
            ],
        },
        auth=seeded.admin.auth,
        timeout=30,
    )
    assert logged.status_code == 200, logged.text
    raw = _buckets(seeded, run_id=seeded.run_id, key="odd")
    assert raw["points"] == {
        "steps": [0, 1, 2, 3, 3],
        "values": [1.0, None, 1.7976931348623157e308, -1.7976931348623157e308, 2.0],
    }
    bucketed = _buckets(seeded, run_id=seeded.run_id, key="odd", buckets=4, raw_limit=0)
    assert bucketed["buckets"]["count"] == [1, 1, 1, 2]
    assert bucketed["buckets"]["min"][1] is None  # NaN only: nothing to draw
    assert bucketed["buckets"]["min"][3] == -1.7976931348623157e308
    assert bucketed["buckets"]["max"][3] == 2.0

    missing = _buckets(seeded, run_id=seeded.run_id, key="never-logged")
    assert missing["series"] is None and missing["points"] == {"steps": [], "values": []}

    listed = _get(seeded, "/api/2.0/evtrack/metrics/series", run_id=seeded.long_run_id).json()
    assert [(s["key"], s["points"]) for s in listed["series"]] == [
        ("loss", LONG_POINTS + 1),
        ("lr", 1),
    ]


@pytest.mark.parametrize(
    ("params", "status"),
    [
        ({"key": "loss", "buckets": "0"}, 400),
        ({"key": "loss", "buckets": "10001"}, 400),
        ({"key": "loss", "raw_limit": "-1"}, 400),
        ({"key": "loss", "start_step": "10", "end_step": "5"}, 400),
        ({"key": "loss", "start_step": "ten"}, 400),
        ({"key": "loss", "end_step": str(2**63)}, 400),
        ({}, 400),
    ],
)
def test_bad_bucket_requests_are_refused(
    seeded: Seeded, params: dict[str, str], status: int
) -> None:
    response = _get(seeded, "/api/2.0/evtrack/metrics/buckets", run_id=seeded.long_run_id, **params)
    assert response.status_code == status, response.text
    assert response.json()["error_code"] == "INVALID_PARAMETER_VALUE"


def test_buckets_of_an_unknown_run(seeded: Seeded) -> None:
    response = _get(seeded, "/api/2.0/evtrack/metrics/buckets", run_id="f" * 32, key="loss")
    assert response.status_code == 404
    assert response.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST"


def test_status_snapshot(seeded: Seeded) -> None:
    response = _get(seeded, "/api/2.0/evtrack/status")
    assert response.status_code == 200, response.text
    snapshot = response.json()
    assert {m["name"] for m in snapshot["read_models"]} == {
        "auth",
        "experiments",
        "logged_models",
        "metrics",
        "registry",
        "runs",
    }
    assert snapshot["database"]["ok"] is True and snapshot["database"]["latency_ms"] >= 0
    assert snapshot["artifacts"]["ok"] is True and snapshot["artifacts"]["kind"] == "local"
    assert snapshot["artifacts"]["free_bytes"] > 0
    assert snapshot["ingest"]["events_per_s"] is not None  # measured over at least a tick
    assert abs(snapshot["generated_at"] - time.time() * 1000) < 10_000
    assert snapshot["parked"]["total"] == 0
    # For operators only.
    assert _get(seeded, "/api/2.0/evtrack/status", seeded.bob).status_code == 403
    assert requests.get(f"{seeded.url}/api/2.0/evtrack/status", timeout=30).status_code == 401


def _sse(
    seeded: Seeded, path: str, seconds: float, quiet: float = 1.0, **params: Any
) -> Iterator[dict[str, Any]]:
    """The events a stream sends within ``seconds`` (or until it is ``quiet`` that long)."""
    deadline = time.monotonic() + seconds
    with requests.get(
        f"{seeded.url}{path}",
        params=params,
        auth=seeded.admin.auth,
        stream=True,
        timeout=(10, quiet),
    ) as response:
        assert response.status_code == 200, response.text
        assert response.headers["Content-Type"].startswith("text/event-stream")
        try:
            for line in response.iter_lines():
                if line.startswith(b"data: "):
                    yield msgspec.json.decode(line[6:])
                if time.monotonic() > deadline:
                    return
        except requests.exceptions.ConnectionError:  # a second without data: quiet
            return


def test_status_stream_sends_a_snapshot_a_second(seeded: Seeded) -> None:
    received = []
    for snapshot in _sse(seeded, "/api/2.0/evtrack/status/stream", 3.5, quiet=2.5):
        received.append((time.monotonic(), snapshot["sequence"]))
    assert len(received) >= 3, received
    sequences = [s for _, s in received]
    assert sequences == sorted(set(sequences))
    gaps = [b - a for (a, _), (b, _) in itertools.pairwise(received)]
    assert max(gaps) < 2.0, gaps


def test_event_stream_filters_by_model_and_experiment(seeded: Seeded) -> None:
    by_model = list(_sse(seeded, "/api/2.0/evtrack/events/stream", 10, model=MODEL, recent="5000"))
    assert {e["stream_id"] for e in by_model} == {by_model[0]["stream_id"]}
    assert by_model[0]["stream_id"].startswith("registered_model-")
    assert {"RegisteredModelCreated", "TransitionApproved", "ModelAliasSet"} <= {
        e["type"] for e in by_model
    }
    by_experiment = list(
        _sse(
            seeded,
            "/api/2.0/evtrack/events/stream",
            10,
            experiment_id=seeded.experiment_id,
            recent="5000",
        )
    )
    streams = {e["stream_id"] for e in by_experiment}
    assert f"run-{seeded.run_id}" in streams
    assert streams <= {f"experiment-{seeded.experiment_id}", f"run-{seeded.run_id}"}, streams

    for params in ({"experiment_id": "abc"}, {"recent": "0"}, {"recent": "x"}):
        refused = _get(seeded, "/api/2.0/evtrack/events/stream", **params)
        assert refused.status_code == 400, (params, refused.text)
        assert refused.json()["error_code"] == "INVALID_PARAMETER_VALUE"


def _scripts(html: str) -> list[str]:
    return re.findall(r'<script type="module" src="([^"]+)"', html)


def test_static_files_are_cached_compressed_and_small(seeded: Seeded) -> None:
    page = _get(seeded, "/console/status")
    styles = re.findall(r'<link rel="stylesheet" href="([^"]+)"', page.text)
    scripts = _scripts(page.text)
    assert styles and scripts
    for url in styles + scripts:
        first = requests.get(f"{seeded.url}{url}", timeout=30)  # public: no credentials
        assert first.status_code == 200
        assert first.headers["Cache-Control"] == "public, max-age=31536000, immutable"
        assert first.headers["Content-Encoding"] == "gzip"  # requests asks for gzip
        again = requests.get(
            f"{seeded.url}{url}", headers={"If-None-Match": first.headers["ETag"]}, timeout=30
        )
        assert again.status_code == 304
    plain = requests.get(f"{seeded.url}/console/static/status.js", timeout=30)
    assert plain.headers["Cache-Control"] == "no-cache"  # an unversioned URL is revalidated
    assert plain.headers["Content-Type"].startswith("text/javascript")

    # A console page's JavaScript, its imports included, stays far below 150 KB gzipped.
    for path in ("/console/status", "/console/feed", "/console/requests"):
        total = 0
        for url in {*_scripts(_get(seeded, path).text), "/console/static/live.js"}:
            total += len(requests.get(f"{seeded.url}{url}", timeout=30).content)
        assert total < 150_000, (path, total)
    explorer = _get(seeded, "/console/explorer", run_id=seeded.long_run_id)
    assert _scripts(explorer.text)


def test_console_errors_are_pages(seeded: Seeded) -> None:
    missing = _get(seeded, "/console/model", name="no-such-model")
    assert missing.status_code == 404
    assert missing.headers["Content-Type"].startswith("text/html")
    assert "no-such-model" in missing.text
    assert "script-src 'self'" in missing.headers["Content-Security-Policy"]
    unknown_run = _get(seeded, "/console/explorer", run_id="f" * 32)
    assert unknown_run.status_code == 404 and "<h1>404" in unknown_run.text
    forbidden = _get(seeded, "/console/status", seeded.bob)
    assert forbidden.status_code == 403 and "admin" in forbidden.text
    # A bad instant is said on the page, which still shows the timeline.
    bad = _get(seeded, "/console/model", name=MODEL, at="yesterday")
    assert bad.status_code == 200 and "Invalid instant" in bad.text
    assert 'id="timeline"' in bad.text
    redirected = _get(seeded, "/console")
    assert redirected.url.endswith("/console/") and redirected.status_code == 200
    # Markup in what users wrote is shown as text, never run.
    seeded.call(
        seeded.admin,
        "POST",
        "mlflow/registered-models/create",
        {"name": "<img src=x onerror=alert(1)>"},
    )
    listed = _get(seeded, "/console/models").text
    assert "<img src=x" not in listed and "&lt;img src=x onerror=alert(1)&gt;" in listed


def test_the_feed_shows_a_reader_what_they_may_read(seeded: Seeded) -> None:
    page = _get(seeded, "/console/feed", seeded.bob, model=MODEL)
    assert page.status_code == 200, page.text[:300]
    assert page.text.count('data-type="ModelAliasSet"') >= 3
    # Accounts (users, grants) are an admin's: in the admin's feed, not in bob's.
    assert 'data-stream="user-' in _get(seeded, "/console/feed").text
    assert 'data-stream="user-' not in _get(seeded, "/console/feed", seeded.bob).text

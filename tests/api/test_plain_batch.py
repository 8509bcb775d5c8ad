"""The fast path for everyday log_batch bodies takes only what it can check itself."""

from __future__ import annotations

import json

import pytest

from evtrack.api import _plain_batch as plain_batch


def _body(**fields: object) -> bytes:
    return json.dumps({"run_id": "a" * 32, **fields}).encode()


def test_plain_points_become_columns() -> None:
    points = [
        {"key": "loss", "value": 1, "timestamp": 5, "step": 2},
        {"key": "acc", "value": 0.5, "timestamp": 6},
    ]
    batch = plain_batch.decode(_body(metrics=points))
    assert batch is not None and batch.fields() == {"run_id": "a" * 32}
    points = batch.points()
    assert points is not None
    assert (points.keys, points.values, points.timestamps, points.steps) == (
        ["loss", "acc"],
        [1.0, 0.5],
        [5, 6],
        [2, 0],
    )


@pytest.mark.parametrize(
    "points",
    [
        [{"key": "k", "value": "NaN", "timestamp": 1}],  # proto JSON spelling: general path
        [{"key": "k", "value": 1.0, "timestamp": "1"}],  # int64 as a string
        [{"key": "k", "value": 1.0, "timestamp": 1, "model_id": "m-1"}],  # more fields
        [{"key": "k", "value": 1.0}],  # missing timestamp: the general path words the error
        [{"key": "k", "value": 1.0, "timestamp": 1, "step": None}],
    ],
)
def test_anything_unusual_goes_to_the_general_path(points: list[dict[str, object]]) -> None:
    assert plain_batch.decode(_body(metrics=points)) is None


def test_plain_decoding_leaves_the_rules_to_the_domain() -> None:
    """Decoding only shapes the points; a negative timestamp or a bad key is the domain's to
    refuse (tests/domain/test_metric_rules.py), whichever path decoded the body."""
    batch = plain_batch.decode(_body(metrics=[{"key": "bad$key", "value": 1.0, "timestamp": -1}]))
    assert batch is not None
    points = batch.points()
    assert points is not None and points.keys == ["bad$key"] and points.timestamps == [-1]

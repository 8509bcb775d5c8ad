"""The fast path for everyday log_batch bodies takes only what it can check itself."""

from __future__ import annotations

import json

import pytest

from evtrack.api import _plain_batch as plain_batch
from evtrack.errors import EvtrackError


def _body(**fields: object) -> bytes:
    return json.dumps({"run_id": "a" * 32, **fields}).encode()


def test_plain_points_become_columns() -> None:
    points = [
        {"key": "loss", "value": 1, "timestamp": 5, "step": 2},
        {"key": "acc", "value": 0.5, "timestamp": 6},
    ]
    batch = plain_batch.decode(_body(metrics=points))
    assert batch is not None and batch.fields() == {"run_id": "a" * 32}
    columns = plain_batch.metric_columns(batch.metrics)
    assert columns is not None and columns is not False
    assert (columns.keys, columns.values, columns.timestamps, columns.steps) == (
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


def test_negative_timestamps_and_bad_keys() -> None:
    batch = plain_batch.decode(_body(metrics=[{"key": "k", "value": 1.0, "timestamp": -1}]))
    assert batch is not None and plain_batch.metric_columns(batch.metrics) is False
    batch = plain_batch.decode(_body(metrics=[{"key": "bad$key", "value": 1.0, "timestamp": 1}]))
    assert batch is not None
    with pytest.raises(EvtrackError):
        plain_batch.metric_columns(batch.metrics)

"""The metric rules, once for every route: no database, no server."""

from __future__ import annotations

import math

import pytest

from evtrack.domain import plan
from evtrack.domain.commands import LogRunData, MetricPoints
from evtrack.errors import EvtrackError
from evtrack.events import DOUBLE_MAX, INT64_MAX, INT64_MIN


def _plan(points: MetricPoints, *, single: bool = False) -> None:
    plan(LogRunData(run_id="r" * 32, metrics=points, single=single))


def _points(**fields: list[object]) -> MetricPoints:
    base: dict[str, list[object]] = {
        "keys": ["loss", "loss"],
        "values": [1.0, 2.0],
        "timestamps": [1, 2],
        "steps": [0, 1],
    }
    base.update(fields)
    return MetricPoints(**base)  # type: ignore[arg-type]


def _error(points: MetricPoints, *, single: bool = False) -> str:
    with pytest.raises(EvtrackError) as caught:
        _plan(points, single=single)
    assert caught.value.http_status == 400
    return caught.value.message


def test_well_typed_points_in_range_are_accepted() -> None:
    _plan(_points(steps=[INT64_MIN, INT64_MAX], timestamps=[0, INT64_MAX]))


@pytest.mark.parametrize(
    ("fields", "path", "rule"),
    [
        ({"timestamps": [1, 2**63]}, "metrics[1].timestamp", "nonnegative long (64-bit integer)"),
        ({"timestamps": [-1, 2]}, "metrics[0].timestamp", "nonnegative long (64-bit integer)"),
        ({"steps": [0, 10**30]}, "metrics[1].step", "valid long (64-bit integer)"),
        ({"steps": [0, 1e30]}, "metrics[1].step", "valid long (64-bit integer)"),
        ({"steps": [-(2**63) - 1, 0]}, "metrics[0].step", "valid long (64-bit integer)"),
        ({"steps": [0, math.inf]}, "metrics[1].step", "valid long (64-bit integer)"),
        ({"values": [1.0, "x"]}, "metrics[1].value", "valid double"),
        ({"keys": ["ok", "bad$key"]}, "metrics[1].name", "Names may only contain"),
        ({"keys": ["ok", "a/../b"]}, "metrics[1].name", "must not resolve to other names"),
        ({"keys": ["ok", "k" * 251]}, "Metric name", "maximum length of 250"),
    ],
)
def test_the_first_bad_point_is_named_in_mlflows_words(
    fields: dict[str, list[object]], path: str, rule: str
) -> None:
    message = _error(_points(**fields))
    assert path in message and rule in message


def test_single_point_routes_name_fields_without_an_index() -> None:
    message = _error(
        MetricPoints(keys=["a"], values=[1.0], timestamps=[1], steps=[10**30]), single=True
    )
    assert "'step'" in message and "[0]" not in message


def test_infinities_are_clamped_and_nan_kept() -> None:
    from evtrack.domain._metric_rules import check_columns

    columns = check_columns(
        ["a", "a", "a"],
        [math.inf, -math.inf, math.nan],
        [1, 2, 3],
        [0, 0, 0],
        point_path=lambda i: f"metrics[{i}]",
    )
    assert columns.values[:2] == [DOUBLE_MAX, -DOUBLE_MAX] and math.isnan(columns.values[2])


def test_fractional_steps_truncate_like_mlflow() -> None:
    from evtrack.domain._metric_rules import check_point

    assert check_point("a", 1, 5.9, 2.5) == ("a", 1.0, 5, 2)


def test_batch_limits_are_the_domains() -> None:
    n = 1001
    message = _error(
        MetricPoints(keys=["a"] * n, values=[1.0] * n, timestamps=[1] * n, steps=[0] * n)
    )
    assert "at most 1000 metrics" in message

"""The rules for metric points, written once for every route that logs them.

``log-metric``, ``log-batch`` (plain and general bodies) and native ingestion all end here:
keys must be valid entity names of at most 250 characters; values are doubles, NaN kept and
infinities clamped to the largest double as MLflow stores them; timestamps are non-negative
int64 milliseconds; steps are int64. The list form (MLflow's routes, at most a thousand
points) is checked column by column in C and only walked point by point to word the first
error as MLflow does; the array form (ingestion, up to a million points) is checked with
numpy.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from evtrack.domain._validation import (
    MAX_DATASET_DIGEST_SIZE,
    MAX_DATASET_NAME_SIZE,
    MAX_ENTITY_KEY_LENGTH,
    check_length,
    invalid_value,
    missing_value,
    validate_entity_name,
)
from evtrack.errors import EvtrackError, invalid
from evtrack.events import DOUBLE_MAX, INT64_MAX, INT64_MIN, MetricColumns
from evtrack.events.arrays import F64, I64

_TIMESTAMP_RULE = "Timestamp must be a nonnegative long (64-bit integer) "
_STEP_RULE = "Step must be a valid long (64-bit integer)."


def _join(path: str, leaf: str) -> str:
    return f"{path}.{leaf}" if path else leaf


def _is_number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float))


def _as_int64(value: Any) -> int | None:
    """``value`` as an int64 when it is a whole number within range, else None."""
    if not _is_number(value):
        return None
    if isinstance(value, float) and not value.is_integer():
        # MLflow's JSON parser truncates a fractional step or timestamp; so does evtrack.
        value = math.trunc(value) if math.isfinite(value) else None
    if value is None:
        return None
    whole = int(value)
    return whole if INT64_MIN <= whole <= INT64_MAX else None


def clamp(value: float) -> float:
    """A double as MLflow stores it: infinities become the largest finite double."""
    return math.copysign(DOUBLE_MAX, value) if math.isinf(value) else value


def check_key(key: str | None, path: str) -> str:
    """A metric key: a safe entity name of at most 250 characters."""
    key = validate_entity_name(key, path, kind="metric")
    check_length("Metric name", MAX_ENTITY_KEY_LENGTH, key)
    return key


def check_point(
    key: Any, value: Any, timestamp: Any, step: Any, path: str = ""
) -> tuple[str, float, int, int]:
    """One point, checked and normalised, or MLflow's error for its first bad field."""
    if key is not None and not isinstance(key, str):
        raise invalid(invalid_value(_join(path, "key"), key, "Metric key must be a string."))
    key = validate_entity_name(key, _join(path, "name"), kind="metric")
    if value is None:
        raise invalid(missing_value(_join(path, "value")))
    if not _is_number(value):
        raise invalid(
            invalid_value(
                _join(path, "value"),
                value,
                f"(timestamp={timestamp}). "
                "Please specify value as a valid double (64-bit floating point)",
            )
        )
    stamp = _as_int64(timestamp)
    if stamp is None or stamp < 0:
        raise invalid(
            invalid_value(
                _join(path, "timestamp"),
                timestamp,
                f"metric '{key}' (value={value}). {_TIMESTAMP_RULE}",
            )
        )
    whole_step = _as_int64(step)
    if whole_step is None:
        raise invalid(
            invalid_value(
                _join(path, "step"), step, f"metric '{key}' (value={value}). {_STEP_RULE}"
            )
        )
    check_length("Metric name", MAX_ENTITY_KEY_LENGTH, key)
    return key, clamp(float(value)), stamp, whole_step


def check_dataset_ref(name: str | None, digest: str | None) -> None:
    if name is not None:
        check_length("dataset_name", MAX_DATASET_NAME_SIZE, name)
    if digest is not None:
        check_length("dataset_digest", MAX_DATASET_DIGEST_SIZE, digest)


def check_columns(
    keys: Sequence[Any],
    values: Sequence[Any],
    timestamps: Sequence[Any],
    steps: Sequence[Any],
    *,
    point_path: Callable[[int], str],
    model_ids: Sequence[str | None] | None = None,
    dataset_names: Sequence[str | None] | None = None,
    dataset_digests: Sequence[str | None] | None = None,
) -> MetricColumns:
    """Points in columns, checked as a whole when they are well typed (the usual case) and
    point by point otherwise, so that the error names the first bad point as MLflow does."""
    n = len(keys)
    if not (len(values) == len(timestamps) == len(steps) == n):
        raise invalid("Metric keys, values, timestamps and steps must have equal lengths.")
    if not (_well_typed(keys, values, timestamps, steps) and _valid_keys(keys)):
        checked = [
            check_point(keys[i], values[i], timestamps[i], steps[i], point_path(i))
            for i in range(n)
        ]
        keys = [c[0] for c in checked]
        values = [c[1] for c in checked]
        timestamps = [c[2] for c in checked]
        steps = [c[3] for c in checked]
    else:
        values = [clamp(float(v)) for v in values]
    for i in range(n) if dataset_names or dataset_digests else ():
        check_dataset_ref(
            dataset_names[i] if dataset_names else None,
            dataset_digests[i] if dataset_digests else None,
        )
    return MetricColumns(
        keys=list(keys),
        values=list(values),
        timestamps=list(timestamps),
        steps=list(steps),
        model_ids=list(model_ids) if model_ids and any(model_ids) else None,
        dataset_names=list(dataset_names) if dataset_names and any(dataset_names) else None,
        dataset_digests=list(dataset_digests) if dataset_digests and any(dataset_digests) else None,
    )


def _well_typed(
    keys: Sequence[Any], values: Sequence[Any], timestamps: Sequence[Any], steps: Sequence[Any]
) -> bool:
    """Every field has its exact type and every integer is in range: the fast path applies."""
    if not keys:
        return True
    return (
        all(type(k) is str for k in keys)
        and all(type(v) is float or type(v) is int for v in values)
        and all(type(t) is int for t in timestamps)
        and all(type(s) is int for s in steps)
        and min(timestamps) >= 0
        and max(timestamps) <= INT64_MAX
        and min(steps) >= INT64_MIN
        and max(steps) <= INT64_MAX
    )


def _valid_keys(keys: Sequence[str]) -> bool:
    """Whether every distinct key is valid (the per-point walk words the error if not)."""
    try:
        for key in set(keys):
            check_key(key, "key")
    except EvtrackError:
        return False
    return True


class KeyChecker:
    """Checks each metric key once per request, however many points use it."""

    def __init__(self) -> None:
        self._seen: set[str] = set()

    def check(self, names: Sequence[str], where: str) -> None:
        for name in set(names) - self._seen:
            check_key(name, where)
            self._seen.add(name)


def check_integer_list(items: Sequence[int], where: str) -> I64:
    """A list of integers as int64, or an error naming the field."""
    try:
        return np.asarray(items, dtype=np.int64)
    except OverflowError:
        raise invalid(f"{where}: timestamps and steps must fit in 64-bit integers.") from None


def check_arrays(values: F64, timestamps: I64, where: str) -> F64:
    """Array-form points (ingestion): timestamps non-negative; the values, clamped."""
    if len(timestamps) and bool((timestamps < 0).any()):
        raise invalid(f"{where}: timestamps must be non-negative.")
    infinite = np.isinf(values)
    if infinite.any():
        return np.where(infinite, np.copysign(DOUBLE_MAX, values), values)
    return values

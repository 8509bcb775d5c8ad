"""Metric points of an ingest request, checked and gathered per run as numpy arrays.

Records may carry points as lists (``metrics``) or packed arrays (``packed``); both are
checked with vectorised operations (lengths, key indexes, non-negative timestamps, infinities
clamped as MLflow stores them) and each run's points from every record of the request become
one :class:`PackedMetrics`, so the event written for the run holds four byte strings.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from evtrack.domain._validation import (
    DOUBLE_MAX,
    MAX_ENTITY_KEY_LENGTH,
    check_length,
    validate_entity_name,
)
from evtrack.errors import invalid
from evtrack.events import PackedMetrics
from evtrack.events._arrays import F64, I64, U32, pack
from evtrack.wire.ingest import IngestMetrics, IngestPackedMetrics


@dataclass(frozen=True, slots=True)
class CheckedPoints:
    names: list[str]
    key_index: U32
    values: F64
    timestamps: I64
    steps: I64

    def __len__(self) -> int:
        return len(self.values)


class KeyChecker:
    """Validates each metric key once per request, however many points use it."""

    def __init__(self) -> None:
        self._seen: set[str] = set()

    def check(self, names: Sequence[str], where: str) -> None:
        for name in set(names) - self._seen:
            validate_entity_name(name, where, kind="metric")
            check_length("Metric name", MAX_ENTITY_KEY_LENGTH, name)
            self._seen.add(name)


def from_lists(m: IngestMetrics, where: str) -> CheckedPoints:
    n = len(m.keys)
    if not (len(m.values) == len(m.timestamps) == len(m.steps) == n):
        raise invalid(f"{where}: keys, values, timestamps and steps must have equal lengths.")
    names = list(dict.fromkeys(m.keys))
    position = {name: i for i, name in enumerate(names)}
    try:
        timestamps = np.asarray(m.timestamps, dtype=np.int64)
        steps = np.asarray(m.steps, dtype=np.int64)
    except OverflowError:
        raise invalid(f"{where}: timestamps and steps must fit in 64-bit integers.") from None
    return _checked(
        CheckedPoints(
            names,
            np.fromiter(map(position.__getitem__, m.keys), dtype=np.uint32, count=n),
            np.asarray(m.values, dtype=np.float64),
            timestamps,
            steps,
        ),
        where,
    )


def from_packed(p: IngestPackedMetrics, where: str) -> CheckedPoints:
    if len(p.values) % 8:
        raise invalid(f"{where}.values must be a whole number of float64 (8 bytes each).")
    n = len(p.values) // 8
    if len(p.timestamps) != 8 * n or len(p.steps) != 8 * n or len(p.key_index) != 4 * n:
        raise invalid(
            f"{where}: key_index (uint32), values (float64), timestamps and steps (int64) "
            "must hold the same number of points."
        )
    key_index = np.frombuffer(p.key_index, dtype="<u4").astype(np.uint32)
    if n and int(key_index.max()) >= len(p.names):
        raise invalid(f"{where}.key_index refers past the end of names.")
    return _checked(
        CheckedPoints(
            list(p.names),
            key_index,
            np.frombuffer(p.values, dtype="<f8").astype(np.float64),
            np.frombuffer(p.timestamps, dtype="<i8").astype(np.int64),
            np.frombuffer(p.steps, dtype="<i8").astype(np.int64),
        ),
        where,
    )


def _checked(points: CheckedPoints, where: str) -> CheckedPoints:
    if len(points) and bool((points.timestamps < 0).any()):
        raise invalid(f"{where}: timestamps must be non-negative.")
    values = points.values
    infinite = np.isinf(values)
    if infinite.any():
        values = np.where(infinite, np.copysign(DOUBLE_MAX, values), values)
    return CheckedPoints(points.names, points.key_index, values, points.timestamps, points.steps)


@dataclass
class RunPoints:
    """Every point of one run in one request, from however many records."""

    names: list[str] = field(default_factory=list)
    _position: dict[str, int] = field(default_factory=dict)
    _parts: list[CheckedPoints] = field(default_factory=list)

    def add(self, points: CheckedPoints) -> None:
        if not len(points):
            return
        remap = np.fromiter(
            (self._position.setdefault(name, len(self._position)) for name in points.names),
            dtype=np.uint32,
            count=len(points.names),
        )
        self.names = list(self._position)
        self._parts.append(
            CheckedPoints(
                self.names,
                remap[points.key_index],
                points.values,
                points.timestamps,
                points.steps,
            )
        )

    @property
    def count(self) -> int:
        return sum(len(p) for p in self._parts)

    def packed(self) -> PackedMetrics | None:
        """One packed column set; names no point uses are dropped."""
        if not self._parts:
            return None
        key_index = np.concatenate([p.key_index for p in self._parts])
        names = self.names
        in_use = np.bincount(key_index, minlength=len(names)) > 0
        if not in_use.all():
            new_position = (np.cumsum(in_use) - 1).astype(np.uint32)
            key_index = new_position[key_index]
            names = [name for name, used in zip(names, in_use.tolist(), strict=True) if used]
        return pack(
            names,
            key_index,
            np.concatenate([p.values for p in self._parts]),
            np.concatenate([p.timestamps for p in self._parts]),
            np.concatenate([p.steps for p in self._parts]),
        )

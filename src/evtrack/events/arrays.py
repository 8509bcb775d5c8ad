"""Metric points of a ``RunDataLogged`` event as numpy arrays, whichever form they travel in.

Events carry points either as :class:`MetricColumns` (lists; what the MLflow routes log, at
most a thousand points) or as :class:`PackedMetrics` (packed arrays; what bulk ingestion
logs). Projectors read both through :class:`MetricArrays`, so the per-point work of a
million-point batch (grouping by key, finding each key's latest point, encoding rows for
COPY) happens inside numpy rather than as Python objects per point.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from evtrack.events.tracking import MetricColumns, PackedMetrics, RunDataLogged

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
U32 = npt.NDArray[np.uint32]

_LE_F64 = np.dtype("<f8")
_LE_I64 = np.dtype("<i8")
_LE_U32 = np.dtype("<u4")


@dataclass(frozen=True, slots=True)
class SeriesPart:
    """The points of one key within one event, in the order they were logged."""

    key: str
    timestamps: I64
    steps: I64
    values: F64
    model_ids: list[str | None] | None = None
    dataset_names: list[str | None] | None = None
    dataset_digests: list[str | None] | None = None

    def __len__(self) -> int:
        return len(self.values)


@dataclass(frozen=True, slots=True)
class MetricArrays:
    """One event's points: ``key_index`` points into ``names``; the rest are parallel."""

    names: list[str]
    key_index: U32
    values: F64
    timestamps: I64
    steps: I64
    model_ids: list[str | None] | None = None
    dataset_names: list[str | None] | None = None
    dataset_digests: list[str | None] | None = None

    def __len__(self) -> int:
        return len(self.values)

    def by_key(self) -> Iterator[SeriesPart]:
        """One part per key, keys in order of first appearance, points in logged order."""
        n = len(self)
        if n == 0:
            return
        index = self.key_index
        lowest, highest = int(index.min()), int(index.max())
        if lowest == highest:  # the common case: one key, no reordering at all
            yield self._part(self.names[lowest], None)
            return
        order = np.argsort(index, kind="stable")
        sorted_index = index[order]
        cuts = np.flatnonzero(sorted_index[1:] != sorted_index[:-1]) + 1
        starts = np.concatenate(([0], cuts))
        ends = np.concatenate((cuts, [n]))
        groups = sorted(
            zip(starts.tolist(), ends.tolist(), strict=True),
            key=lambda se: int(order[se[0]]),  # first appearance: the smallest original index
        )
        for start, end in groups:
            rows = order[start:end]
            yield self._part(self.names[int(sorted_index[start])], rows)

    def _part(self, key: str, rows: npt.NDArray[np.intp] | None) -> SeriesPart:
        if rows is None:
            return SeriesPart(
                key,
                self.timestamps,
                self.steps,
                self.values,
                self.model_ids,
                self.dataset_names,
                self.dataset_digests,
            )
        return SeriesPart(
            key,
            self.timestamps[rows],
            self.steps[rows],
            self.values[rows],
            _pick(self.model_ids, rows),
            _pick(self.dataset_names, rows),
            _pick(self.dataset_digests, rows),
        )


def _pick(column: list[str | None] | None, rows: npt.NDArray[np.intp]) -> list[str | None] | None:
    if column is None:
        return None
    return [column[i] for i in rows.tolist()]


def metric_arrays(event: RunDataLogged) -> MetricArrays | None:
    """The event's points as arrays; None when it carries none."""
    if event.packed_metrics is not None and len(event.packed_metrics):
        return unpack(event.packed_metrics)
    if event.metrics is not None and len(event.metrics):
        return from_columns(event.metrics)
    return None


def unpack(packed: PackedMetrics) -> MetricArrays:
    """Views over the packed bytes (no copy)."""
    return MetricArrays(
        packed.names,
        np.frombuffer(packed.key_index, dtype=_LE_U32).astype(np.uint32, copy=False),
        np.frombuffer(packed.values, dtype=_LE_F64).astype(np.float64, copy=False),
        np.frombuffer(packed.timestamps, dtype=_LE_I64).astype(np.int64, copy=False),
        np.frombuffer(packed.steps, dtype=_LE_I64).astype(np.int64, copy=False),
    )


def from_columns(columns: MetricColumns) -> MetricArrays:
    names = list(dict.fromkeys(columns.keys))
    position = {name: i for i, name in enumerate(names)}
    n = len(columns.keys)
    return MetricArrays(
        names,
        np.fromiter(map(position.__getitem__, columns.keys), dtype=np.uint32, count=n),
        np.asarray(columns.values, dtype=np.float64),
        np.asarray(columns.timestamps, dtype=np.int64),
        np.asarray(columns.steps, dtype=np.int64),
        columns.model_ids,
        columns.dataset_names,
        columns.dataset_digests,
    )


def pack(
    names: Sequence[str], key_index: U32, values: F64, timestamps: I64, steps: I64
) -> PackedMetrics:
    """The packed form of parallel arrays (little-endian, whatever the machine)."""
    return PackedMetrics(
        list(names),
        key_index.astype(_LE_U32, copy=False).tobytes(),
        values.astype(_LE_F64, copy=False).tobytes(),
        timestamps.astype(_LE_I64, copy=False).tobytes(),
        steps.astype(_LE_I64, copy=False).tobytes(),
    )


def lexicographic_extreme(columns: Sequence[npt.NDArray[np.generic]], *, largest: bool) -> int:
    """Index of the smallest (or largest) row ordering by ``columns``, most significant first.

    Ties on every column resolve to the last such row. Each column narrows the candidates
    with one vectorised comparison, so a typical batch (distinct steps) costs one pass.
    """
    candidates = np.arange(len(columns[0]))
    for column in columns:
        values = column[candidates]
        best = values.max() if largest else values.min()
        candidates = candidates[values == best]
        if len(candidates) == 1:
            break
    return int(candidates[-1])


def nan_as_largest(values: F64) -> F64:
    """Values for ordering where NaN sorts above every number (as the read models do)."""
    nans = np.isnan(values)
    return np.where(nans, np.inf, values) if nans.any() else values

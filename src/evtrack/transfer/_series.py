"""Metric series as arrays, and their packing into the chunks an import writes."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from evtrack.domain.commands import PackedPoints

CHUNK_POINTS = 250_000
"""Points per import command: a few MB per event, far below a request's million."""


@dataclass(frozen=True, slots=True)
class Series:
    """Every point of one metric of one run (NaN kept; infinities as the source gave them)."""

    key: str
    values: npt.NDArray[np.float64]
    timestamps: npt.NDArray[np.int64]
    steps: npt.NDArray[np.int64]

    def __len__(self) -> int:
        return len(self.values)


def chunks(series: Sequence[Series], limit: int = CHUNK_POINTS) -> Iterator[PackedPoints]:
    """The run's points as packed chunks of at most ``limit`` points (a longer series is
    split), keys in name order: the same source state always gives the same chunks, so
    their idempotency keys match when an import is repeated or resumed."""
    names: list[str] = []
    parts: list[tuple[int, Series, int, int]] = []
    size = 0
    for s in sorted(series, key=lambda s: s.key):
        start = 0
        while start < len(s):
            take = min(len(s) - start, limit - size)
            if s.key not in names:
                names.append(s.key)
            parts.append((names.index(s.key), s, start, start + take))
            size += take
            start += take
            if size == limit:
                yield _pack(names, parts)
                names, parts, size = [], [], 0
    if parts:
        yield _pack(names, parts)


def _pack(names: list[str], parts: list[tuple[int, Series, int, int]]) -> PackedPoints:
    key_index = np.concatenate(
        [np.full(end - start, index, dtype="<u4") for index, _, start, end in parts]
    )
    return PackedPoints(
        field="import",
        names=list(names),
        key_index=key_index.tobytes(),
        values=np.concatenate([s.values[a:b] for _, s, a, b in parts]).astype("<f8").tobytes(),
        timestamps=np.concatenate([s.timestamps[a:b] for _, s, a, b in parts])
        .astype("<i8")
        .tobytes(),
        steps=np.concatenate([s.steps[a:b] for _, s, a, b in parts]).astype("<i8").tobytes(),
    )


def digest(points: PackedPoints) -> str:
    """A name for a chunk's content."""
    h = hashlib.sha256()
    for part in (
        "\0".join(points.names).encode(),
        points.key_index,
        points.values,
        points.timestamps,
        points.steps,
    ):
        h.update(len(part).to_bytes(8, "little"))
        h.update(part)
    return h.hexdigest()

"""Progress of an import or export on the terminal: runs, points and bytes, with tqdm."""

from __future__ import annotations

import sys
from types import TracebackType
from typing import Any

from tqdm import tqdm


class Progress:
    """Three bars (runs, metric points, artifact bytes) on stderr; silent when disabled."""

    def __init__(self, *, enabled: bool = True, runs_label: str = "runs") -> None:
        options: dict[str, Any] = {"file": sys.stderr, "disable": not enabled, "leave": True}
        self.runs: tqdm[Any] = tqdm(desc=runs_label, unit="run", position=0, **options)
        self.points: tqdm[Any] = tqdm(
            desc="points", unit="pt", unit_scale=True, position=1, **options
        )
        self.bytes: tqdm[Any] = tqdm(
            desc="artifacts", unit="B", unit_scale=True, unit_divisor=1024, position=2, **options
        )

    def write(self, message: str) -> None:
        tqdm.write(message, file=sys.stderr)

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for bar in (self.runs, self.points, self.bytes):
            bar.close()

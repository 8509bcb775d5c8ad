"""Shared pieces of the benchmark harness: result rows, statistics, worker processes.

Everything here is plain standard library (plus psutil where it helps), so the harness runs in
the same environment as the servers it measures.
"""

from __future__ import annotations

import math
import multiprocessing as mp
import os
import queue
import statistics
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

# --------------------------------------------------------------------------------- output

_T0 = time.monotonic()


def say(message: str) -> None:
    """Progress on stderr, with the time since the harness started."""
    print(f"[{time.monotonic() - _T0:7.1f}s] {message}", file=sys.stderr, flush=True)


class BenchmarkError(RuntimeError):
    """A workload could not be measured (server failed, data missing, ...)."""


# --------------------------------------------------------------------------------- stats


def percentile(samples: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100); NaN for no samples."""
    if not samples:
        return math.nan
    s = sorted(samples)
    rank = max(1, math.ceil(p / 100 * len(s)))
    return s[min(rank, len(s)) - 1]


def median(samples: Sequence[float]) -> float:
    return statistics.median(samples) if samples else math.nan


# --------------------------------------------------------------------------------- rows


@dataclass
class Row:
    """One line of the result table.

    ``better`` says which direction is good for evtrack; ``ratio`` is always evtrack's
    advantage (evtrack/mlflow for throughput, mlflow/evtrack for times), so > 1 means evtrack
    is better, and ``ratio_fml`` the same against FastTrackML (the third contender, given by
    keyword so rows without it stay short). Targets are against MLflow. A row passes when every
    target it declares holds. ``fml_missing`` says why FastTrackML has no value (shown in the
    notes under the table).
    """

    workload: str
    metric: str
    unit: str
    mlflow: float | None
    evtrack: float | None
    better: str = "higher"  # or "lower", or "none" (no meaningful ratio)
    min_ratio: float | None = None
    evtrack_max: float | None = None  # absolute bound on evtrack's value
    evtrack_min: float | None = None
    target: str = ""
    verdict: bool | None = None  # explicit pass/miss when not derived from the numbers
    note: str = ""
    fasttrackml: float | None = None
    fml_missing: str = ""

    def _advantage(self, other: float | None) -> float | None:
        e = self.evtrack
        if other is None or e is None or not (math.isfinite(other) and math.isfinite(e)):
            return None
        if self.better == "none":
            return None
        if self.better == "higher":
            return e / other if other > 0 else None
        return other / e if e > 0 else None

    @property
    def ratio(self) -> float | None:
        return self._advantage(self.mlflow)

    @property
    def ratio_fml(self) -> float | None:
        return self._advantage(self.fasttrackml)

    @property
    def passed(self) -> bool | None:
        if self.verdict is not None:
            return self.verdict
        checks: list[bool] = []
        if self.min_ratio is not None:
            r = self.ratio
            checks.append(r is not None and r >= self.min_ratio)
        e = self.evtrack
        if self.evtrack_max is not None:
            checks.append(e is not None and math.isfinite(e) and e <= self.evtrack_max)
        if self.evtrack_min is not None:
            checks.append(e is not None and math.isfinite(e) and e >= self.evtrack_min)
        return all(checks) if checks else None

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["ratio"] = self.ratio
        d["ratio_fml"] = self.ratio_fml
        d["passed"] = self.passed
        return d


def fmt_value(value: float | None, unit: str) -> str:
    if value is None:
        return "—"
    if isinstance(value, float) and math.isnan(value):
        return "n/a"
    if unit == "points/s" or unit == "runs/s":
        return f"{value:,.0f}"
    if unit == "ms":
        if value >= 100:
            return f"{value:,.0f} ms"
        if value >= 10:
            return f"{value:.1f} ms"
        return f"{value:.2f} ms"
    if unit == "s":
        return f"{value:,.2f} s"
    if unit == "MiB":
        return f"{value:,.0f} MiB"
    if unit == "MiB+-":
        return f"{value:+,.1f} MiB"
    if unit == "count":
        return f"{value:,.0f}"
    if unit == "bytes":
        return f"{value:,.0f} B"
    return f"{value:g} {unit}".strip()


def fmt_ratio(ratio: float | None) -> str:
    if ratio is None:
        return "—"
    if ratio >= 100:
        return f"{ratio:,.0f}x"
    if ratio >= 10:
        return f"{ratio:.1f}x"
    return f"{ratio:.2f}x"


def fmt_pass(passed: bool | None) -> str:
    return {True: "pass", False: "MISS", None: "info"}[passed]


HEADER = (
    "workload",
    "metric",
    "mlflow",
    "fasttrackml",
    "evtrack",
    "vs mlflow",
    "vs fml",
    "target",
    "result",
)


def table_cells(rows: Sequence[Row]) -> list[tuple[str, ...]]:
    return [
        (
            r.workload,
            r.metric,
            fmt_value(r.mlflow, r.unit),
            fmt_value(r.fasttrackml, r.unit),
            fmt_value(r.evtrack, r.unit),
            fmt_ratio(r.ratio),
            fmt_ratio(r.ratio_fml),
            r.target,
            fmt_pass(r.passed),
        )
        for r in rows
    ]


def text_table(rows: Sequence[Row]) -> str:
    cells = [HEADER, *table_cells(rows)]
    widths = [max(len(c[i]) for c in cells) for i in range(len(HEADER))]
    right = {2, 3, 4, 5, 6}
    lines = []
    for n, c in enumerate(cells):
        lines.append(
            "  ".join(
                c[i].rjust(widths[i]) if i in right else c[i].ljust(widths[i])
                for i in range(len(c))
            ).rstrip()
        )
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown_table(rows: Sequence[Row]) -> str:
    out = [
        "| " + " | ".join(HEADER) + " |",
        "|" + "|".join(["---", "---", "---:", "---:", "---:", "---:", "---:", "---", "---"]) + "|",
    ]
    for c in table_cells(rows):
        out.append("| " + " | ".join(x.replace("|", "\\|") for x in c) + " |")
    return "\n".join(out)


# --------------------------------------------------------------------------------- workers


@dataclass
class WorkerOutcome:
    results: list[dict[str, Any]]
    t0: float  # time.monotonic() when the workers were released (system-wide clock)
    errors: list[str] = field(default_factory=list)


def _worker_main(
    target: Callable[..., dict[str, Any]],
    index: int,
    args: dict[str, Any],
    go: Any,
    t0_value: Any,
    out: Any,
) -> None:
    def ready() -> float:
        out.put(("ready", index, None))
        if not go.wait(600):
            raise BenchmarkError("never released")
        return float(t0_value.value)

    try:
        result = target(args, ready)
        out.put(("done", index, result))
    except BaseException:
        out.put(("error", index, traceback.format_exc()))


def run_workers(
    target: Callable[..., dict[str, Any]],
    arg_list: Sequence[dict[str, Any]],
    *,
    ready_timeout: float = 180.0,
    run_timeout: float = 600.0,
    on_release: Callable[[], None] | None = None,
) -> WorkerOutcome:
    """Start one spawned process per ``arg_list`` entry, release them together, collect.

    ``target(args, ready)`` does its setup (imports, clients), then calls ``ready()``, which
    blocks until every worker is set up and returns the shared start time (monotonic clock,
    comparable across processes on Linux). It returns a picklable dict.
    """
    ctx = mp.get_context("spawn")
    go = ctx.Event()
    t0_value = ctx.Value("d", 0.0)
    out = ctx.Queue()
    procs = [
        ctx.Process(target=_worker_main, args=(target, i, dict(a), go, t0_value, out), daemon=True)
        for i, a in enumerate(arg_list)
    ]
    for p in procs:
        p.start()
    results: dict[int, dict[str, Any]] = {}
    errors: list[str] = []
    try:
        ready = 0
        deadline = time.monotonic() + ready_timeout
        while ready < len(procs):
            try:
                kind, index, payload = out.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                raise BenchmarkError(
                    f"workers not ready after {ready_timeout:.0f}s ({ready}/{len(procs)})"
                ) from None
            if kind == "ready":
                ready += 1
            elif kind == "error":
                raise BenchmarkError(f"worker {index} failed during setup:\n{payload}")
        t0 = time.monotonic()
        t0_value.value = t0
        go.set()
        if on_release is not None:
            on_release()
        deadline = time.monotonic() + run_timeout
        while len(results) + len(errors) < len(procs):
            try:
                kind, index, payload = out.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                raise BenchmarkError(
                    f"workers did not finish within {run_timeout:.0f}s "
                    f"({len(results)}/{len(procs)} done)"
                ) from None
            if kind == "done":
                results[index] = payload
            elif kind == "error":
                errors.append(f"worker {index}:\n{payload}")
        return WorkerOutcome([results[i] for i in sorted(results)], t0, errors)
    finally:
        for p in procs:
            p.join(timeout=10)
        for p in procs:
            if p.is_alive():
                p.terminate()
                p.join(timeout=5)
        out.close()


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1

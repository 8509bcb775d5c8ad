"""What a log call costs the training thread: evtrack.client vs mlflow's async logging.

Times every single call with ``perf_counter_ns`` (p50/p99 of individual calls, not an
average over a loop), while each client's background machinery runs as it would in
training: evtrack's sender decodes and posts batches to a live server, mlflow's async queue
drains into its store. Also reports how long each needs afterwards to deliver everything
(evtrack ``flush``, mlflow ``flush_async_logging``).

    python benchmarks/client_overhead.py --server http://127.0.0.1:5077
    python benchmarks/client_overhead.py --server URL --mlflow-uri URL  # mlflow to a server

``--mlflow-uri`` defaults to a temporary SQLite store (mlflow 3 refuses new file stores).
Without ``--server`` evtrack's sender has nobody to talk to (an unreachable port), which
measures spooling alone.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable

_ns = time.perf_counter_ns


def measure(call: Callable[[int], None], n: int) -> list[int]:
    """Per-call latencies in ns (the timer's own cost is measured separately)."""
    out = [0] * n
    gc_was = gc.isenabled()
    gc.disable()  # a GC pause is not the logger's cost; both sides get the same treatment
    try:
        for i in range(n):
            t0 = _ns()
            call(i)
            out[i] = _ns() - t0
    finally:
        if gc_was:
            gc.enable()
    return out


def summary(samples: list[int]) -> dict[str, float]:
    s = sorted(samples)
    n = len(s)

    def q(p: float) -> float:
        return s[min(n - 1, int(p * n))] / 1000

    return {
        "p50": q(0.50),
        "p90": q(0.90),
        "p99": q(0.99),
        "p99.9": q(0.999),
        "max": s[-1] / 1000,
        "mean": sum(s) / n / 1000,
    }


def bench_evtrack(server: str, n: int, spool: str) -> tuple[dict[str, float], float]:
    from evtrack.client import Client

    client = Client(server, spool_dir=spool, close_timeout=120)
    run = client.start_run(experiment_name="Default", run_name="client-overhead")
    log_metric = run.log_metric
    for i in range(2000):  # warm up: intern the key, fault in code paths
        log_metric("warmup", 0.1, step=i)
    client.flush(30)
    stats = summary(measure(lambda i: log_metric("loss", 1.0 / (i + 1), step=i), n))
    t0 = time.perf_counter()
    delivered = client.flush(120)
    drain = time.perf_counter() - t0
    run.end()
    client.close(30)
    if not delivered:
        drain = float("nan")
    return stats, drain


def bench_mlflow(uri: str, n: int) -> list[tuple[str, dict[str, float], float]]:
    """mlflow's fluent ``log_metric`` and ``MlflowClient.log_metric(synchronous=False)``,
    both with async logging on (the client call skips per-call run-context resolution, so
    it is mlflow's cheapest path; the fluent call is what most training scripts use)."""
    os.environ["MLFLOW_ENABLE_ASYNC_LOGGING"] = "true"
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    import mlflow
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(uri)
    rows = []
    with mlflow.start_run(run_name="client-overhead") as active:
        for i in range(100):
            mlflow.log_metric("warmup", 0.1, step=i)
        mlflow.flush_async_logging()

        def fluent(i: int) -> None:
            mlflow.log_metric("loss", 1.0 / (i + 1), step=i)

        stats = summary(measure(fluent, n))
        t0 = time.perf_counter()
        mlflow.flush_async_logging()
        rows.append(("mlflow.log_metric (async)", stats, time.perf_counter() - t0))

        client = MlflowClient()
        run_id = active.info.run_id

        def call(i: int) -> None:
            client.log_metric(run_id, "loss2", 1.0 / (i + 1), step=i, synchronous=False)

        stats = summary(measure(call, n))
        t0 = time.perf_counter()
        mlflow.flush_async_logging()
        rows.append(("MlflowClient.log_metric (async)", stats, time.perf_counter() - t0))
    return rows


def bench_lock(n: int) -> dict[str, float]:
    lock = threading.Lock()

    def call(_: int) -> None:
        with lock:
            pass

    return summary(measure(call, n))


def bench_timer(n: int) -> dict[str, float]:
    return summary(measure(lambda _: None, n))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", default=os.environ.get("EVTRACK_SERVER"))
    parser.add_argument("--calls", type=int, default=200_000)
    parser.add_argument("--mlflow-uri", help="default: a temporary SQLite store")
    parser.add_argument(
        "--mlflow-calls",
        type=int,
        default=2000,
        help="calls per mlflow variant (default 2000: mlflow's queue drains at tens of points"
        " per second here, so 200k would take hours)",
    )
    parser.add_argument("--skip-mlflow", action="store_true")
    args = parser.parse_args()

    rows: list[tuple[str, dict[str, float], float | None]] = []
    rows.append(("empty call (timer overhead)", bench_timer(args.calls), None))
    rows.append(("threading.Lock acquire+release", bench_lock(args.calls), None))
    with tempfile.TemporaryDirectory(prefix="evtrack-bench-") as tmp:
        server = args.server or "http://127.0.0.1:9"
        if not args.server:
            print("no --server: evtrack's sender cannot deliver; measuring spooling alone")
        stats, drain = bench_evtrack(server, args.calls, os.path.join(tmp, "spool"))
        rows.append(("evtrack Run.log_metric", stats, drain if args.server else None))
        if not args.skip_mlflow:
            uri = args.mlflow_uri or f"sqlite:///{tmp}/mlflow.db"
            rows.extend(bench_mlflow(uri, args.mlflow_calls))

    cols = ["p50", "p90", "p99", "p99.9", "max", "mean"]
    print(
        f"\nper call in microseconds; evtrack {args.calls} calls, mlflow {args.mlflow_calls}"
        f" calls per variant (python {sys.version.split()[0]}, {os.cpu_count()} CPUs)"
    )
    print(f"{'':34}" + "".join(f"{c:>10}" for c in cols) + f"{'drain s':>10}")
    for name, stats, drained in rows:
        tail = f"{drained:>10.2f}" if drained is not None else f"{'':>10}"
        print(f"{name:34}" + "".join(f"{stats[c]:>10.2f}" for c in cols) + tail)
    named = {name: stats for name, stats, _ in rows}
    ev = named["evtrack Run.log_metric"]
    for name in ("mlflow.log_metric (async)", "MlflowClient.log_metric (async)"):
        ml = named.get(name)
        if ml:
            print(
                f"{name} / evtrack: p50 {ml['p50'] / ev['p50']:.0f}x,"
                f" p99 {ml['p99'] / ev['p99']:.0f}x, mean {ml['mean'] / ev['mean']:.0f}x"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

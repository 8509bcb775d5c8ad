"""(c) Latency of single synchronous ``MlflowClient.log_metric`` calls.

One process, one run per server, ``--log-metric-calls`` (default 2000) sequential calls after
a short warm-up; p50 and p99 of the individual calls (``perf_counter``). This is what an
unbatched training loop waits for on every step.
"""

from __future__ import annotations

import time
from typing import Any

import _mlflow_util as mu
from _common import Row, percentile, say
from _context import Context
from _servers import Server

WARMUP = 20


def measure(ctx: Context, server: Server) -> dict[str, Any]:
    n = ctx.args.log_metric_calls
    client = mu.client(server.url)
    exp = mu.new_experiment(server.url, "bench-c")
    run_id = client.create_run(exp, run_name="log-metric").info.run_id
    for i in range(WARMUP):
        client.log_metric(run_id, "warmup", float(i), step=i)
    lat = []
    for i in range(n):
        t = time.perf_counter()
        client.log_metric(run_id, "loss", 1.0 / (i + 1), step=i)
        lat.append(time.perf_counter() - t)
    history = client.get_metric_history(run_id, "loss")
    out = {
        "p50_ms": percentile(lat, 50) * 1000,
        "p99_ms": percentile(lat, 99) * 1000,
        "calls": n,
        "stored": len(history),
    }
    say(
        f"(c) {server.name}: log_metric p50 {out['p50_ms']:.2f} ms, p99 {out['p99_ms']:.2f} ms"
        f" over {n} calls; history has {len(history)} points"
    )
    return out


def run(ctx: Context) -> None:
    res = {s.name: measure(ctx, s) for s in ctx.servers()}
    m, e = res["mlflow"], res["evtrack"]
    n = ctx.args.log_metric_calls
    ctx.rows += [
        Row(
            "c",
            f"log_metric p50 ({n} calls)",
            "ms",
            m["p50_ms"],
            e["p50_ms"],
            "lower",
            min_ratio=2,
            target="<= 1/2",
        ),
        Row("c", f"log_metric p99 ({n} calls)", "ms", m["p99_ms"], e["p99_ms"], "lower"),
        Row(
            "c",
            "read back = logged",
            "count",
            m["stored"],
            e["stored"],
            "none",
            target=f"= {n}",
            verdict=m["stored"] == e["stored"] == n,
        ),
    ]

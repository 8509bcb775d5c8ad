"""(a) The official mlflow client's ``log_batch`` from many processes at once.

``--procs-a`` processes (default 8), each with its own ``MlflowClient`` and its own run, call
``client.log_batch(run_id, metrics=[1000 Metric])`` in a loop for ``--duration`` seconds.
Every point is distinct (10 keys, steps counting up), so neither server may de-duplicate.
Points/s is acknowledged points over wall time; latency is per successful call. Afterwards
every server must hold exactly the acknowledged points; for evtrack the time until its read
models include them (after the last acknowledgement) is reported as projection lag. The
servers' RSS is sampled throughout for (f).
"""

from __future__ import annotations

import contextlib
import random
import time
from typing import Any

import _mlflow_util as mu
from _common import BenchmarkError, Row, percentile, run_workers, say
from _context import Context
from _servers import (
    LAG_DIAGNOSIS,
    ProjectionWatcher,
    RssSampler,
    Server,
    cpu_note,
    stored_points,
)

KEYS = 10


def worker(args: dict[str, Any], ready: Any) -> dict[str, Any]:
    from mlflow.entities import Metric

    client = mu.client(args["url"])
    run_id, size, duration = args["run_id"], args["batch"], args["duration"]
    keys = [f"m{j}" for j in range(KEYS)]
    per_key = size // KEYS
    rng = random.Random(args["seed"])
    client.get_run(run_id)  # open the connection before the clock starts
    t0 = ready()
    cpu0 = time.process_time()
    deadline = t0 + duration
    lat: list[float] = []
    acked = failures = batch = 0
    first_error = None
    while time.monotonic() < deadline:
        ts = mu.now_ms()
        base = batch * per_key
        metrics = [Metric(keys[j % KEYS], rng.random(), ts, base + j // KEYS) for j in range(size)]
        batch += 1
        t = time.perf_counter()
        try:
            client.log_batch(run_id, metrics=metrics)
        except Exception as exc:
            failures += 1
            first_error = first_error or repr(exc)[:500]
            continue
        lat.append(time.perf_counter() - t)
        acked += size
    return {
        "run_id": run_id,
        "acked": acked,
        "lat": lat,
        "failures": failures,
        "error": first_error,
        "end": time.monotonic(),
        "cpu_s": time.process_time() - cpu0,
    }


def measure(ctx: Context, server: Server) -> dict[str, Any]:
    a = ctx.args
    exp = mu.new_experiment(server.url, "bench-a")
    run_ids = mu.new_runs(server.url, exp, a.procs_a, "log-batch")
    say(f"(a) {server.name}: {a.procs_a} processes x log_batch({a.batch_a}) for {a.duration:.0f}s")
    sampler = RssSampler(server.proc.pid, server.db_url)  # type: ignore[union-attr]
    watcher = ProjectionWatcher(server.db_url) if server.name == "evtrack" else None
    with sampler, watcher or contextlib.nullcontext():
        outcome = run_workers(
            worker,
            [
                {
                    "url": server.url,
                    "run_id": r,
                    "batch": a.batch_a,
                    "duration": a.duration,
                    "seed": i,
                }
                for i, r in enumerate(run_ids)
            ],
            run_timeout=a.duration + 600,
        )
        if outcome.errors:
            raise BenchmarkError("(a) workers failed:\n" + "\n".join(outcome.errors))
        server.check_alive()
        results = outcome.results
        last_ack = max(r["end"] for r in results)
        wall = last_ack - outcome.t0
        lag = None
        if server.name == "evtrack":
            assert watcher is not None
            lag = watcher.lag_after(last_ack, a.lag_timeout)
            if LAG_DIAGNOSIS:
                ctx.note(f"(a) evtrack lag > 1 s; oldest transactions then: {LAG_DIAGNOSIS}")
        t_end = time.monotonic()
    acked = sum(r["acked"] for r in results)
    failures = sum(r["failures"] for r in results)
    lat = [x for r in results for x in r["lat"]]
    stored = stored_points(server.name, ctx.sql(server), run_ids)
    # End to end through the API as well: one series of one run, every page.
    first = results[0]
    api_problem = mu.read_back(server.url, first["run_id"], "m0", first["acked"] // KEYS)
    errors = [r["error"] for r in results if r["error"]]
    out = {
        "acked": acked,
        "stored": stored,
        "api_ok": api_problem is None,
        "api_problem": api_problem,
        "failures": failures,
        "first_error": errors[0] if errors else None,
        "wall_s": wall,
        "points_per_s": acked / wall if wall > 0 else float("nan"),
        "p50_ms": percentile(lat, 50) * 1000,
        "p99_ms": percentile(lat, 99) * 1000,
        "calls": len(lat),
        "lag_s": lag,
        "max_behind": watcher.max_behind() if watcher else None,
        "rss": sampler.summary_between(outcome.t0, t_end),
        "client_cores": sum(r["cpu_s"] for r in results) / wall if wall > 0 else None,
    }
    say(
        f"(a) {server.name}: {out['points_per_s']:,.0f} points/s, p50 {out['p50_ms']:.1f} ms, "
        f"p99 {out['p99_ms']:.1f} ms, acked {acked:,}, stored {stored:,}, failed calls {failures}"
        + (f", projection lag {lag:.2f}s" if lag is not None else "")
    )
    return out


def run(ctx: Context) -> None:
    res = {s.name: measure(ctx, s) for s in ctx.servers()}
    m, e = res["mlflow"], res["evtrack"]
    f = res.get("fasttrackml", {})
    absent = ctx.fml_absent
    ctx.shared["a"] = res
    ctx.shared.setdefault("rss", {})["a"] = {k: v["rss"] for k, v in res.items()}
    n = ctx.args.procs_a
    ctx.rows += [
        Row(
            "a",
            f"log_batch x{n} procs: points/s",
            "points/s",
            m["points_per_s"],
            e["points_per_s"],
            "higher",
            min_ratio=5,
            target=">= 5x",
            fasttrackml=f.get("points_per_s"),
            fml_missing=absent,
        ),
        Row(
            "a",
            "log_batch latency p50",
            "ms",
            m["p50_ms"],
            e["p50_ms"],
            "lower",
            fasttrackml=f.get("p50_ms"),
            fml_missing=absent,
        ),
        Row(
            "a",
            "log_batch latency p99",
            "ms",
            m["p99_ms"],
            e["p99_ms"],
            "lower",
            min_ratio=5,
            target="<= 1/5",
            fasttrackml=f.get("p99_ms"),
            fml_missing=absent,
        ),
        Row(
            "a",
            "stored points after run",
            "count",
            m["stored"],
            e["stored"],
            "none",
            target="= acknowledged",
            verdict=all(r["stored"] == r["acked"] and r["api_ok"] for r in res.values()),
            fasttrackml=f.get("stored"),
            fml_missing=absent,
        ),
        Row(
            "a",
            "projection lag after last ack",
            "s",
            None,
            e["lag_s"],
            "lower",
            note="time until evtrack's read models include every acknowledged point",
            fml_missing="answers after its INSERT commits; nothing to catch up",
        ),
    ]
    for name, r in res.items():
        ctx.note(f"(a) {name}: {cpu_note(r['rss'], r['client_cores'])}")
        ctx.note(
            f"(a) {name}: {r['calls']} calls, acknowledged {r['acked']:,} points, stored "
            f"{r['stored']:,} (API read-back of one series: "
            f"{'as expected' if r['api_ok'] else r['api_problem']}), failed calls {r['failures']}"
            + (f" (first error: {r['first_error']})" if r["first_error"] else "")
        )

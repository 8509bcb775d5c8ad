"""(b) evtrack's native ingestion at full speed (MLflow has no equivalent).

Two drivers, each for ``--duration`` seconds with ``--procs-b`` processes, one run each:

* client: ``evtrack.client.Client`` the way a training loop uses it: ``run.log_metrics``
  with 10 keys per step in a tight loop (each call appends to the local spool; a background
  thread batches 50k points per request). When the time is up each process calls
  ``flush()``, which returns once the server has acknowledged (committed) everything.
  Durable points/s = acknowledged points / (last acknowledgement - start).
* raw: processes POST pre-built MessagePack ``IngestRequest`` bodies of ``--native-batch``
  points (default 50,000) with an ``Idempotency-Key`` to ``/api/2.0/evtrack/ingest``; 429
  answers are retried after ``Retry-After`` with the same key. This is the server's capacity
  without the client's spool in the way.

Projection lag is the time from the last acknowledgement until evtrack's read models include
every event (checkpoints of the ``metrics`` and ``runs`` projections vs the log). Afterwards
the read model must hold exactly the acknowledged points. The MLflow column shows MLflow's
(a) throughput, its nearest equivalent.
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

import _mlflow_util as mu
from _common import BenchmarkError, Row, percentile, run_workers, say
from _context import Context
from _servers import LAG_DIAGNOSIS, ProjectionWatcher, RssSampler, cpu_note, stored_points

KEYS = 10


def client_worker(args: dict[str, Any], ready: Any) -> dict[str, Any]:
    from evtrack.client import Client

    client = Client(
        args["url"],
        spool_dir=args["spool"],
        on_spool_full="block",  # back-pressure instead of dropping: nothing may be lost
        close_timeout=60,
        adopt_orphans=False,
    )
    run = client.start_run(experiment_id=args["experiment_id"], run_name=f"native-{args['i']}")
    keys = [f"m{j}" for j in range(KEYS)]
    log_metrics = run.log_metrics
    fromkeys = dict.fromkeys
    log_metrics(fromkeys(keys, 0.0), 0)  # intern keys and open the segment before the clock
    step = 1
    t0 = ready()
    cpu0 = time.process_time()
    deadline = t0 + args["duration"]
    monotonic = time.monotonic
    while monotonic() < deadline:
        for _ in range(200):
            log_metrics(fromkeys(keys, step * 0.5), step)
            step += 1
    logged = step * KEYS
    logged_end = monotonic()
    delivered_at_deadline = client.stats().delivered_points
    ok = client.flush(args["flush_timeout"])
    acked_end = monotonic()
    cpu_s = time.process_time() - cpu0
    stats = client.stats()
    run.end()
    client.close(60)
    return {
        "run_id": run.run_id,
        "logged": logged,
        "delivered": stats.delivered_points,
        "dropped": stats.dropped,
        "rejected": stats.rejected_points,
        "requests": stats.requests,
        "flushed": ok,
        "delivered_at_deadline": delivered_at_deadline,
        "logged_end": logged_end,
        "acked_end": acked_end,
        "cpu_s": cpu_s,
    }


def raw_worker(args: dict[str, Any], ready: Any) -> dict[str, Any]:
    import msgspec
    import numpy as np
    import requests

    from evtrack.wire.ingest import (
        INGEST_PATH,
        MSGPACK,
        IngestMetrics,
        IngestPackedMetrics,
        IngestRecord,
        IngestRequest,
    )

    run_id, n = args["run_id"], args["batch"]
    per_key = n // KEYS
    keys = [k for j in range(KEYS) for k in [f"m{j}"] * per_key]
    rng = random.Random(args["i"])
    values = [rng.random() for _ in range(n)]
    names = [f"m{j}" for j in range(KEYS)]
    key_index = np.repeat(np.arange(KEYS, dtype="<u4"), per_key).tobytes()
    packed_values = np.asarray(values, dtype="<f8").tobytes()
    encode = msgspec.msgpack.Encoder().encode
    url = args["url"] + INGEST_PATH
    session = requests.Session()
    session.get(args["url"] + "/health", timeout=10)
    t0 = ready()
    cpu0 = time.process_time()
    deadline = t0 + args["duration"]
    lat: list[float] = []
    acked = failures = throttled = k = 0
    first_error = None
    while time.monotonic() < deadline:
        ts = mu.now_ms()
        if args["format"] == "packed":
            packed = IngestPackedMetrics(
                names,
                key_index,
                packed_values,
                np.full(n, ts, dtype="<i8").tobytes(),
                np.tile(np.arange(k * per_key, (k + 1) * per_key, dtype="<i8"), KEYS).tobytes(),
            )
            record = IngestRecord(run_id, packed=packed)
        else:
            steps = list(range(k * per_key, (k + 1) * per_key)) * KEYS
            record = IngestRecord(run_id, IngestMetrics(keys, values, [ts] * n, steps))
        body = encode(IngestRequest([record]))
        headers = {"Content-Type": MSGPACK, "Idempotency-Key": f"bench-{run_id}-{k}"}
        k += 1
        while True:
            t = time.perf_counter()
            try:
                r = session.post(url, data=body, headers=headers, timeout=300)
            except requests.RequestException as exc:
                failures += 1
                first_error = first_error or repr(exc)[:500]
                break
            if r.status_code == 200:
                lat.append(time.perf_counter() - t)
                acked += n
                break
            if r.status_code == 429:
                throttled += 1
                if time.monotonic() > deadline + 300:
                    failures += 1
                    first_error = first_error or "still throttled 300s after the deadline"
                    break
                time.sleep(float(r.headers.get("Retry-After") or 1))
                continue
            failures += 1
            first_error = first_error or f"{r.status_code} {r.text[:300]}"
            break
    return {
        "run_id": run_id,
        "acked": acked,
        "lat": lat,
        "failures": failures,
        "throttled": throttled,
        "error": first_error,
        "end": time.monotonic(),
        "cpu_s": time.process_time() - cpu0,
    }


def _stored(ctx: Context, run_ids: list[str]) -> int:
    return stored_points("evtrack", ctx.sql(ctx.evtrack), run_ids)


def measure_client(ctx: Context) -> dict[str, Any]:
    a, server = ctx.args, ctx.evtrack
    exp = mu.new_experiment(server.url, "bench-b-client")
    spool = Path(ctx.workdir) / "spool-b"
    say(f"(b) evtrack.client: {a.procs_b} processes x log_metrics for {a.duration:.0f}s")
    sampler = RssSampler(server.proc.pid, server.db_url)  # type: ignore[union-attr]
    watcher = ProjectionWatcher(server.db_url)
    with sampler, watcher:
        outcome = run_workers(
            client_worker,
            [
                {
                    "url": server.url,
                    "experiment_id": exp,
                    "spool": str(spool / str(i)),
                    "duration": a.duration,
                    "flush_timeout": a.lag_timeout + 300,
                    "i": i,
                }
                for i in range(a.procs_b)
            ],
            run_timeout=a.duration + a.lag_timeout + 600,
        )
        if outcome.errors:
            raise BenchmarkError("(b) client workers failed:\n" + "\n".join(outcome.errors))
        server.check_alive()
        res = outcome.results
        last_ack = max(r["acked_end"] for r in res)
        lag = watcher.lag_after(last_ack, a.lag_timeout)
        if LAG_DIAGNOSIS:
            ctx.note(f"(b) evtrack lag > 1 s; oldest transactions then: {LAG_DIAGNOSIS}")
        t_end = time.monotonic()
    t0 = outcome.t0
    logged = sum(r["logged"] for r in res)
    delivered = sum(r["delivered"] for r in res)
    stored = _stored(ctx, [r["run_id"] for r in res])
    api_problem = mu.read_back(server.url, res[0]["run_id"], "m0", res[0]["logged"] // KEYS)
    pages = mu.probe_pages(server.url, res[0]["run_id"], "m0")
    out = {
        "api_ok": api_problem is None,
        "api_problem": api_problem,
        "pages": pages,
        "logged": logged,
        "delivered": delivered,
        "stored": stored,
        "dropped": sum(r["dropped"] for r in res),
        "rejected": sum(r["rejected"] for r in res),
        "all_flushed": all(r["flushed"] for r in res),
        "requests": sum(r["requests"] for r in res),
        "log_rate": logged / max(1e-9, max(r["logged_end"] for r in res) - t0),
        "points_per_s": delivered / max(1e-9, last_ack - t0),
        "client_cores": sum(r["cpu_s"] for r in res) / max(1e-9, last_ack - t0),
        "drain_s": last_ack - max(r["logged_end"] for r in res),
        "backlog_at_deadline": logged - sum(r["delivered_at_deadline"] for r in res),
        "lag_s": lag,
        "max_behind": watcher.max_behind(),
        "rss": sampler.summary_between(t0, t_end),
    }
    say(
        f"(b) evtrack.client: logged {logged:,} ({out['log_rate']:,.0f}/s in the loop), "
        f"durable {out['points_per_s']:,.0f} points/s, drain after the loop "
        f"{out['drain_s']:.1f}s, projection lag {lag:.2f}s, stored {stored:,}"
    )
    return out


def measure_raw(ctx: Context) -> dict[str, Any]:
    a, server = ctx.args, ctx.evtrack
    exp = mu.new_experiment(server.url, "bench-b-raw")
    run_ids = mu.new_runs(server.url, exp, a.procs_b, "native-raw")
    say(
        f"(b) raw ingest: {a.procs_b} processes x {a.native_batch:,}-point msgpack requests "
        f"({a.native_format}) for {a.duration:.0f}s"
    )
    sampler = RssSampler(server.proc.pid, server.db_url)  # type: ignore[union-attr]
    watcher = ProjectionWatcher(server.db_url)
    with sampler, watcher:
        outcome = run_workers(
            raw_worker,
            [
                {
                    "url": server.url,
                    "run_id": r,
                    "batch": a.native_batch,
                    "format": a.native_format,
                    "duration": a.duration,
                    "i": i,
                }
                for i, r in enumerate(run_ids)
            ],
            run_timeout=a.duration + 900,
        )
        if outcome.errors:
            raise BenchmarkError("(b) raw workers failed:\n" + "\n".join(outcome.errors))
        server.check_alive()
        res = outcome.results
        last_ack = max(r["end"] for r in res)
        lag = watcher.lag_after(last_ack, a.lag_timeout)
        if LAG_DIAGNOSIS:
            ctx.note(f"(b) evtrack lag > 1 s; oldest transactions then: {LAG_DIAGNOSIS}")
        t_end = time.monotonic()
    acked = sum(r["acked"] for r in res)
    lat = [x for r in res for x in r["lat"]]
    stored = _stored(ctx, run_ids)
    api_problem = mu.read_back(server.url, res[0]["run_id"], "m0", res[0]["acked"] // KEYS)
    pages = mu.probe_pages(server.url, res[0]["run_id"], "m0")
    errors = [r["error"] for r in res if r["error"]]
    out = {
        "api_ok": api_problem is None,
        "api_problem": api_problem,
        "pages": pages,
        "acked": acked,
        "stored": stored,
        "failures": sum(r["failures"] for r in res),
        "throttled": sum(r["throttled"] for r in res),
        "first_error": errors[0] if errors else None,
        "points_per_s": acked / max(1e-9, last_ack - outcome.t0),
        "client_cores": sum(r["cpu_s"] for r in res) / max(1e-9, last_ack - outcome.t0),
        "p50_ms": percentile(lat, 50) * 1000,
        "p99_ms": percentile(lat, 99) * 1000,
        "lag_s": lag,
        "max_behind": watcher.max_behind(),
        "rss": sampler.summary_between(outcome.t0, t_end),
    }
    say(
        f"(b) raw ingest: {out['points_per_s']:,.0f} durable points/s, request p50 "
        f"{out['p50_ms']:.0f} ms p99 {out['p99_ms']:.0f} ms, 429s {out['throttled']}, "
        f"failures {out['failures']}, projection lag {lag:.2f}s, stored {stored:,}"
    )
    return out


def run(ctx: Context) -> None:
    c = measure_client(ctx)
    r = measure_raw(ctx)
    ctx.shared["b"] = {"client": c, "raw": r}
    ctx.shared.setdefault("rss", {})["b-client"] = {"evtrack": c["rss"]}
    ctx.shared.setdefault("rss", {})["b-raw"] = {"evtrack": r["rss"]}
    m_a = ctx.shared.get("a", {}).get("mlflow", {}).get("points_per_s")
    f_a = ctx.shared.get("a", {}).get("fasttrackml", {}).get("points_per_s")
    no_peer = "evtrack's native route; the peers have no equivalent"
    n = ctx.args.procs_b
    ctx.rows += [
        Row(
            "b",
            f"evtrack.client x{n} procs: durable points/s",
            "points/s",
            m_a,
            c["points_per_s"],
            "higher",
            evtrack_min=300_000,
            target=">= 300,000/s",
            note="mlflow and fasttrackml columns: their (a) log_batch throughput",
            fasttrackml=f_a,
        ),
        Row(
            "b",
            "evtrack.client: projection lag",
            "s",
            None,
            c["lag_s"],
            "lower",
            evtrack_max=2.0,
            fml_missing=no_peer,
            target="< 2 s",
        ),
        Row(
            "b",
            "evtrack.client: stored = logged",
            "count",
            None,
            c["stored"],
            "none",
            fml_missing=no_peer,
            target="= logged",
            verdict=(
                c["stored"] == c["logged"] == c["delivered"] and c["dropped"] == 0 and c["api_ok"]
            ),
        ),
        Row(
            "b",
            f"raw ingest x{n} procs: durable points/s",
            "points/s",
            m_a,
            r["points_per_s"],
            "higher",
            evtrack_min=300_000,
            target=">= 300,000/s",
            fasttrackml=f_a,
        ),
        Row(
            "b",
            "raw ingest: projection lag",
            "s",
            None,
            r["lag_s"],
            "lower",
            evtrack_max=2.0,
            fml_missing=no_peer,
            target="< 2 s",
        ),
        Row(
            "b",
            "raw ingest: stored = acknowledged",
            "count",
            None,
            r["stored"],
            "none",
            fml_missing=no_peer,
            target="= acknowledged",
            verdict=r["stored"] == r["acked"] and r["api_ok"],
        ),
    ]
    ctx.note(
        f"(b) evtrack.client: logged {c['logged']:,} points ({c['log_rate']:,.0f}/s inside the "
        f"loop), delivered {c['delivered']:,} in {c['requests']} requests, dropped "
        f"{c['dropped']}, rejected {c['rejected']}, backlog when the loop ended "
        f"{c['backlog_at_deadline']:,} points, drained in {c['drain_s']:.1f}s; read models "
        f"at most {c['max_behind']:,} events behind the log during the run"
    )
    ctx.note(f"(b) evtrack.client: {cpu_note(c['rss'], c['client_cores'])}")
    for label, x in (("evtrack.client", c), ("raw ingest", r)):
        ctx.note(
            f"(b) {label}: one series read back through the API: "
            f"{'as expected' if x['api_ok'] else x['api_problem']}; get-history pages of "
            f"25,000 of that series (what MlflowClient does): {x['pages']}"
        )
    ctx.note(f"(b) raw ingest: {cpu_note(r['rss'], r['client_cores'])}")
    ctx.note(
        f"(b) raw ingest: acknowledged {r['acked']:,} points, request latency p50 "
        f"{r['p50_ms']:.0f} ms / p99 {r['p99_ms']:.0f} ms, {r['throttled']} answers were 429, "
        f"{r['failures']} failed; read models at most {r['max_behind']:,} events behind"
        + (f" (first error: {r['first_error']})" if r["first_error"] else "")
    )

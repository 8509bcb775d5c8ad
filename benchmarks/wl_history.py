"""(d) ``get_metric_history`` of a long metric (``--history-small`` and ``--history-large``
points, default 100,000 and 1,000,000).

Loading (not timed), one run per size on each server, key ``loss``, steps 0..n-1, distinct
timestamps:

* evtrack: native ingest requests of 50,000 points, then a wait for the read models.
* MLflow, ``--mlflow-history-load api``: ``log_batch`` calls of 1000 points from
  ``--load-procs`` processes. That runs at MLflow's ingest speed (minutes per million points
  on a small machine), so ``sql`` COPYs all but the last 1000 points straight into MLflow's
  ``metrics`` table and logs the last 1000 through ``log_batch`` (which maintains
  ``latest_metrics``). ``auto`` (default) uses the API up to ``--api-load-max-points``
  (100,000; 10,000 with ``--quick``).

Timed, median of ``--reps-history`` (default 3):

* client: ``MlflowClient.get_metric_history`` (pages of 25,000, protobuf parsing and
  ``Metric`` objects included: what a user waits for);
* raw paged: a ``requests`` loop over ``/api/2.0/mlflow/metrics/get-history`` following
  ``next_page_token`` with the same page size, decoding JSON with msgspec, so the server's
  share is visible without the client's parsing cost;
* raw single: one request without ``max_results`` (both servers then return everything).
"""

from __future__ import annotations

import io
import random
import sys
import time
from typing import Any

import _mlflow_util as mu
from _common import BenchmarkError, Row, median, run_workers, say
from _context import Context
from _servers import Server, wait_for_projections

KEY = "loss"
PAGE = 25_000
TS0 = 1_700_000_000_000
REP_BUDGET_S = 90.0  # stop repeating a measurement once it has taken this long in total


def mlflow_loader(args: dict[str, Any], ready: Any) -> dict[str, Any]:
    """Log steps [start, stop) of ``KEY`` with log_batch calls of ``chunk`` points."""
    from mlflow.entities import Metric

    client = mu.client(args["url"])
    run_id, start, stop, chunk = args["run_id"], args["start"], args["stop"], args["chunk"]
    rng = random.Random(start)
    ready()
    last = time.monotonic()
    for lo in range(start, stop, chunk):
        hi = min(stop, lo + chunk)
        client.log_batch(
            run_id, metrics=[Metric(KEY, rng.random(), TS0 + s, s) for s in range(lo, hi)]
        )
        if args["report"] and time.monotonic() - last > 15:
            last = time.monotonic()
            done = (hi - start) / (stop - start)
            print(
                f"    loading mlflow history: worker 0 at {done:.0%}", file=sys.stderr, flush=True
            )
    return {"points": stop - start}


def load_mlflow(ctx: Context, server: Server, run_id: str, n: int) -> None:
    procs = max(1, min(ctx.args.load_procs, n // 12_500))  # spawning costs seconds each
    bounds = [n * i // procs for i in range(procs + 1)]
    outcome = run_workers(
        mlflow_loader,
        [
            {
                "url": server.url,
                "run_id": run_id,
                "start": bounds[i],
                "stop": bounds[i + 1],
                "chunk": 1000,
                "report": i == 0,
            }
            for i in range(procs)
        ],
        run_timeout=max(600.0, n / 500),
    )
    if outcome.errors:
        raise BenchmarkError("loading MLflow history failed:\n" + "\n".join(outcome.errors))


def load_mlflow_sql(ctx: Context, server: Server, run_id: str, n: int) -> None:
    """COPY points 0..n-1001 into MLflow's metrics table, then log the rest via the API."""
    from mlflow.entities import Metric

    rng = random.Random(n)
    tail = min(n, 1000)
    bulk = n - tail
    sql = ctx.sql(server)
    chunk = 200_000
    for lo in range(0, bulk, chunk):
        buf = io.StringIO()
        for s in range(lo, min(bulk, lo + chunk)):
            buf.write(f"{KEY},{rng.random()!r},{TS0 + s},{run_id},{s},f\n")
        buf.seek(0)
        with sql.conn.cursor() as cur:
            cur.copy_expert(
                "COPY metrics (key, value, timestamp, run_uuid, step, is_nan) "
                "FROM STDIN WITH (FORMAT csv)",
                buf,
            )
    mu.client(server.url).log_batch(
        run_id, metrics=[Metric(KEY, rng.random(), TS0 + s, s) for s in range(bulk, n)]
    )


def ingest(session: Any, url: str, body: bytes, key: str, timeout: float = 300) -> None:
    """POST one native ingest request, honouring 429/Retry-After; raise on failure."""
    from evtrack.wire.ingest import INGEST_PATH, MSGPACK

    deadline = time.monotonic() + timeout
    while True:
        r = session.post(
            url + INGEST_PATH,
            data=body,
            headers={"Content-Type": MSGPACK, "Idempotency-Key": key},
            timeout=timeout,
        )
        if r.status_code == 200:
            return
        if r.status_code == 429 and time.monotonic() < deadline:
            time.sleep(float(r.headers.get("Retry-After") or 1))
            continue
        raise BenchmarkError(f"evtrack ingest failed: {r.status_code} {r.text[:500]}")


def load_evtrack(ctx: Context, server: Server, run_id: str, n: int) -> None:
    import msgspec
    import requests

    from evtrack.wire.ingest import IngestMetrics, IngestRecord, IngestRequest

    rng = random.Random(n)
    encode = msgspec.msgpack.Encoder().encode
    session = requests.Session()
    chunk = 50_000
    for lo in range(0, n, chunk):
        hi = min(n, lo + chunk)
        steps = list(range(lo, hi))
        body = encode(
            IngestRequest(
                [
                    IngestRecord(
                        run_id,
                        IngestMetrics(
                            [KEY] * len(steps),
                            [rng.random() for _ in steps],
                            [TS0 + s for s in steps],
                            steps,
                        ),
                    )
                ]
            )
        )
        ingest(session, server.url, body, f"bench-d-{run_id}-{lo}")


def time_client(url: str, run_id: str) -> tuple[float, int]:
    client = mu.client(url)
    t = time.perf_counter()
    history = client.get_metric_history(run_id, KEY)
    return time.perf_counter() - t, len(history)


def time_raw(url: str, run_id: str) -> tuple[float, int]:
    t = time.perf_counter()
    count = mu.history_count_paged(url, run_id, KEY, PAGE)
    return time.perf_counter() - t, count


def time_single(url: str, run_id: str) -> tuple[float, int]:
    t = time.perf_counter()
    count = mu.history_count_single(url, run_id, KEY)
    return time.perf_counter() - t, count


KINDS = (("client", time_client), ("raw", time_raw), ("single", time_single))


def measure(ctx: Context, server: Server, sizes: list[int]) -> dict[int, dict[str, float]]:
    client = mu.client(server.url)
    exp = mu.new_experiment(server.url, "bench-d")
    out: dict[int, dict[str, float]] = {}
    for n in sizes:
        run_id = client.create_run(exp, run_name=f"history-{n}").info.run_id
        say(f"(d) {server.name}: loading {n:,} points")
        t = time.monotonic()
        if server.name != "evtrack":
            mode = ctx.args.mlflow_history_load
            if server.name != "mlflow":
                mode = "api"  # the COPY path knows MLflow's tables only
            elif mode == "auto":
                mode = "api" if n <= ctx.args.api_load_max_points else "sql"
            if mode == "api":
                load_mlflow(ctx, server, run_id, n)
            else:
                load_mlflow_sql(ctx, server, run_id, n)
            ctx.note(f"(d) {server.name}: {n:,}-point history loaded via {mode}")
        else:
            load_evtrack(ctx, server, run_id, n)
            wait_for_projections(ctx.sql(server), ctx.args.lag_timeout)
        say(f"(d) {server.name}: loaded {n:,} points in {time.monotonic() - t:.1f}s")
        timings: dict[str, list[float]] = {k: [] for k, _ in KINDS}
        for rep in range(ctx.args.reps_history):
            for kind, fn in KINDS:
                if rep and sum(timings[kind]) > REP_BUDGET_S:
                    continue  # minutes per call: one more sample changes nothing
                took, count = fn(server.url, run_id)
                if count != n:
                    raise BenchmarkError(
                        f"(d) {server.name}: get_metric_history ({kind}) returned {count} "
                        f"points, expected {n}"
                    )
                timings[kind].append(took)
            say(
                f"(d) {server.name} {n:,} points, rep {rep + 1}: client "
                f"{timings['client'][-1]:.2f}s, raw paged {timings['raw'][-1]:.2f}s, "
                f"raw single {timings['single'][-1]:.2f}s"
            )
        out[n] = {k: median(v) for k, v in timings.items()}
        short = {k: len(v) for k, v in timings.items() if len(v) < ctx.args.reps_history}
        if short:
            ctx.note(
                f"(d) {server.name} {n:,} points: fewer repetitions for slow calls "
                f"(over {REP_BUDGET_S:.0f}s in total): {short}"
            )
        server.check_alive()
    return out


def run(ctx: Context) -> None:
    sizes = [ctx.args.history_small, ctx.args.history_large]
    res = {s.name: measure(ctx, s, sizes) for s in ctx.servers()}
    m, e = res["mlflow"], res["evtrack"]
    f = res.get("fasttrackml", {})
    absent = ctx.fml_absent
    for n in sizes:
        fn = f.get(n, {})
        large = n == ctx.args.history_large
        bound = 2.0 if large else None
        target = ">= 20x" + (", < 2 s" if large else "")
        ctx.rows += [
            Row(
                "d",
                f"get_metric_history {n:,} pts (MlflowClient)",
                "s",
                m[n]["client"],
                e[n]["client"],
                "lower",
                fasttrackml=fn.get("client"),
                fml_missing=absent,
                min_ratio=20,
                evtrack_max=bound,
                target=target,
            ),
            Row(
                "d",
                f"get-history {n:,} pts (raw HTTP, 25k pages)",
                "s",
                m[n]["raw"],
                e[n]["raw"],
                "lower",
                fasttrackml=fn.get("raw"),
                fml_missing=absent,
                min_ratio=20,
                evtrack_max=bound,
                target=target,
            ),
            Row(
                "d",
                f"get-history {n:,} pts (raw HTTP, one request)",
                "s",
                m[n]["single"],
                e[n]["single"],
                "lower",
                fasttrackml=fn.get("single"),
                fml_missing=absent,
            ),
        ]

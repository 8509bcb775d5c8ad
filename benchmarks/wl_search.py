"""(e) ``search_runs`` with a metric filter and order_by, returning 1000 runs out of
``--runs-small`` and ``--runs-large`` (default 10,000 and 100,000), each in its own experiment.

Every run has metric ``acc`` (a deterministic low-discrepancy sequence in [0, 1), the same on
both servers, so about half pass the filter) and a param.

Loading (not timed):

* evtrack: native ingest requests carrying 1000 runs each (``start`` records create the runs
  with client-chosen ids), then a wait until the read models have them.
* MLflow, ``--mlflow-search-load api``: ``--load-procs`` processes calling ``create_run`` and
  ``log_batch`` per run, exactly what the client does. That is ~2 requests per run, too slow
  for 100,000 runs on a small machine, so ``sql`` clones one run created through the API
  (its rows in runs, tags, params, metrics and latest_metrics, with new ids, names and
  values) with COPY. The resulting database is what the API would have written. ``auto``
  (default) uses the API up to ``--api-load-max-runs`` runs (10,000; 1000 with ``--quick``)
  and SQL above.

Both databases are ANALYZEd after loading (a steady state, as autovacuum would reach).

Timed, median of ``--reps-search`` (default 5): ``MlflowClient.search_runs([exp],
filter_string="metrics.acc > 0.5", order_by=["metrics.acc DESC"], max_results=1000)``, and
the same request as raw HTTP (``requests`` + msgspec JSON decoding). Each answer is checked:
1000 runs, ``acc`` descending and above 0.5.
"""

from __future__ import annotations

import io
import sys
import time
import uuid
from typing import Any

import _mlflow_util as mu
from _common import BenchmarkError, Row, median, run_workers, say
from _context import Context
from _servers import Server, wait_for_projections

FILTER = "metrics.acc > 0.5"
ORDER = ["metrics.acc DESC"]
RESULTS = 1000
EVTRACK_RUNS_PER_REQUEST = 1000
PHI = 0.6180339887498949


def acc_of(i: int) -> float:
    """Run i's ``acc``: the same on both servers, evenly spread over [0, 1)."""
    return ((i + 1) * PHI) % 1.0


def expected_accs(n: int) -> list[float]:
    return sorted((a for a in map(acc_of, range(n)) if a > 0.5), reverse=True)[:RESULTS]


# ------------------------------------------------------------------------------ loading


def mlflow_api_loader(args: dict[str, Any], ready: Any) -> dict[str, Any]:
    from mlflow.entities import Metric, Param

    client = mu.client(args["url"])
    ready()
    last = time.monotonic()
    for i in range(args["start"], args["stop"]):
        run_id = client.create_run(args["experiment_id"], run_name=f"run-{i}").info.run_id
        client.log_batch(
            run_id,
            metrics=[Metric("acc", acc_of(i), mu.now_ms(), 0)],
            params=[Param("p", str(i))],
        )
        if args["report"] and time.monotonic() - last > 15:
            last = time.monotonic()
            done = (i + 1 - args["start"]) / (args["stop"] - args["start"])
            print(f"    loading mlflow runs: worker 0 at {done:.0%}", file=sys.stderr, flush=True)
    return {"runs": args["stop"] - args["start"]}


def load_mlflow_api(ctx: Context, server: Server, experiment_id: str, n: int) -> None:
    procs = max(1, min(ctx.args.load_procs, n // 250))  # spawning costs seconds each
    bounds = [n * i // procs for i in range(procs + 1)]
    outcome = run_workers(
        mlflow_api_loader,
        [
            {
                "url": server.url,
                "experiment_id": experiment_id,
                "start": bounds[i],
                "stop": bounds[i + 1],
                "report": i == 0,
            }
            for i in range(procs)
        ],
        run_timeout=max(900.0, n / 20),
    )
    if outcome.errors:
        raise BenchmarkError("loading MLflow runs failed:\n" + "\n".join(outcome.errors))


def _csv_field(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, int | float):
        return repr(value)
    text = str(value)
    return '"' + text.replace('"', '""') + '"'


def load_mlflow_sql(ctx: Context, server: Server, experiment_id: str, n: int) -> None:
    """Clone one API-created run ``n - 1`` times straight into MLflow's tables."""
    from mlflow.entities import Metric, Param

    client = mu.client(server.url)
    template = client.create_run(experiment_id, run_name="run-0").info.run_id
    client.log_batch(
        template, metrics=[Metric("acc", acc_of(0), mu.now_ms(), 0)], params=[Param("p", "0")]
    )
    sql = ctx.sql(server)
    tables = ["runs", "tags", "params", "metrics", "latest_metrics"]
    shapes: dict[str, tuple[list[str], list[tuple[Any, ...]]]] = {}
    for table in tables:
        with sql.conn.cursor() as cur:
            cur.execute(f"SELECT * FROM {table} WHERE run_uuid = %s", (template,))
            shapes[table] = ([d[0] for d in cur.description], list(cur.fetchall()))
    bufs = {t: io.StringIO() for t in tables}
    run_cols, run_rows = shapes["runs"]
    if len(run_rows) != 1:
        raise BenchmarkError(f"template run {template} not found in MLflow's runs table")
    start_time = dict(zip(run_cols, run_rows[0], strict=True)).get("start_time") or mu.now_ms()
    for i in range(1, n):
        uid = uuid.uuid4().hex
        name = f"run-{i}"
        acc = acc_of(i)
        for table in tables:
            cols, rows = shapes[table]
            for row in rows:
                d = dict(zip(cols, row, strict=True))
                for col, val in d.items():
                    if isinstance(val, str) and template in val:
                        d[col] = val.replace(template, uid)
                if table == "runs":
                    d["name"] = name
                    d["start_time"] = start_time + i
                elif table == "tags" and d.get("key") == "mlflow.runName":
                    d["value"] = name
                elif table == "params":
                    d["value"] = str(i)
                elif table in ("metrics", "latest_metrics"):
                    d["value"] = acc
                bufs[table].write(",".join(_csv_field(d[c]) for c in cols) + "\n")
        if i % 20000 == 0:
            say(f"    preparing MLflow rows: {i:,}/{n:,}")
    for table in tables:
        cols = shapes[table][0]
        bufs[table].seek(0)
        with sql.conn.cursor() as cur:
            cur.copy_expert(
                f"COPY {table} ({', '.join(cols)}) FROM STDIN WITH (FORMAT csv)", bufs[table]
            )


def load_evtrack(ctx: Context, server: Server, experiment_id: str, n: int) -> None:
    import msgspec
    import requests
    from wl_history import ingest

    from evtrack.wire.ingest import (
        IngestKeyValue,
        IngestMetrics,
        IngestRecord,
        IngestRequest,
        IngestRunStart,
    )

    encode = msgspec.msgpack.Encoder().encode
    session = requests.Session()
    ts = mu.now_ms()
    last = time.monotonic()
    for lo in range(0, n, EVTRACK_RUNS_PER_REQUEST):
        records = [
            IngestRecord(
                uuid.uuid4().hex,
                IngestMetrics(["acc"], [acc_of(i)], [ts], [0]),
                params=[IngestKeyValue("p", str(i))],
                start=IngestRunStart(
                    experiment_id=experiment_id, run_name=f"run-{i}", start_time=ts + i
                ),
            )
            for i in range(lo, min(n, lo + EVTRACK_RUNS_PER_REQUEST))
        ]
        ingest(session, server.url, encode(IngestRequest(records)), f"bench-e-{experiment_id}-{lo}")
        if time.monotonic() - last > 15:
            last = time.monotonic()
            say(f"    loading evtrack runs: {lo + len(records):,}/{n:,}")


# ------------------------------------------------------------------------------ timing


def _check(accs: list[float], expected: list[float], where: str) -> None:
    if len(accs) != len(expected):
        raise BenchmarkError(f"{where}: search returned {len(accs)} runs, expected {len(expected)}")
    if any(abs(a - b) > 1e-12 for a, b in zip(accs, expected, strict=True)):
        raise BenchmarkError(f"{where}: search results not filtered/ordered by metrics.acc")


def time_client(url: str, experiment_id: str, expected: list[float]) -> float:
    client = mu.client(url)
    t = time.perf_counter()
    runs = client.search_runs(
        [experiment_id], filter_string=FILTER, order_by=ORDER, max_results=RESULTS
    )
    took = time.perf_counter() - t
    _check([r.data.metrics["acc"] for r in runs], expected, f"{url} client")
    return took


def time_raw(url: str, experiment_id: str, expected: list[float]) -> tuple[float, int]:
    """Seconds for one raw runs/search (msgspec decoding included), and the size in bytes
    of the JSON answer as a client parses it (after any Content-Encoding: FastTrackML
    gzips its answers, so its bytes on the wire are fewer; see search_answer_size.py)."""
    import msgspec
    import requests

    body = {
        "experiment_ids": [experiment_id],
        "filter": FILTER,
        "order_by": ORDER,
        "max_results": RESULTS,
    }
    session = requests.Session()
    t = time.perf_counter()
    r = session.post(url + "/api/2.0/mlflow/runs/search", json=body, timeout=600)
    page = msgspec.json.decode(r.content)
    took = time.perf_counter() - t
    if r.status_code != 200:
        raise BenchmarkError(f"runs/search failed: {r.status_code} {r.text[:300]}")
    accs = [
        next(m["value"] for m in run["data"]["metrics"] if m["key"] == "acc")
        for run in page.get("runs", [])
    ]
    _check(accs, expected, f"{url} raw")
    return took, len(r.content)


def load(ctx: Context, server: Server, n: int) -> str:
    exp = mu.new_experiment(server.url, f"bench-e-{n}")
    t = time.monotonic()
    how = "native ingest"
    if server.name == "evtrack":
        load_evtrack(ctx, server, exp, n)
        wait_for_projections(ctx.sql(server), ctx.args.lag_timeout)
    else:
        mode = ctx.args.mlflow_search_load
        if server.name != "mlflow":
            mode = "api"  # the SQL cloning knows MLflow's tables only
        elif mode == "auto":
            mode = "api" if n <= ctx.args.api_load_max_runs else "sql"
        how = {"api": "create_run + log_batch", "sql": "SQL COPY of a cloned run"}[mode]
        say(f"(e) {server.name}: loading {n:,} runs via {how}")
        if mode == "api":
            load_mlflow_api(ctx, server, exp, n)
        else:
            load_mlflow_sql(ctx, server, exp, n)
    ctx.sql(server).execute("ANALYZE")
    took = time.monotonic() - t
    say(f"(e) {server.name}: loaded {n:,} runs in {took:.1f}s ({how})")
    ctx.note(f"(e) {server.name}: {n:,} runs loaded via {how} in {took:.0f}s")
    return exp


def run(ctx: Context) -> None:
    sizes = [ctx.args.runs_small, ctx.args.runs_large]
    servers = ctx.servers()
    res: dict[str, dict[int, dict[str, float]]] = {s.name: {} for s in servers}
    for n in sizes:
        exps = {s.name: load(ctx, s, n) for s in servers}
        expected = expected_accs(n)
        timings = {s.name: {"client": [], "raw": [], "bytes": []} for s in servers}
        for _ in range(ctx.args.reps_search):  # A B C A B C: medians per server
            for s in servers:
                t = timings[s.name]
                t["client"].append(time_client(s.url, exps[s.name], expected))
                took, size = time_raw(s.url, exps[s.name], expected)
                t["raw"].append(took)
                t["bytes"].append(size)
        for s in servers:
            t = timings[s.name]
            res[s.name][n] = {
                "client": median(t["client"]) * 1000,
                "raw": median(t["raw"]) * 1000,
                "bytes": median(t["bytes"]),
            }
            say(
                f"(e) {s.name} {n:,} runs: client {res[s.name][n]['client']:.0f} ms, "
                f"raw {res[s.name][n]['raw']:.0f} ms (medians of {ctx.args.reps_search}), "
                f"answer {res[s.name][n]['bytes']:,.0f} bytes"
            )
            s.check_alive()
    ctx.shared["e"] = res
    m, e = res["mlflow"], res["evtrack"]
    f = res.get("fasttrackml", {})
    absent = ctx.fml_absent
    for n in sizes:
        large = n == ctx.args.runs_large
        bound = 300.0 if large else None
        target = ">= 10x" + (", < 300 ms" if large else "")
        fn = f.get(n, {})
        ctx.rows += [
            Row(
                "e",
                f"search_runs 1000 of {n:,} (MlflowClient)",
                "ms",
                m[n]["client"],
                e[n]["client"],
                "lower",
                min_ratio=10,
                evtrack_max=bound,
                target=target,
                fasttrackml=fn.get("client"),
                fml_missing=absent,
            ),
            Row(
                "e",
                f"runs/search 1000 of {n:,} (raw HTTP)",
                "ms",
                m[n]["raw"],
                e[n]["raw"],
                "lower",
                min_ratio=10,
                evtrack_max=bound,
                target=target,
                fasttrackml=fn.get("raw"),
                fml_missing=absent,
            ),
            Row(
                "e",
                f"runs/search 1000 of {n:,}: answer size (decoded)",
                "bytes",
                m[n]["bytes"],
                e[n]["bytes"],
                "lower",
                min_ratio=1,
                target="<= mlflow's",
                fasttrackml=fn.get("bytes"),
                fml_missing=absent,
            ),
        ]

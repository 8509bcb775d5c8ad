"""(c) Latency of single synchronous ``log_metric`` calls: what an unbatched training loop
waits for on every step.

One process, one MLflow run per server, two kinds of call:

* ``MlflowClient.log_metric``: ``--log-metric-calls`` (default 2000) calls, the client's own
  encoding and its ``requests`` session included;
* raw HTTP: ``--raw-log-metric-calls`` (default 1000) ``POST /api/2.0/mlflow/runs/log-metric``
  through one keep-alive ``requests.Session`` with a pre-encoded JSON body, so only the
  server's share (plus one loopback round trip) is measured.

The servers are interleaved in blocks of ``BLOCK`` calls (A B C A B C ...), so a burst of load
from other users of the machine hits every contender alike; p50 and p99 are over the individual
calls (``perf_counter``). For scale, the same session also times a bare PostgreSQL
``INSERT`` + ``COMMIT`` of one row (psycopg2, one connection): the floor under any server
that makes a point durable before answering.
"""

from __future__ import annotations

import time
from typing import Any

import _mlflow_util as mu
from _common import BenchmarkError, Row, percentile, say
from _context import Context
from _servers import Server, Sql

WARMUP = 20
BLOCK = 50
LOG_METRIC_PATH = "/api/2.0/mlflow/runs/log-metric"


class Contender:
    """One server's client, run and keep-alive session, set up before any clock starts."""

    def __init__(self, server: Server) -> None:
        import requests

        self.server = server
        self.client = mu.client(server.url)
        exp = mu.new_experiment(server.url, "bench-c")
        self.run_id = self.client.create_run(exp, run_name="log-metric").info.run_id
        self.session = requests.Session()
        self.client_lat: list[float] = []
        self.raw_lat: list[float] = []
        for i in range(WARMUP):
            self.client.log_metric(self.run_id, "warmup", float(i), step=i)
            self.raw_call(i, "warmup-raw")

    def raw_call(self, i: int, key: str = "raw") -> float:
        body = (
            f'{{"run_id":"{self.run_id}","key":"{key}","value":{1.0 / (i + 1)!r},'
            f'"timestamp":{mu.now_ms()},"step":{i}}}'
        ).encode()
        t = time.perf_counter()
        r = self.session.post(
            self.server.url + LOG_METRIC_PATH,
            data=body,
            headers={"Content-Type": "application/json"},
            timeout=60,
        )
        took = time.perf_counter() - t
        if r.status_code != 200:
            raise BenchmarkError(
                f"{self.server.name} log-metric answered {r.status_code}: {r.text[:300]}"
            )
        return took

    def client_call(self, i: int) -> float:
        t = time.perf_counter()
        self.client.log_metric(self.run_id, "loss", 1.0 / (i + 1), step=i)
        return time.perf_counter() - t

    def stored(self, key: str) -> int:
        return len(self.client.get_metric_history(self.run_id, key))


def interleaved(contenders: list[Contender], n: int, call: str) -> None:
    for lo in range(0, n, BLOCK):
        for c in contenders:
            for i in range(lo, min(n, lo + BLOCK)):
                if call == "raw":
                    c.raw_lat.append(c.raw_call(i))
                else:
                    c.client_lat.append(c.client_call(i))


def postgres_floor(ctx: Context, n: int) -> float:
    """p50 seconds of one-row INSERT + COMMIT from one connection (autocommit), into a
    logged table (a TEMP table writes no WAL, so its commit would wait for no flush)."""
    sql = Sql(ctx.evtrack.db_url)
    try:
        sql.execute("DROP TABLE IF EXISTS bench_floor")
        sql.execute("CREATE TABLE bench_floor (k text, v float8, ts bigint, step bigint)")
        lat = []
        for i in range(n):
            t = time.perf_counter()
            sql.execute("INSERT INTO bench_floor VALUES ('loss', %s, %s, %s)", 1.0 / (i + 1), 0, i)
            lat.append(time.perf_counter() - t)
        sql.execute("DROP TABLE bench_floor")
        return percentile(lat, 50)
    finally:
        sql.close()


def run(ctx: Context) -> None:
    n, n_raw = ctx.args.log_metric_calls, ctx.args.raw_log_metric_calls
    contenders = [Contender(s) for s in ctx.servers()]
    interleaved(contenders, n_raw, "raw")
    interleaved(contenders, n, "client")
    floor = postgres_floor(ctx, n_raw) * 1000
    res: dict[str, dict[str, Any]] = {}
    for c in contenders:
        out = {
            "p50_ms": percentile(c.client_lat, 50) * 1000,
            "p99_ms": percentile(c.client_lat, 99) * 1000,
            "raw_p50_ms": percentile(c.raw_lat, 50) * 1000,
            "raw_p99_ms": percentile(c.raw_lat, 99) * 1000,
            "stored": c.stored("loss"),
            "raw_stored": c.stored("raw"),
        }
        res[c.server.name] = out
        say(
            f"(c) {c.server.name}: raw HTTP log-metric p50 {out['raw_p50_ms']:.2f} ms / p99 "
            f"{out['raw_p99_ms']:.2f} ms over {n_raw}; MlflowClient.log_metric p50 "
            f"{out['p50_ms']:.2f} ms / p99 {out['p99_ms']:.2f} ms over {n}"
        )
    say(f"(c) PostgreSQL floor (one-row INSERT + COMMIT) p50 {floor:.2f} ms")
    ctx.shared["c"] = {**res, "postgres_floor_p50_ms": floor}
    ctx.note(
        f"(c) floor: a bare PostgreSQL one-row INSERT + COMMIT from one psycopg2 connection, "
        f"p50 {floor:.2f} ms over {n_raw}; calls interleaved across servers in blocks of {BLOCK}"
    )
    m, e = res["mlflow"], res["evtrack"]
    f = res.get("fasttrackml", {})
    absent = ctx.fml_absent
    ctx.rows += [
        Row(
            "c",
            f"log-metric p50, raw HTTP ({n_raw} sequential calls)",
            "ms",
            m["raw_p50_ms"],
            e["raw_p50_ms"],
            "lower",
            evtrack_max=2.0,
            target="<= 2 ms",
            fasttrackml=f.get("raw_p50_ms"),
            fml_missing=absent,
        ),
        Row(
            "c",
            f"log-metric p99, raw HTTP ({n_raw} sequential calls)",
            "ms",
            m["raw_p99_ms"],
            e["raw_p99_ms"],
            "lower",
            fasttrackml=f.get("raw_p99_ms"),
            fml_missing=absent,
        ),
        Row(
            "c",
            f"log_metric p50, MlflowClient ({n} calls)",
            "ms",
            m["p50_ms"],
            e["p50_ms"],
            "lower",
            min_ratio=2,
            target="<= 1/2",
            fasttrackml=f.get("p50_ms"),
            fml_missing=absent,
        ),
        Row(
            "c",
            f"log_metric p99, MlflowClient ({n} calls)",
            "ms",
            m["p99_ms"],
            e["p99_ms"],
            "lower",
            fasttrackml=f.get("p99_ms"),
            fml_missing=absent,
        ),
        Row(
            "c",
            "read back = logged",
            "count",
            m["stored"] + m["raw_stored"],
            e["stored"] + e["raw_stored"],
            "none",
            target=f"= {n + n_raw}",
            verdict=all(r["stored"] == n and r["raw_stored"] == n_raw for r in res.values()),
            fasttrackml=(f["stored"] + f["raw_stored"]) if f else None,
            fml_missing=absent,
        ),
    ]

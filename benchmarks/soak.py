#!/usr/bin/env python
"""Soak: minutes of steady mixed load on one evtrack server; nothing may degrade.

    python benchmarks/soak.py                          # 5 minutes
    python benchmarks/soak.py --duration 900           # 15 minutes
    python benchmarks/soak.py --duration 25 --warmup 5 --window 8 --json out.json  # CI's

The load runs at fixed rates (not as fast as possible), so latency measures the server, not
a queue the load generator built up, and the first and the last minute carry the same work:

* native ingest: an ``evtrack.client`` logging points to 4 runs, flushed every 2 s
  (``native_flush`` is the time a flush waits for acknowledgement);
* ``log_batch``: two official-client threads, 100 points (and a param and a tag) a call;
* search: ``search_runs`` with a filter and an order, ``get_run``, a metric history page;
* registry: create a version, move it to Staging or Production (archiving the previous
  holder), point an alias at it, read it back by alias, search the versions; old versions
  are deleted so the live set stays bounded;
* artifacts: upload 256 KiB, download and compare, delete.

What it reports (a table, and ``--json``):

* errors: any exception, non-200 answer, failed flush, rejected or dropped point, and any
  ``request.failed`` or traceback in the server's log. Must be 0.
* server memory: RSS sampled every second; the median of the last window against the
  median of the first (after the warm-up), within ``--rss-tolerance`` (or
  ``--rss-floor-mib``, whichever is larger), and the trend (least squares) in MiB/min.
* latency: p50 and p99 of every request in the first and the last window, per operation
  and overall; the overall p99 of the last window within ``--p99-ratio`` of the first.
* data: metric points acknowledged by the server against those stored in the read model,
  and duplicates (must be equal, and 0).
* ``idempotency_keys`` after the soak: rows (derived and explicit), bytes, bytes per row.

The server is ``python -m evtrack server`` on a fresh database created next to
``--database-url`` (dropped at the end unless ``--keep-database``), with its projectors
in-process, as a single-node deployment runs it. Exit status: 0 when every check passes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
import warnings
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

# Not a line per model version ("Waiting up to 300 seconds for model version..."); set before
# mlflow is imported, which reads it then.
os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import _mlflow_util  # noqa: E402,F401 - the mlflow client's environment, before mlflow loads
import asyncpg  # noqa: E402
from _common import median, percentile, say  # noqa: E402
from _servers import DEFAULT_DATABASE_URL, evtrack_server, redact  # noqa: E402
from _soak_load import (  # noqa: E402
    Artifacts,
    Control,
    LogBatch,
    NativeIngest,
    Paced,
    Recorder,
    Registry,
    Sampler,
    Search,
)

MIB = 1024 * 1024


# --------------------------------------------------------------------------- database


def database_url(admin_url: str, name: str) -> str:
    return urlunsplit(urlsplit(admin_url)._replace(path=f"/{name}"))


def sql(url: str, query: str, *args: Any) -> list[asyncpg.Record]:
    async def run() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(url)
        try:
            rows: list[asyncpg.Record] = await conn.fetch(query, *args)
            return rows
        finally:
            await conn.close()

    return asyncio.run(run())


def execute(url: str, statement: str) -> None:
    """A statement that may not run in a transaction (CREATE / DROP DATABASE)."""

    async def run() -> None:
        conn = await asyncpg.connect(url)
        try:
            await conn.execute(statement)
        finally:
            await conn.close()

    asyncio.run(run())


def wait_caught_up(url: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while True:
        [row] = sql(
            url,
            r"""SELECT count(*) AS behind FROM projection_checkpoints c,
                  (SELECT transaction_id AS t, global_position AS g FROM events
                   ORDER BY transaction_id DESC, global_position DESC LIMIT 1) h
                WHERE (c.transaction_id, c.global_position) < (h.t, h.g)
                  AND c.name NOT LIKE '%\_\_rebuild'""",
        )
        if row["behind"] == 0:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{row['behind']} read models still behind after {timeout}s")
        time.sleep(0.2)


# --------------------------------------------------------------------------- analysis


def window_stats(ops: list[tuple[float, str, float]], start: float, end: float) -> dict[str, Any]:
    inside = [(name, s) for t, name, s in ops if start <= t < end]
    by_op: dict[str, list[float]] = {}
    for name, s in inside:
        by_op.setdefault(name, []).append(s)
    every = [s for name, s in inside if not name.startswith("control_")]
    return {
        "count": len(every),
        "p50_ms": percentile(every, 50) * 1000,
        "p99_ms": percentile(every, 99) * 1000,
        "ops": {
            name: {
                "count": len(v),
                "p50_ms": percentile(v, 50) * 1000,
                "p99_ms": percentile(v, 99) * 1000,
            }
            for name, v in sorted(by_op.items())
        },
    }


def slope_mib_per_min(samples: list[tuple[float, int]]) -> float:
    if len(samples) < 3:
        return math.nan
    xs = [t for t, _ in samples]
    ys = [rss / MIB for _, rss in samples]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    var = sum((x - mx) ** 2 for x in xs)
    if var == 0:
        return math.nan
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var * 60


def _fmt(value: float, unit: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:,.1f}{unit}" if isinstance(value, float) else f"{value:,}{unit}"


def print_report(result: dict[str, Any]) -> None:
    first, last = result["latency"]["first"], result["latency"]["last"]
    w = result["windows"]
    print(
        f"\nevtrack soak: {result['duration_s']:.0f} s, first window "
        f"{w['first'][0]:.0f}-{w['first'][1]:.0f} s, last window "
        f"{w['last'][0]:.0f}-{w['last'][1]:.0f} s\n"
    )
    rows = [("operation", "first n", "first p50", "first p99", "last n", "last p50", "last p99")]
    for name in sorted(set(first["ops"]) | set(last["ops"])):
        a, b = first["ops"].get(name, {}), last["ops"].get(name, {})
        rows.append(
            (
                name,
                _fmt(a.get("count", 0)),
                _fmt(a.get("p50_ms", math.nan), " ms"),
                _fmt(a.get("p99_ms", math.nan), " ms"),
                _fmt(b.get("count", 0)),
                _fmt(b.get("p50_ms", math.nan), " ms"),
                _fmt(b.get("p99_ms", math.nan), " ms"),
            )
        )
    rows.append(
        (
            "all requests",
            _fmt(first["count"]),
            _fmt(first["p50_ms"], " ms"),
            _fmt(first["p99_ms"], " ms"),
            _fmt(last["count"]),
            _fmt(last["p50_ms"], " ms"),
            _fmt(last["p99_ms"], " ms"),
        )
    )
    _table(rows)
    rss = result["rss"]
    print("\nserver RSS over time: " + ", ".join(f"{t:.0f}s {m:.0f} MiB" for t, m in rss["series"]))
    c = result["checks"]
    cpu = result["cpu"]
    checks = [
        ("check", "value", "bound", "result"),
        ("errors", _fmt(result["errors"]["count"]), "0", _pass(c["errors"])),
        (
            "RSS median, last vs first window",
            f"{rss['first_median_mib']:.1f} -> {rss['last_median_mib']:.1f} MiB "
            f"({rss['growth_mib']:+.1f})",
            f"<= +{rss['allowed_growth_mib']:.1f} MiB",
            _pass(c["rss"]),
        ),
        ("RSS trend after warm-up", f"{rss['trend_mib_per_min']:+.2f} MiB/min", "info", "info"),
        (
            "server CPU, first -> last window",
            f"{cpu['first']['server_cpu_pct']:.0f}% -> {cpu['last']['server_cpu_pct']:.0f}% "
            "of a core",
            "info",
            "info",
        ),
        (
            "machine CPU busy, first -> last window",
            f"{cpu['first']['machine_busy_pct']:.0f}% -> {cpu['last']['machine_busy_pct']:.0f}%",
            "info",
            "info",
        ),
        (
            "p99, last vs first window",
            f"{first['p99_ms']:.1f} -> {last['p99_ms']:.1f} ms "
            f"({result['latency']['p99_ratio']:.2f}x)",
            f"<= {result['bounds']['p99_ratio']}x",
            _pass(c["p99"]),
        ),
        (
            "control p99 ratios (health, SELECT 1)",
            ", ".join(f"{v:.2f}x" for v in result["latency"]["control_p99_ratio"].values()),
            "info",
            "info",
        ),
        (
            "points acknowledged / stored / duplicates",
            f"{result['points']['acknowledged']:,} / {result['points']['stored']:,} / "
            f"{result['points']['duplicates']:,}",
            "equal, 0",
            _pass(c["points"]),
        ),
        (
            "idempotency_keys after the soak",
            f"{result['idempotency_keys']['rows']:,} rows "
            f"({result['idempotency_keys']['derived']:,} derived), "
            f"{result['idempotency_keys']['bytes'] / MIB:.1f} MiB, "
            f"{result['idempotency_keys']['bytes_per_row']:.0f} B/row",
            f"{result['write_requests']:,} writes",
            "info",
        ),
    ]
    print()
    _table(checks)
    for t, name, message in result["errors"]["first"]:
        print(f"error at {t:.1f}s in {name}: {message}")
    for line in result["server_warnings"]["first"]:
        print(f"server log: {line}")


def _pass(flag: bool) -> str:
    return "pass" if flag else "FAIL"


def _table(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for n, row in enumerate(rows):
        print("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip())
        if n == 0:
            print("  ".join("-" * w for w in widths))


# --------------------------------------------------------------------------- main


def soak(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    db_name = f"evtrack_soak_{uuid.uuid4().hex[:10]}"
    execute(args.database_url, f'CREATE DATABASE "{db_name}"')
    db_url = database_url(args.database_url, db_name)
    server = evtrack_server(db_url, workdir, sys.executable)
    try:
        server.start()
        server.wait_healthy(90)
        assert server.proc is not None
        return _drive(args, server.url, server.proc.pid, db_url, workdir, server.log_path)
    finally:
        server.stop()
        if not args.keep_database:
            execute(args.database_url, f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')
        else:
            say(f"kept database {db_name}")


def _drive(
    args: argparse.Namespace, url: str, pid: int, db_url: str, workdir: Path, log_path: Path
) -> dict[str, Any]:
    from mlflow import MlflowClient

    scale = args.rate_scale
    experiment_id = MlflowClient(url).create_experiment(f"soak-{uuid.uuid4().hex[:8]}")
    stop = threading.Event()
    t0 = time.monotonic()
    rec = Recorder(t0)
    native = NativeIngest(url, experiment_id, rec, stop, workdir / "spool", 5000 * scale)
    batches = [LogBatch(n, url, experiment_id, rec, stop, 0.1 / scale) for n in range(2)]
    run_ids = native.run_ids + [r for b in batches for r in b.run_ids]
    load: list[Paced] = [
        native,
        *batches,
        Search(url, experiment_id, run_ids, rec, stop, 0.25 / scale),
        Registry(url, batches[0].run_ids[0], rec, stop, 1.0 / scale),
        Artifacts(url, experiment_id, batches[0].run_ids[0], rec, stop, 0.5 / scale),
    ]
    control = Control(url, db_url, rec, stop)
    load.append(control)
    sampler = Sampler(pid, t0, stop)
    rec.t0 = t0 = time.monotonic()
    sampler.t0 = t0
    say(f"soaking {url} for {args.duration:.0f} s")
    for thread in [*load, sampler]:
        thread.start()
    next_note = t0 + max(10.0, args.duration / 10)
    while (now := time.monotonic()) < t0 + args.duration:
        time.sleep(min(1.0, t0 + args.duration - now))
        if time.monotonic() >= next_note:
            next_note += max(10.0, args.duration / 10)
            rss = sampler.samples[-1][1] / MIB if sampler.samples else math.nan
            say(
                f"{time.monotonic() - t0:5.0f}s: {len(rec.ops):,} requests, "
                f"{len(rec.errors)} errors, server RSS {rss:.0f} MiB"
            )
    duration = time.monotonic() - t0
    stop.set()
    for thread in [*load, sampler]:
        thread.join(120)
        if isinstance(thread, Paced) and thread.crashed is not None:
            rec.error(thread.name, f"load thread crashed: {thread.crashed!r}")
    native_counts = native.finish()
    control.close()

    # Data: every acknowledged point stored once.
    wait_caught_up(db_url)
    acknowledged = native_counts["acknowledged"] + sum(b.acknowledged for b in batches)
    [row] = sql(
        db_url,
        """SELECT COALESCE(sum(n), 0) AS stored FROM rm_metrics.chunks
           WHERE run_id = ANY($1::text[])""",
        run_ids,
    )
    [dup] = sql(
        db_url,
        """SELECT count(*) - count(DISTINCT (c.run_id, c.key, u.step)) AS duplicates
           FROM rm_metrics.chunks c, unnest(c.steps) AS u(step)
           WHERE c.run_id = ANY($1::text[])""",
        run_ids,
    )
    [keys] = sql(
        db_url,
        """SELECT count(*) AS rows, count(*) FILTER (WHERE derived) AS derived,
                  pg_total_relation_size('idempotency_keys') AS bytes
           FROM idempotency_keys""",
    )
    log_text = log_path.read_text(errors="replace")
    for marker in ("request.failed", "Traceback"):
        if marker in log_text:
            rec.error("server log", f"{log_text.count(marker)} x {marker!r} in the server log")
    # The server runs at --log-level warning: what it logged says why a request failed.
    warnings = [
        line[:400]
        for line in log_text.splitlines()
        if '"level": "warning"' in line or '"level": "error"' in line
    ]

    # Windows: after the warm-up, and the end.
    warmup = min(args.warmup, duration / 4)
    window = min(args.window, (duration - warmup) / 2)
    first_w = (warmup, warmup + window)
    last_w = (duration - window, duration)
    first = window_stats(rec.ops, *first_w)
    last = window_stats(rec.ops, *last_w)
    samples = sampler.samples
    rss_first = median([r for t, r in samples if first_w[0] <= t < first_w[1]]) / MIB
    rss_last = median([r for t, r in samples if last_w[0] <= t <= last_w[1]]) / MIB
    allowed = max(rss_first * args.rss_tolerance, args.rss_floor_mib)
    p99_ratio = last["p99_ms"] / first["p99_ms"] if first["p99_ms"] else math.nan
    step = max(1, len(samples) // 12)
    write_ops = ("log_batch", "create_version", "transition", "set_alias", "delete_version")
    control_ratio = {
        name: last["ops"].get(name, {}).get("p99_ms", math.nan)
        / first["ops"].get(name, {}).get("p99_ms", math.nan)
        for name in ("control_health", "control_select_1")
    }
    result: dict[str, Any] = {
        "duration_s": duration,
        "windows": {"first": first_w, "last": last_w},
        "errors": {"count": len(rec.errors), "first": rec.errors[:10]},
        "server_warnings": {"count": len(warnings), "first": warnings[:10]},
        "cpu": {"first": sampler.usage(*first_w), "last": sampler.usage(*last_w)},
        "latency": {
            "first": first,
            "last": last,
            "p99_ratio": p99_ratio,
            "control_p99_ratio": control_ratio,
        },
        "rss": {
            "first_median_mib": rss_first,
            "last_median_mib": rss_last,
            "growth_mib": rss_last - rss_first,
            "allowed_growth_mib": allowed,
            "trend_mib_per_min": slope_mib_per_min([s for s in samples if s[0] >= warmup]),
            "series": [(t, r / MIB) for t, r in samples[::step]],
        },
        "points": {
            "sent": native_counts["sent"] + sum(b.sent for b in batches),
            "acknowledged": acknowledged,
            "stored": int(row["stored"]),
            "duplicates": int(dup["duplicates"]),
        },
        "idempotency_keys": {
            "rows": int(keys["rows"]),
            "derived": int(keys["derived"]),
            "bytes": int(keys["bytes"]),
            "bytes_per_row": int(keys["bytes"]) / max(1, int(keys["rows"])),
        },
        "write_requests": sum(1 for _, name, _ in rec.ops if name in write_ops)
        + sum(1 for _, name, _ in rec.ops if name == "upload"),
        "requests": sum(1 for _, name, _ in rec.ops if not name.startswith("control_")),
        "bounds": {
            "p99_ratio": args.p99_ratio,
            "rss_tolerance": args.rss_tolerance,
            "rss_floor_mib": args.rss_floor_mib,
        },
    }
    result["checks"] = {
        "errors": not rec.errors,
        "rss": rss_last - rss_first <= allowed,
        "p99": p99_ratio <= args.p99_ratio,
        "points": acknowledged == result["points"]["stored"] and not dup["duplicates"],
    }
    result["passed"] = all(result["checks"].values())
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=300, help="seconds of load (300)")
    parser.add_argument(
        "--warmup",
        type=float,
        default=30,
        help="seconds before the first window (30; at most a quarter of the duration)",
    )
    parser.add_argument(
        "--window",
        type=float,
        default=60,
        help="seconds of the first and the last window compared (60)",
    )
    parser.add_argument(
        "--database-url",
        default=os.environ.get("BENCH_DATABASE_URL", DEFAULT_DATABASE_URL),
        help="PostgreSQL admin URL; a fresh database is made next to it",
    )
    parser.add_argument("--keep-database", action="store_true")
    parser.add_argument(
        "--rate-scale",
        type=float,
        default=1.0,
        help="multiply every load rate (1.0: ~40 requests/s + 5,000 points/s)",
    )
    parser.add_argument("--p99-ratio", type=float, default=1.5)
    parser.add_argument(
        "--rss-tolerance",
        type=float,
        default=0.10,
        help="allowed RSS growth, as a fraction of the first window's (0.10)",
    )
    parser.add_argument(
        "--rss-floor-mib",
        type=float,
        default=16,
        help="allowed RSS growth in MiB when larger than the fraction (16)",
    )
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    # Stages are deprecated in MLflow 3, and still what the registry load exercises.
    warnings.filterwarnings("ignore", category=FutureWarning)
    say(f"database: {redact(args.database_url)}")
    with tempfile.TemporaryDirectory(prefix="evtrack-soak-") as tmp:
        result = soak(args, Path(tmp))
    print_report(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, default=str))
    print(f"\nsoak {'passed' if result['passed'] else 'FAILED'}: {result['checks']}")
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    raise SystemExit(main())

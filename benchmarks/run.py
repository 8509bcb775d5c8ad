#!/usr/bin/env python
"""evtrack vs the reference MLflow server: same PostgreSQL, same machine, same run.

    python benchmarks/run.py               # everything (20-40 minutes on 2 cores)
    python benchmarks/run.py --quick       # smoke run at small scale (a few minutes)
    python benchmarks/run.py --only a,c    # some workloads

See ``--help`` for the workloads, and benchmarks/README.md for how to read the table.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import math
import os
import platform
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # the workload modules sit next to this file
    sys.path.insert(0, str(HERE))

import _mlflow_util  # noqa: E402,F401 - sets the mlflow client environment first
from _common import (  # noqa: E402
    BenchmarkError,
    Row,
    cpu_count,
    markdown_table,
    say,
    text_table,
)
from _context import Context  # noqa: E402
from _servers import (  # noqa: E402
    DEFAULT_DATABASE_URL,
    Databases,
    evtrack_server,
    fasttrackml_server,
    find_fml,
    mlflow_server,
    redact,
)

WORKLOADS = "abcdef"

DESCRIPTION = """\
Benchmark evtrack against the pip-installed reference `mlflow server`.

Both servers run on this machine, on free loopback ports, each with a fresh database on the
same PostgreSQL (created at the start, dropped at the end). Every workload runs against MLflow,
then against evtrack, and the script prints ONE table: workload, metric, mlflow, evtrack,
ratio, target, result. It also writes the table as Markdown and JSON to benchmarks/results/.

ratio is always evtrack's advantage: evtrack/mlflow for throughput, mlflow/evtrack for
times, so > 1 means evtrack is better. Targets are ratios against MLflow in the same run
(machines are shared and noisy; absolute numbers move, ratios much less), plus a few
absolute bounds.
"""

EPILOG = """\
workloads (select with --only, e.g. --only a,c,d):

  a  Official mlflow client, --procs-a (8) processes, each with its own MlflowClient and run,
     calling log_batch(run_id, metrics=[1000 Metric]) in a loop for --duration seconds.
     Reports acknowledged points/s and per-call latency p50/p99, then checks that each
     server stores exactly the acknowledged points (evtrack: after its read models catch
     up; the time that takes is its projection lag).
     Targets: >= 5x the points/s, <= 1/5 of the p99.

  b  evtrack only (MLflow has no equivalent; its column shows MLflow's (a) throughput):
     evtrack.client at full speed (run.log_metrics in a tight loop in --procs-b processes,
     then flush(): durable = acknowledged by the server) and a raw driver POSTing
     --native-batch point MessagePack requests to /api/2.0/evtrack/ingest.
     Reports durable points/s end to end and the projection lag after the last ack.
     Targets: >= 300,000 durable points/s, projection lag < 2 s.

  c  --raw-log-metric-calls (1000) sequential raw HTTP POSTs of log-metric (one keep-alive
     session) and --log-metric-calls (2000) sequential MlflowClient.log_metric calls, the
     servers interleaved in blocks of 50: p50/p99. Also times a bare PostgreSQL one-row
     INSERT + COMMIT (the floor), in the notes.
     Targets: raw p50 <= 2 ms; client p50 <= 1/2 of MLflow's.

  d  get_metric_history of a --history-small (100,000) and a --history-large (1,000,000)
     point metric: MlflowClient (pages of 25,000, protobuf parsing included), a raw HTTP
     paging loop (same pages, msgspec JSON) and one unpaginated request, median of
     --reps-history (3; fewer for calls that take minutes). MLflow's history is loaded via
     log_batch up to --api-load-max-points (100,000) and by COPY above (see
     --mlflow-history-load); evtrack's through native ingest.
     Targets: >= 20x faster; the large history under 2 s.

  e  search_runs(filter "metrics.acc > 0.5", order_by "metrics.acc DESC", max_results
     1000) over --runs-small (10,000) and --runs-large (100,000) runs, MlflowClient and raw
     HTTP, median of --reps-search (5), servers interleaved; plus the size in bytes of the
     JSON answer. All servers hold the same acc values, and each
     answer is checked against the expected 1000. MLflow's runs are loaded through the API
     up to --api-load-max-runs (10,000) and by SQL cloning of an API-created run above (see
     --mlflow-search-load); evtrack's through native ingest.
     FastTrackML is always loaded through the API.
     Targets: >= 10x faster; the large search under 300 ms; answer no larger than MLflow's.

  f  Server RSS (process tree: MLflow's uvicorn workers count) sampled every 0.5 s during
     (a) and (b): peak, and growth of the last third over the middle third.
     Target: flat (growth under max(16 MiB, 5% of the level)). Selecting f runs a and b.

examples:
  python benchmarks/run.py --quick
  python benchmarks/run.py --only a,b,f --duration 60
  python benchmarks/run.py --only e --runs-large 50000 --mlflow-search-load api
  python benchmarks/run.py --database-url postgresql://bench:secret@db:5432/postgres
"""

# name: (full default, --quick default)
SCALE: dict[str, tuple[Any, Any]] = {
    "duration": (30.0, 5.0),
    "log_metric_calls": (2000, 200),
    "raw_log_metric_calls": (1000, 1000),
    "history_small": (100_000, 10_000),
    "history_large": (1_000_000, 50_000),
    "reps_history": (3, 1),
    "runs_small": (10_000, 1000),
    "runs_large": (100_000, 5000),
    "reps_search": (5, 3),
    "api_load_max_runs": (10_000, 1000),
    "api_load_max_points": (100_000, 10_000),
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="benchmarks/run.py",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--only",
        default="a,b,c,d,e,f",
        metavar="LIST",
        help="comma-separated workloads to run, e.g. a,c,d (default: all)",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: 5 s ingest, 200 log_metric calls, 10k/50k-point "
        "histories, 1k/5k runs (explicit flags still win)",
    )
    p.add_argument(
        "--database-url",
        default=os.environ.get("BENCH_DATABASE_URL", DEFAULT_DATABASE_URL),
        help="PostgreSQL to use (a maintenance database URL; two fresh databases "
        "are created next to it and dropped at the end). Default: "
        f"{DEFAULT_DATABASE_URL} (env BENCH_DATABASE_URL)",
    )
    p.add_argument(
        "--keep-databases",
        action="store_true",
        help="do not drop the two databases at the end (for inspection)",
    )
    scale = p.add_argument_group("scale")
    scale.add_argument("--duration", type=float, help="seconds of (a) and (b) load (30)")
    scale.add_argument("--procs-a", type=int, default=8, help="(a) client processes (default 8)")
    scale.add_argument(
        "--batch-a",
        type=int,
        default=1000,
        help="(a) points per log_batch call, a multiple of 10 (default 1000)",
    )
    scale.add_argument(
        "--procs-b",
        type=int,
        default=max(2, cpu_count()),
        help="(b) client processes (default: number of CPUs, at least 2)",
    )
    scale.add_argument(
        "--native-batch",
        type=int,
        default=50_000,
        help="(b) points per raw native ingest request (default 50,000)",
    )
    scale.add_argument(
        "--native-format",
        choices=("packed", "lists"),
        default="packed",
        help="(b) how raw ingest requests carry points: packed little-endian arrays "
        "(the bulk form, default) or msgpack lists of numbers",
    )
    scale.add_argument("--log-metric-calls", type=int, help="(c) MlflowClient calls (2000)")
    scale.add_argument(
        "--raw-log-metric-calls", type=int, help="(c) raw HTTP log-metric calls (1000)"
    )
    scale.add_argument("--history-small", type=int, help="(d) points (100,000)")
    scale.add_argument("--history-large", type=int, help="(d) points (1,000,000)")
    scale.add_argument("--reps-history", type=int, help="(d) repetitions, median (3)")
    scale.add_argument("--runs-small", type=int, help="(e) runs (10,000)")
    scale.add_argument("--runs-large", type=int, help="(e) runs (100,000)")
    scale.add_argument("--reps-search", type=int, help="(e) repetitions, median (5)")
    scale.add_argument(
        "--mlflow-search-load",
        choices=("auto", "api", "sql"),
        default="auto",
        help="(e) how MLflow's runs are loaded: api (create_run + log_batch per "
        "run), sql (COPY clones of one API-created run), auto (api up to "
        "--api-load-max-runs, sql above; default)",
    )
    scale.add_argument(
        "--api-load-max-runs", type=int, help="(e) largest run set loaded via the API (10,000)"
    )
    scale.add_argument(
        "--mlflow-history-load",
        choices=("auto", "api", "sql"),
        default="auto",
        help="(d) how MLflow's histories are loaded: api (log_batch of 1000 "
        "from --load-procs processes), sql (COPY, the last 1000 points via "
        "log_batch), auto (api up to --api-load-max-points, sql above; default)",
    )
    scale.add_argument(
        "--api-load-max-points",
        type=int,
        help="(d) largest history loaded via the API (100,000)",
    )
    scale.add_argument(
        "--load-procs",
        type=int,
        default=8,
        help="processes loading data into MLflow for (d) and (e) (default 8)",
    )
    srv = p.add_argument_group("servers")
    srv.add_argument(
        "--mlflow-workers", type=int, default=2, help="`mlflow server --workers` (default 2)"
    )
    srv.add_argument(
        "--fml",
        metavar="PATH",
        help="FastTrackML's `fml` binary (default: next to this interpreter, where `pip install "
        "--no-deps fasttrackml==0.6.0` puts it, or on PATH)",
    )
    srv.add_argument(
        "--no-fasttrackml",
        action="store_true",
        help="leave out the third contender, FastTrackML (its column then shows —)",
    )
    srv.add_argument(
        "--python",
        default=sys.executable,
        help="interpreter that runs both servers (default: this one)",
    )
    srv.add_argument(
        "--start-timeout", type=float, default=240, help="seconds to wait for /health (default 240)"
    )
    srv.add_argument(
        "--lag-timeout",
        type=float,
        default=600,
        help="seconds to wait for evtrack's read models to catch up (default 600)",
    )
    out = p.add_argument_group("output")
    out.add_argument(
        "--results-dir",
        default=str(HERE / "results"),
        help="where the Markdown and JSON results go (default benchmarks/results)",
    )
    out.add_argument("--no-save", action="store_true", help="print the table only")
    out.add_argument(
        "--profile",
        metavar="DIR",
        help="sample the evtrack server with py-spy during each workload (pip install "
        "py-spy); writes DIR/evtrack-<workload>.txt (collapsed stacks, for flamegraph.pl or "
        "speedscope) and DIR/evtrack-<workload>.top.txt (hottest functions)",
    )
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    args = build_parser().parse_args(argv)
    for name, (full, quick) in SCALE.items():
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)
    selected = {c for w in args.only.lower().split(",") for c in w.strip()}
    unknown = selected - set(WORKLOADS)
    if unknown:
        raise SystemExit(f"run.py: unknown workloads {sorted(unknown)}; choose from a-f")
    if "f" in selected:
        selected |= {"a", "b"}
    args.selected = "".join(sorted(selected))
    if args.batch_a % 10:
        raise SystemExit("run.py: --batch-a must be a multiple of 10")
    if args.native_batch % 10:
        raise SystemExit("run.py: --native-batch must be a multiple of 10")
    return args


# ------------------------------------------------------------------------------ (f)


def _flat(summary: dict[str, float]) -> bool | None:
    growth, level = summary.get("growth_mib"), summary.get("middle_mean_mib")
    if growth is None or level is None or math.isnan(growth):
        return None
    return growth <= max(16.0, 0.05 * level)


def rss_rows(ctx: Context) -> list[Row]:
    rss = ctx.shared.get("rss", {})
    rows: list[Row] = []
    labels = {"a": "(a) log_batch", "b-client": "(b) evtrack.client", "b-raw": "(b) raw ingest"}
    for phase, label in labels.items():
        if phase not in rss:
            continue
        m = rss[phase].get("mlflow", {})
        e = rss[phase].get("evtrack", {})
        f = rss[phase].get("fasttrackml", {})
        rows.append(
            Row(
                "f",
                f"peak server RSS during {label}",
                "MiB",
                m.get("peak_mib"),
                e.get("peak_mib"),
                "lower",
                target="bounded",
                fasttrackml=f.get("peak_mib"),
            )
        )
        rows.append(
            Row(
                "f",
                f"RSS growth during {label}",
                "MiB+-",
                m.get("growth_mib"),
                e.get("growth_mib"),
                "none",
                target="flat",
                verdict=_flat(e),
                note="mean of the last third minus mean of the middle third",
                fasttrackml=f.get("growth_mib"),
            )
        )
    return rows


# ------------------------------------------------------------------------------ profiling


class Profiler:
    """py-spy sampling the evtrack server (all threads, idle excluded) into collapsed stacks."""

    def __init__(self, pid: int, path: Path) -> None:
        exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        if not Path(exe).exists():
            raise BenchmarkError("--profile needs py-spy: pip install py-spy")
        self.path = path
        self.proc = subprocess.Popen(
            [
                exe,
                "record",
                "--pid",
                str(pid),
                "--rate",
                "100",
                "--nonblocking",
                "--format",
                "raw",
                "--output",
                str(path),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def stop(self) -> Path | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if not self.path.exists():
            return None
        top = self.path.with_suffix(".top.txt")
        top.write_text(summarize_profile(self.path))
        return top


def summarize_profile(path: Path, limit: int = 30) -> str:
    """Hottest functions of a collapsed-stack file: own samples, and inclusive samples of
    evtrack's own functions. Stacks parked in the event loop's ``select`` are idle waiting
    (py-spy's --nonblocking mode cannot always tell) and are counted separately.

    C code has no frames of its own: asyncpg's protocol (Cython) shows up as the asyncio
    transport callback that calls it (``_read_ready__data_received``), socket writes as
    ``_SelectorSocketTransport.write``."""
    own: dict[str, int] = {}
    incl: dict[str, int] = {}
    total = idle = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [re.sub(r":\d+\)$", ")", f) for f in stack.split(";")]
        if frames[-1].startswith(("EpollSelector.select", "select (")):
            idle += n
            continue
        total += n
        own[frames[-1]] = own.get(frames[-1], 0) + n
        for f in set(frames):
            if ("evtrack/" in f or "projections/" in f) and "evtrack/cli.py" not in f:
                incl[f] = incl.get(f, 0) + n
    if not total:
        return "no samples\n"

    def block(title: str, table: dict[str, int]) -> list[str]:
        rows = sorted(table.items(), key=lambda kv: -kv[1])[:limit]
        return [title] + [f"{100 * n / total:6.1f}%  {name}" for name, n in rows] + [""]

    return "\n".join(
        [
            f"{total} busy samples at 100 Hz from {path.name} ({idle} more idle in select)",
            "",
            *block("own time (leaf frames):", own),
            *block("inclusive time, evtrack functions:", incl),
        ]
    )


# ------------------------------------------------------------------------------ output


def _git_rev() -> str:
    with contextlib.suppress(Exception):
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=HERE,
            text=True,
            capture_output=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain"], cwd=HERE, text=True, capture_output=True, timeout=10
        ).stdout.strip()
        return rev + ("+dirty" if dirty else "")
    return "unknown"


def environment(dbs: Databases) -> dict[str, str]:
    cpu = platform.processor() or "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = "unknown"
    with contextlib.suppress(Exception):
        import psutil

        mem = f"{psutil.virtual_memory().total / (1 << 30):.1f} GiB"
    versions = {}
    for pkg in ("mlflow", "evtrack", "fasttrackml"):
        try:
            from importlib.metadata import version

            versions[pkg] = version(pkg)
        except Exception:
            versions[pkg] = "?"
    pg = "?"
    with contextlib.suppress(Exception):
        pg = dbs.server_version()
    return {
        "cpu": f"{cpu}, {cpu_count()} usable CPUs",
        "memory": mem,
        "os": platform.platform(),
        "python": platform.python_version(),
        "postgresql": pg,
        "mlflow": versions["mlflow"],
        "fasttrackml": versions["fasttrackml"],
        "evtrack": f"{versions['evtrack']} (git {_git_rev()})",
    }


def render_markdown(
    ctx: Context, env: dict[str, str], command: str, started: str, elapsed: float
) -> str:
    lines = [
        f"# evtrack vs MLflow and FastTrackML: {started}",
        "",
        f"Command: `{command}` ({elapsed / 60:.1f} minutes)",
        "",
        "Environment: " + "; ".join(f"{k} {v}" for k, v in env.items()),
        "",
        "All servers ran on this machine against the same PostgreSQL (a fresh database each), "
        "with the clients on the same machine; workloads interleave the contenders where they "
        "can (A B C A B C, medians), else run them one after the other. `vs mlflow` and "
        "`vs fml` are evtrack's advantage (evtrack/other for throughput, other/evtrack for "
        "times; > 1 is better). Targets are against MLflow.",
        "",
        markdown_table(ctx.rows),
        "",
    ]
    if ctx.notes:
        lines += ["Notes:", ""] + [f"- {n}" for n in ctx.notes] + [""]
    return "\n".join(lines)


def save(
    ctx: Context, env: dict[str, str], command: str, started: dt.datetime, elapsed: float
) -> Path:
    out = Path(ctx.args.results_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = started.strftime("%Y-%m-%d") + ("-quick" if ctx.args.quick else "")
    path, n = out / f"{stem}.md", 2
    while path.exists() or path.with_suffix(".json").exists():
        path, n = out / f"{stem}-{n}.md", n + 1
    stamp = started.strftime("%Y-%m-%d %H:%M UTC")
    path.write_text(render_markdown(ctx, env, command, stamp, elapsed))
    settings = {k: v for k, v in vars(ctx.args).items() if k != "database_url"}
    settings["database_url"] = redact(ctx.args.database_url)
    path.with_suffix(".json").write_text(
        json.dumps(
            {
                "started": started.isoformat(),
                "elapsed_s": elapsed,
                "command": command,
                "environment": env,
                "settings": settings,
                "rows": [r.to_json() for r in ctx.rows],
                "notes": ctx.notes,
                "raw": ctx.shared,
            },
            indent=2,
            default=str,
        )
    )
    return path


# ------------------------------------------------------------------------------ main


def machine_load() -> str:
    """``uptime``'s line (load averages over 1, 5 and 15 minutes): how busy the shared
    machine was when the run began."""
    try:
        return subprocess.run(["uptime"], text=True, capture_output=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        with contextlib.suppress(OSError):
            return "loadavg " + Path("/proc/loadavg").read_text().strip()
    return "unknown"


def _interrupt(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # Clean up (servers, databases) on SIGTERM and SIGINT too; a shell starts background
    # jobs with SIGINT ignored, which would leave no way to stop the run cleanly.
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    import wl_history
    import wl_log_batch
    import wl_log_metric
    import wl_native
    import wl_search

    modules = {
        "a": wl_log_batch,
        "b": wl_native,
        "c": wl_log_metric,
        "d": wl_history,
        "e": wl_search,
    }
    started = dt.datetime.now(dt.UTC)
    t_start = time.monotonic()
    command = "python benchmarks/run.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    workdir = Path(tempfile.mkdtemp(prefix="evtrack-bench-"))
    dbs = Databases(args.database_url)
    tag = f"bench_{started:%Y%m%d_%H%M%S}_{os.getpid()}"
    servers = []
    ctx: Context | None = None
    failed = False
    try:
        env = environment(dbs)  # also proves the database is reachable
        say(f"PostgreSQL {env['postgresql']} at {redact(args.database_url)}; work dir {workdir}")
        load = machine_load()
        say(f"machine load at start: {load}")
        ml = mlflow_server(dbs.create(f"{tag}_mlflow"), workdir, args.python, args.mlflow_workers)
        ev = evtrack_server(dbs.create(f"{tag}_evtrack"), workdir, args.python)
        fml_bin = None if args.no_fasttrackml else find_fml(args.fml)
        fml = None
        fml_absent = "left out (--no-fasttrackml)" if args.no_fasttrackml else ""
        if fml_bin:
            fml = fasttrackml_server(dbs.create(f"{tag}_fasttrackml"), workdir, fml_bin)
        elif not fml_absent:
            fml_absent = "`fml` not found (pip install --no-deps fasttrackml==0.6.0, or --fml)"
        servers = [ml, *([fml] if fml else []), ev]
        for s in servers:
            s.start()
        startup = {s.name: s.wait_healthy(args.start_timeout) for s in servers}
        ctx = Context(args, ml, ev, workdir, fasttrackml=fml, fml_absent=fml_absent)
        ctx.shared["startup_s"] = startup
        ctx.shared["load_at_start"] = load
        ctx.note(f"machine load at start (uptime): {load}")
        if fml_absent:
            ctx.note(f"FastTrackML: {fml_absent}")
        for w in args.selected:
            if w not in modules:
                continue
            say(f"=== workload ({w}) ===")
            t = time.monotonic()
            profiler = None
            if args.profile:
                Path(args.profile).mkdir(parents=True, exist_ok=True)
                assert ev.proc is not None
                profiler = Profiler(ev.proc.pid, Path(args.profile) / f"evtrack-{w}.txt")
            try:
                modules[w].run(ctx)
            except Exception as exc:
                failed = True
                detail = traceback.format_exc() if not isinstance(exc, BenchmarkError) else ""
                say(f"workload ({w}) failed: {exc}\n{detail}")
                first = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
                ctx.rows.append(Row(w, "ERROR (see notes)", "", None, None, verdict=False))
                ctx.note(f"({w}) failed: {first}")
                dead = [s.name for s in servers if not s.alive()]
                if dead:
                    say(f"server(s) {dead} died; stopping here")
                    for s in servers:
                        if not s.alive():
                            say(f"{s.name} log tail:\n{s.log_tail()}")
                    break
            finally:
                if profiler is not None:
                    top = profiler.stop()
                    if top is not None:
                        say(f"evtrack profile of ({w}): {top}")
                        ctx.note(f"({w}) evtrack profile: {top}")
            say(f"=== workload ({w}) done in {time.monotonic() - t:.0f}s ===")
        ctx.rows += rss_rows(ctx)
        seen: set[tuple[str, str]] = set()
        for r in ctx.rows:  # one note per workload and reason, not per row
            why = (r.workload, r.fml_missing)
            if r.fasttrackml is None and r.fml_missing and why not in seen:
                seen.add(why)
                ctx.note(f"({r.workload}) fasttrackml —: {r.fml_missing}")
    except BenchmarkError as exc:
        say(f"error: {exc}")
        failed = True
    except KeyboardInterrupt:
        say("interrupted")
        failed = True
    finally:
        for s in servers:
            s.stop()
        if ctx is not None:
            ctx.close()
        if args.keep_databases:
            say(f"kept databases {dbs.created}")
        else:
            dbs.drop_all()
        if failed:
            say(f"server logs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    if ctx is None or not ctx.rows:
        return 2
    elapsed = time.monotonic() - t_start
    print()
    print(text_table(ctx.rows))
    if ctx.notes:
        print()
        for n in ctx.notes:
            print(f"  * {n}")
    if not args.no_save:
        path = save(ctx, env, command, started, elapsed)
        print(f"\nwritten: {path} and {path.with_suffix('.json').name}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

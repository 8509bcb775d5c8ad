"""How fast `evtrack import mlflow` copies a live MLflow server, against the official client.

Seeds the pip-installed reference `mlflow server` (PostgreSQL backend, proxied artifacts)
with experiments, runs, metric points and an artifact per run, then copies it three ways,
each into its own fresh evtrack server (running, so its projectors work meanwhile, as they
would in production):

  client    the official client: search experiments and runs, create them on evtrack,
            get_metric_history per key, log_batch 1000 points at a time, params, tags,
            terminate, download and log every artifact;
  rest      `evtrack import mlflow --from URL` (everything through the source's REST API);
  database  the same with `--source-database` (metric points read from the source's
            PostgreSQL; the rest through the API).

Each copy is timed from start to exit; the points rate is the metric points copied per
second of that time. Results go to benchmarks/results/<date>-import.md and .json.

    python benchmarks/import_speed.py                       # 8 runs x 2 keys x 25,000 points
    python benchmarks/import_speed.py --runs 4 --points 5000  # a quick look
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "600")

from _common import say
from _servers import Databases, evtrack_server, mlflow_server

RESULTS = Path(__file__).resolve().parent / "results"


def seed(url: str, runs: int, keys: int, points: int, artifact_bytes: int) -> int:
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param

    client = MlflowClient(url)
    experiments = [client.create_experiment(f"bench-import-{i}") for i in range(2)]
    base = 1_700_000_000_000
    blob = os.urandom(artifact_bytes)

    def one(i: int) -> None:
        c = MlflowClient(url)
        run = c.create_run(experiments[i % 2], run_name=f"run-{i}", start_time=base)
        run_id = run.info.run_id
        c.log_batch(run_id, params=[Param("lr", "0.01"), Param("i", str(i))])
        for k in range(keys):
            batch: list[Metric] = []
            for step in range(points):
                batch.append(Metric(f"m{k}", step * 0.001 + k, base + step, step))
                if len(batch) == 1000:
                    c.log_batch(run_id, metrics=batch)
                    batch = []
            if batch:
                c.log_batch(run_id, metrics=batch)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "weights.bin"
            path.write_bytes(blob)
            c.log_artifact(run_id, str(path), "model")
        c.set_terminated(run_id, "FINISHED", end_time=base + points)

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(one, range(runs)))
    return runs * keys * points


def client_copy(source: str, target: str) -> int:
    """Copy with the official client only, as a user without evtrack's importer would."""
    from mlflow import MlflowClient
    from mlflow.entities import Param, RunTag, ViewType

    src, dst = MlflowClient(source), MlflowClient(target)
    copied = 0
    for exp in src.search_experiments(view_type=ViewType.ALL):
        if exp.experiment_id == "0":
            target_id = "0"
        else:
            target_id = dst.create_experiment(exp.name, tags=exp.tags)
        for run in src.search_runs([exp.experiment_id], run_view_type=ViewType.ALL):
            tags = {k: v for k, v in run.data.tags.items()}
            new = dst.create_run(
                target_id, start_time=run.info.start_time, tags=tags, run_name=run.info.run_name
            )
            rid = new.info.run_id
            dst.log_batch(
                rid,
                params=[Param(k, v) for k, v in run.data.params.items()],
                tags=[RunTag(k, v) for k, v in tags.items()],
            )
            for key in run.data.metrics:
                history = src.get_metric_history(run.info.run_id, key)
                for start in range(0, len(history), 1000):
                    dst.log_batch(rid, metrics=history[start : start + 1000])
                copied += len(history)
            with tempfile.TemporaryDirectory() as tmp:
                local = src.download_artifacts(run.info.run_id, "", tmp)
                dst.log_artifacts(rid, local)
            dst.set_terminated(rid, run.info.status, end_time=run.info.end_time)
    return copied


def cli_import(
    source: str, dsn: str, artifacts: Path, extra: list[str]
) -> subprocess.CompletedProcess[str]:
    cmd = [
        sys.executable,
        "-m",
        "evtrack",
        "import",
        "mlflow",
        "--from",
        source,
        "--database-url",
        dsn,
        "--artifacts-uri",
        str(artifacts),
        "--no-progress",
        *extra,
    ]
    say(" ".join(cmd))
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
    if done.returncode != 0:
        raise RuntimeError(f"import failed:\n{done.stdout}\n{done.stderr}")
    say(done.stdout.strip())
    return done


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=8)
    parser.add_argument("--keys", type=int, default=2)
    parser.add_argument("--points", type=int, default=25_000, help="points per key per run")
    parser.add_argument("--artifact-bytes", type=int, default=1 << 20)
    parser.add_argument(
        "--database-url",
        default=os.environ.get(
            "BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
        ),
    )
    parser.add_argument("--mlflow-workers", type=int, default=2)
    args = parser.parse_args()

    databases = Databases(args.database_url)
    servers: list[Any] = []
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-import-") as tmp:
        work = Path(tmp)
        try:
            src_db = databases.create("bench_import_src")
            source = mlflow_server(src_db, work, sys.executable, args.mlflow_workers)
            servers.append(source)
            source.start()
            source.wait_healthy(180)
            t0 = time.monotonic()
            total = seed(source.url, args.runs, args.keys, args.points, args.artifact_bytes)
            say(f"seeded {total:,} points in {time.monotonic() - t0:.0f} s")

            def destination(name: str) -> Any:
                dsn = databases.create(f"bench_import_{name}")
                (work / name).mkdir()
                server = evtrack_server(dsn, work / name, sys.executable)
                servers.append(server)
                server.start()
                server.wait_healthy(120)
                return server

            ways: dict[str, Any] = {}
            target = destination("client")
            say(f"client copy (load {load()})")
            t0 = time.monotonic()
            copied = client_copy(source.url, target.url)
            ways["client"] = (time.monotonic() - t0, copied)
            target.stop()  # the machine's PostgreSQL is shared: free its connections

            for name, extra in (
                ("rest", []),
                ("database", ["--source-database", source.db_url]),
            ):
                target = destination(name)
                say(f"evtrack import ({name}, load {load()})")
                t0 = time.monotonic()
                cli_import(source.url, target.db_url, work / name / "evtrack-artifacts", extra)
                ways[name] = (time.monotonic() - t0, total)
                target.stop()
            results = {
                "date": time.strftime("%Y-%m-%d"),
                "dataset": {
                    "runs": args.runs,
                    "keys_per_run": args.keys,
                    "points_per_key": args.points,
                    "points": total,
                    "artifact_bytes_per_run": args.artifact_bytes,
                },
                "source": f"mlflow server (PostgreSQL backend, --workers {args.mlflow_workers})",
                "machine": {"cpus": os.cpu_count(), "load_at_end": load()},
                "ways": {
                    name: {"seconds": round(s, 2), "points": n, "points_per_s": round(n / s)}
                    for name, (s, n) in ways.items()
                },
            }
            base = ways["client"][1] / ways["client"][0]
            for name in ("rest", "database"):
                rate = ways[name][1] / ways[name][0]
                results["ways"][name]["vs_client"] = round(rate / base, 1)
        finally:
            for server in servers:
                server.stop()
            databases.drop_all()
    RESULTS.mkdir(exist_ok=True)
    stem = RESULTS / f"{results['date']}-import"
    stem.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    ways = results["ways"]
    d = results["dataset"]
    lines = [
        f"# Import speed, {results['date']}",
        "",
        f"Source: the reference {results['source']}, seeded with {d['runs']} runs x "
        f"{d['keys_per_run']} metrics x {d['points_per_key']:,} points ({d['points']:,} "
        f"points) and a {d['artifact_bytes_per_run']:,}-byte artifact per run. "
        f"{results['machine']['cpus']} CPUs shared by the source, the target "
        "evtrack server, PostgreSQL and the copier. `python benchmarks/import_speed.py`.",
        "",
        "| way | seconds | points/s | vs official client |",
        "|---|---:|---:|---:|",
    ]
    labels = {
        "client": "official client (get_metric_history + log_batch, artifacts down and up)",
        "rest": "`evtrack import mlflow --from URL`",
        "database": "`evtrack import mlflow --from URL --source-database URI`",
    }
    for name, row in ways.items():
        ratio = row.get("vs_client", 1.0)
        lines.append(
            f"| {labels[name]} | {row['seconds']:.1f} | {row['points_per_s']:,} | {ratio:.1f}x |"
        )
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

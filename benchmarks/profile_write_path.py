#!/usr/bin/env python
"""Where does a single ``log-metric`` request's time go in evtrack?

    python benchmarks/profile_write_path.py [--calls 1000] [--py-spy]

Starts evtrack's app in this process (fresh database next to ``--database-url``, dropped at
the end) and drives it from a separate client process: ``--calls`` sequential raw HTTP
``POST /api/2.0/mlflow/runs/log-metric`` through one keep-alive ``requests.Session``, the
same call as row (c) of ``run.py``. It reports, per phase:

* client-side p50/p99 of the call, and of ``GET /health`` (aiohttp + loopback floor);
* every SQL statement sent by any asyncpg connection of this process (request pool,
  projectors, doorbell), counted and timed with asyncpg's query loggers, per request;
* a bare one-row ``INSERT`` + ``COMMIT`` through asyncpg on the same database: the floor.

Phases: projectors in-process (the default server), ``run_projectors=False`` (what the
request path costs without the read models catching up on the same event loop and database),
and log level info (a JSON line per request, the server's default; the others use warning,
as run.py does). With ``--py-spy`` two more passes (with and without projectors) sample this
process with py-spy and print the hottest frames (the header's "100 Hz" comes from run.py's
summary; these samples are taken at 1 kHz). The info phase writes a log line per request to
stderr: redirect it (2>/dev/null).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _common import percentile  # noqa: E402
from _servers import DEFAULT_DATABASE_URL, Databases, free_port  # noqa: E402

CLIENT = r"""
import json, sys, time, requests
url, run_id, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
s = requests.Session()
def call(i, key):
    body = ('{"run_id":"%s","key":"%s","value":%r,"timestamp":%d,"step":%d}'
            % (run_id, key, 1.0 / (i + 1), int(time.time() * 1000), i)).encode()
    t = time.perf_counter()
    r = s.post(url + "/api/2.0/mlflow/runs/log-metric", data=body,
               headers={"Content-Type": "application/json"})
    took = time.perf_counter() - t
    assert r.status_code == 200, r.text
    return took
for i in range(50):
    call(i, "warmup")
health = []
for i in range(200):
    t = time.perf_counter(); r = s.get(url + "/health"); health.append(time.perf_counter() - t)
print("GO", flush=True)
sys.stdin.readline()
lat = [call(i, "loss") for i in range(n)]
print(json.dumps({"lat": lat, "health": health}), flush=True)
"""


class QueryLog:
    """Every statement of every asyncpg connection of this process, while ``on``."""

    def __init__(self) -> None:
        self.on = False
        self.rows: list[tuple[str, float]] = []

    def __call__(self, record: Any) -> None:
        if self.on:
            text = re.sub(r"\s+", " ", record.query).strip()
            self.rows.append((text[:110], record.elapsed))


def install_query_log(qlog: QueryLog) -> None:
    import asyncpg.connection

    original = asyncpg.connection.Connection.__init__

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        self.add_query_logger(qlog)

    asyncpg.connection.Connection.__init__ = init  # type: ignore[method-assign]


async def bare_floor(dsn: str, n: int) -> float:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("CREATE TABLE IF NOT EXISTS bench_floor (k text, v float8, s bigint)")
        lat = []
        for i in range(n):
            t = time.perf_counter()
            async with conn.transaction():
                await conn.execute("INSERT INTO bench_floor VALUES ('loss', $1, $2)", 1.0, i)
            lat.append(time.perf_counter() - t)
        await conn.execute("DROP TABLE bench_floor")
        return percentile(lat, 50) * 1000
    finally:
        await conn.close()


async def phase(
    dsn: str, n: int, projectors: bool, qlog: QueryLog, spy: bool, run_id: str | None
) -> dict[str, Any]:
    """One server, one client pass. Without projectors, ``run_id`` (a run an earlier phase
    created) is used: runs/create answers from the read model, which then never catches up."""
    from aiohttp import web

    from evtrack.config import Settings
    from evtrack.server import create_app

    port = free_port()
    art = tempfile.mkdtemp(prefix="evtrack-prof-")
    settings = Settings(
        host="127.0.0.1", port=port, database_url=dsn, artifacts_uri=art, run_projectors=projectors
    )
    runner = web.AppRunner(create_app(settings, dsn), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    url = f"http://127.0.0.1:{port}"
    try:
        import requests

        def setup() -> str:
            s = requests.Session()
            exp = s.post(
                url + "/api/2.0/mlflow/experiments/create", json={"name": f"p-{time.time()}"}
            ).json()["experiment_id"]
            run = s.post(url + "/api/2.0/mlflow/runs/create", json={"experiment_id": exp})
            if run.status_code != 200:
                raise RuntimeError(f"runs/create: {run.status_code} {run.text[:300]}")
            return str(run.json()["run"]["info"]["run_id"])

        run_id = run_id or await asyncio.to_thread(setup)
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            CLIENT,
            url,
            run_id,
            str(n),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        assert proc.stdout is not None and proc.stdin is not None
        assert (await proc.stdout.readline()).strip() == b"GO"
        await asyncio.sleep(0.5)  # let the warm-up's projector work finish
        spy_proc = None
        if spy:
            out = Path(tempfile.mkdtemp()) / "spy.txt"
            spy_proc = subprocess.Popen(
                [
                    str(Path(sys.executable).parent / "py-spy"),
                    "record",
                    "--pid",
                    str(os.getpid()),
                    "--rate",
                    "1000",
                    "--format",
                    "raw",
                    "--nonblocking",
                    "--output",
                    str(out),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            await asyncio.sleep(1.0)
        qlog.rows.clear()
        qlog.on = True
        proc.stdin.write(b"go\n")
        await proc.stdin.drain()
        result = json.loads(await proc.stdout.readline())
        await asyncio.sleep(0.3)  # the last request's projector work
        qlog.on = False
        await proc.wait()
        profile = None
        if spy_proc is not None:
            import signal

            spy_proc.send_signal(signal.SIGINT)
            await asyncio.to_thread(spy_proc.wait, 60)
            from run import summarize_profile

            profile = summarize_profile(out, limit=40)
        return {
            "result": result,
            "queries": list(qlog.rows),
            "profile": profile,
            "run_id": run_id,
        }
    finally:
        await runner.cleanup()


def report(name: str, n: int, ph: dict[str, Any]) -> None:
    lat, health = ph["result"]["lat"], ph["result"]["health"]
    print(f"\n## {name}")
    print(
        f"log-metric p50 {percentile(lat, 50) * 1000:.2f} ms, p90 "
        f"{percentile(lat, 90) * 1000:.2f} ms, p99 {percentile(lat, 99) * 1000:.2f} ms "
        f"over {n}; GET /health p50 {percentile(health, 50) * 1000:.2f} ms"
    )
    by: dict[str, list[float]] = collections.defaultdict(list)
    for q, el in ph["queries"]:
        by[q].append(el)
    total = sum(len(v) for v in by.values())
    secs = sum(sum(v) for v in by.values())
    print(
        f"SQL statements: {total} = {total / n:.2f} per request, {secs / n * 1000:.2f} ms "
        "per request waiting on them (client-side elapsed, all connections)"
    )
    for q, v in sorted(by.items(), key=lambda kv: -sum(kv[1])):
        print(
            f"  {len(v) / n:5.2f}/req  p50 {percentile(v, 50) * 1000:6.3f} ms  "
            f"sum/req {sum(v) / n * 1000:6.3f} ms  {q}"
        )
    if ph["profile"]:
        print(ph["profile"])


async def main_async(args: argparse.Namespace) -> None:
    from evtrack._logging import configure_logging

    qlog = QueryLog()
    install_query_log(qlog)
    dbs = Databases(args.database_url)
    try:
        dsn = dbs.create(f"bench_prof_{os.getpid()}")
        floor = await bare_floor(dsn, args.calls)
        print(f"bare asyncpg BEGIN; INSERT; COMMIT p50: {floor:.2f} ms (before)")
        run_id = None
        phases: list[tuple[str, bool, bool, str]] = [
            (
                "projectors in-process, log level warning (as run.py starts it)",
                True,
                False,
                "warning",
            ),
            ("no projectors in the server (--no-projectors)", False, False, "warning"),
            ("projectors in-process, log level info (the server's default)", True, False, "info"),
        ]
        if args.py_spy:
            phases += [
                ("projectors in-process, sampled by py-spy", True, True, "warning"),
                ("no projectors, sampled by py-spy", False, True, "warning"),
            ]
        for name, projectors, spy, level in phases:
            configure_logging(level)
            ph = await phase(dsn, args.calls, projectors, qlog, spy, run_id)
            run_id = ph["run_id"]
            report(name, args.calls, ph)
        floor = await bare_floor(dsn, args.calls)
        print(f"\nbare asyncpg BEGIN; INSERT; COMMIT p50: {floor:.2f} ms (after)")
    finally:
        dbs.drop_all()


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--calls", type=int, default=1000)
    p.add_argument(
        "--py-spy", action="store_true", help="also sample with py-spy (pip install py-spy)"
    )
    p.add_argument(
        "--database-url", default=os.environ.get("BENCH_DATABASE_URL", DEFAULT_DATABASE_URL)
    )
    asyncio.run(main_async(p.parse_args()))


if __name__ == "__main__":
    main()

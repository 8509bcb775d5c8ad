"""Server memory under concurrent large JSON bodies (issue 9: "eight concurrent 60 MiB JSON
bodies take the server from 75 to 758 MB").

Starts ``python -m evtrack server`` (with the Python given, so an older checkout's venv can be
measured the same way), waits until it is idle, sends ``--clients`` concurrent POSTs of
``--size-mib`` MiB of JSON each to ``experiments/create`` (a name far too long: the server
reads and decodes the whole body, then refuses it), and reports the server's RSS before, its
peak during (``VmHWM``), after, and the answers' statuses.

    python benchmarks/body_memory.py --database-url postgresql://postgres@127.0.0.1/postgres
    python benchmarks/body_memory.py --python /path/to/other/venv/bin/python --clients 8
"""

from __future__ import annotations

import argparse
import http.client
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections import Counter

import asyncpg

MiB = 1024 * 1024


def _status_kib(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} for {pid}")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _create_database(admin_dsn: str) -> tuple[str, str]:
    import asyncio

    name = f"evtrack_bench_{uuid.uuid4().hex[:12]}"

    async def run(sql: str) -> None:
        conn = await asyncpg.connect(admin_dsn)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run(f'CREATE DATABASE "{name}"'))
    return name, admin_dsn.rsplit("/", 1)[0] + "/" + name


def _drop_database(admin_dsn: str, name: str) -> None:
    import asyncio

    async def run() -> None:
        conn = await asyncpg.connect(admin_dsn)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()

    asyncio.run(run())


def _send(port: int, body: bytes, out: list[int | str]) -> None:
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
        conn.request(
            "POST",
            "/api/2.0/mlflow/experiments/create",
            body=body,
            headers={"Content-Type": "application/json"},
        )
        response = conn.getresponse()
        response.read()
        out.append(response.status)
        conn.close()
    except OSError as exc:
        out.append(type(exc).__name__)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--database-url",
        default=os.environ.get(
            "BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
        ),
        help="an admin DSN; a fresh database is created next to it and dropped after",
    )
    parser.add_argument("--python", default=sys.executable, help="the Python that runs evtrack")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--size-mib", type=int, default=60)
    parser.add_argument("server_args", nargs="*", help="extra `evtrack server` flags (after --)")
    args = parser.parse_args()

    name, dsn = _create_database(args.database_url)
    port = _free_port()
    artifacts = tempfile.mkdtemp(prefix="evtrack-bench-")
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    server = subprocess.Popen(
        [
            args.python,
            "-m",
            "evtrack",
            "server",
            "--port",
            str(port),
            "--database-url",
            dsn,
            "--artifacts-uri",
            artifacts,
            "--log-level",
            "warning",
            *args.server_args,
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        for _ in range(600):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        time.sleep(2.0)  # projectors settled
        before = _status_kib(server.pid, "VmRSS")
        body = b'{"name": "' + b"n" * (args.size_mib * MiB) + b'"}'
        statuses: list[int | str] = []
        started = time.monotonic()
        threads = [
            threading.Thread(target=_send, args=(port, body, statuses)) for _ in range(args.clients)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.monotonic() - started
        del body
        time.sleep(1.0)
        peak = _status_kib(server.pid, "VmHWM")
        after = _status_kib(server.pid, "VmRSS")
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(30)
        _drop_database(args.database_url, name)
    print(
        f"{args.clients} x {args.size_mib} MiB JSON bodies: RSS before {before / 1024:.0f} MB, "
        f"peak {peak / 1024:.0f} MB, after {after / 1024:.0f} MB; "
        f"answers {dict(Counter(statuses))} in {elapsed:.1f} s"
    )


if __name__ == "__main__":
    main()

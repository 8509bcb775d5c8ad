#!/usr/bin/env python
"""What does authentication cost per request, in evtrack and in MLflow's own server?

    python benchmarks/auth_overhead.py [--calls 600] [--database-url URL]

Five servers on fresh databases of one PostgreSQL: evtrack without and with ``--auth``, and
MLflow's server without and with its basic-auth app (``--app-name basic-auth``), once with its
default settings (the credential cache off: every request verifies the password) and once
with its credential cache on (60 s). Each gets one
user with EDIT on one experiment (the admin, for the unauthenticated ones), one run, and two
keep-alive ``requests`` sessions:

* ``log-metric``: ``POST /api/2.0/mlflow/runs/log-metric`` (a write checked against the run's
  experiment);
* ``get-run``: ``GET /api/2.0/mlflow/runs/get`` (a read checked the same way).

Calls are interleaved in blocks of 50 (A B C D E A B C D E ...), so load from other users of the
machine hits every contender alike. The table gives p50 and p99 per server and call, and the
ratios that matter: auth on / auth off for each server, and evtrack+auth against MLflow+auth.
Check ``uptime`` first; on a loaded machine, compare the ratios, not the milliseconds.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import requests  # noqa: E402
from _common import median, percentile, say  # noqa: E402
from _servers import DEFAULT_DATABASE_URL, Databases, Server, evtrack_server, mlflow_server  # noqa: E402

ADMIN_PASSWORD = "bench-admin-Pw1"
BLOCK = 50


def _with_auth(server: Server, kind: str, workdir: Path, *, cache: bool = False) -> Server:
    if kind == "evtrack":
        server.cmd.append("--auth")
        server.env["EVTRACK_ADMIN_PASSWORD"] = ADMIN_PASSWORD
    else:
        ini = workdir / "basic_auth.ini"
        ini.write_text(
            "[mlflow]\ndefault_permission = READ\n"
            f"database_uri = sqlite:///{workdir / 'basic_auth.db'}\n"
            "admin_username = admin\n"
            f"admin_password = {ADMIN_PASSWORD}\n"
            "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
            + ("auth_cache_ttl_seconds = 60\n" if cache else "")
        )
        server.cmd += ["--app-name", "basic-auth"]
        server.env["MLFLOW_AUTH_CONFIG_PATH"] = str(ini)
        server.env["MLFLOW_FLASK_SERVER_SECRET_KEY"] = uuid.uuid4().hex
    server.name += "+auth" + ("+cache" if cache else "")
    return server


class Contender:
    def __init__(self, server: Server, authenticated: bool) -> None:
        self.server = server
        self.session = requests.Session()
        self.samples: dict[str, list[float]] = {"log-metric": [], "get-run": []}
        admin = ("admin", ADMIN_PASSWORD) if authenticated else None
        if authenticated:
            user, password = f"bench-{uuid.uuid4().hex[:6]}", "bench-user-Pw1"
            self._post("mlflow/users/create", {"username": user, "password": password}, admin)
            self.session.auth = (user, password)
        else:
            self.session.auth = None
        experiment = self._post(
            "mlflow/experiments/create", {"name": f"auth-{uuid.uuid4().hex[:8]}"}, admin
        )["experiment_id"]
        if authenticated:
            grant = {
                "username": self.session.auth[0],  # type: ignore[index]
                "resource_type": "experiment",
                "resource_id": experiment,
                "permission": "EDIT",
            }
            resp = requests.post(
                f"{server.url}/api/3.0/mlflow/users/permissions/grant", json=grant, auth=admin
            )
            resp.raise_for_status()
        run = self.session.post(
            f"{server.url}/api/2.0/mlflow/runs/create", json={"experiment_id": experiment}
        )
        run.raise_for_status()
        self.run_id = run.json()["run"]["info"]["run_id"]
        self.step = 0

    def _post(self, path: str, body: dict[str, Any], auth: Any) -> Any:
        resp = requests.post(f"{self.server.url}/api/2.0/{path}", json=body, auth=auth, timeout=30)
        resp.raise_for_status()
        return resp.json()

    def call(self, kind: str) -> float:
        url = self.server.url
        t0 = time.perf_counter()
        try:
            resp = self._send(kind, url)
        except requests.Timeout:
            raise RuntimeError(f"{self.server.name} {kind}: no answer within 30 s") from None
        took = time.perf_counter() - t0
        if resp.status_code != 200:
            raise RuntimeError(f"{self.server.name} {kind}: {resp.status_code} {resp.text[:200]}")
        return took

    def _send(self, kind: str, url: str) -> requests.Response:
        if kind == "log-metric":
            self.step += 1
            body = {"run_id": self.run_id, "key": "m", "value": 1.0, "timestamp": 1}
            return self.session.post(
                f"{url}/api/2.0/mlflow/runs/log-metric",
                json={**body, "step": self.step},
                timeout=30,
            )
        return self.session.get(
            f"{url}/api/2.0/mlflow/runs/get", params={"run_id": self.run_id}, timeout=30
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=600, help="calls per server and kind")
    parser.add_argument("--database-url", default=DEFAULT_DATABASE_URL)
    args = parser.parse_args()
    say(f"load: {os.getloadavg()}")
    databases = Databases(args.database_url)
    servers: list[tuple[Server, bool]] = []
    with tempfile.TemporaryDirectory(prefix="evtrack-auth-bench-") as tmp:
        try:
            plan = [("evtrack", False, False), ("evtrack", True, False)]
            plan += [("mlflow", False, False), ("mlflow", True, False), ("mlflow", True, True)]
            for name, auth, cache in plan:
                workdir = Path(tmp) / f"{name}-{auth}-{cache}"
                workdir.mkdir()
                db = databases.create(f"bench_auth_{name}_{int(auth)}_{uuid.uuid4().hex[:6]}")
                server = (
                    evtrack_server(db, workdir, sys.executable)
                    if name == "evtrack"
                    else mlflow_server(db, workdir, sys.executable, workers=1)
                )
                if auth:
                    server = _with_auth(server, name, workdir, cache=cache)
                server.start()
                server.wait_healthy(120)
                servers.append((server, auth))
            contenders = [Contender(s, auth) for s, auth in servers]
            for kind in ("log-metric", "get-run"):
                for c in contenders:  # warm-up
                    for _ in range(20):
                        c.call(kind)
                done = 0
                while done < args.calls:
                    for c in contenders:
                        for _ in range(BLOCK):
                            c.samples[kind].append(c.call(kind))
                    done += BLOCK
            _report(contenders)
        finally:
            for server, _ in servers:
                server.stop()
            databases.drop_all()
    return 0


def _report(contenders: list[Contender]) -> None:
    by_name = {c.server.name: c for c in contenders}
    print(f"\n{'server':<20}{'call':<12}{'p50 ms':>9}{'p99 ms':>9}")
    for c in contenders:
        for kind, samples in c.samples.items():
            print(
                f"{c.server.name:<20}{kind:<12}{median(samples) * 1e3:>9.2f}"
                f"{percentile(samples, 99) * 1e3:>9.2f}"
            )
    print(f"\n{'ratio (p50)':<48}{'log-metric':>12}{'get-run':>10}")
    pairs = [
        ("evtrack+auth / evtrack", "evtrack+auth", "evtrack"),
        ("mlflow+auth / mlflow", "mlflow+auth", "mlflow"),
        ("mlflow+auth+cache / mlflow", "mlflow+auth+cache", "mlflow"),
        ("mlflow+auth / evtrack+auth (speed-up)", "mlflow+auth", "evtrack+auth"),
        ("mlflow+auth+cache / evtrack+auth (speed-up)", "mlflow+auth+cache", "evtrack+auth"),
    ]
    for label, a, b in pairs:
        ratios = [
            median(by_name[a].samples[k]) / median(by_name[b].samples[k])
            for k in ("log-metric", "get-run")
        ]
        print(f"{label:<48}{ratios[0]:>12.2f}{ratios[1]:>10.2f}")


if __name__ == "__main__":
    sys.exit(main())

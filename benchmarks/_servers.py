"""Start and stop the two servers under test, their databases, and watch their memory.

Both servers get a fresh database on the same PostgreSQL (created here, dropped at the end),
a private artifact directory, and a free loopback port. Their output goes to log files in
the run's temporary directory; when one fails to start, the tail of its log is shown.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
from _common import BenchmarkError, say

try:
    import psutil
except ImportError:  # pragma: no cover - psutil is optional
    psutil = None  # type: ignore[assignment]

DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/postgres"

# How to count the metric points in evtrack's read model (its internals change; the first
# query whose table exists wins). Every benchmark point is distinct, so no de-duplication.
EVTRACK_POINT_COUNTS = (
    (
        "rm_metrics.series",
        "SELECT COALESCE(sum(total), 0) FROM rm_metrics.series WHERE run_id = ANY(%s)",
    ),
    (
        "rm_metrics.chunks",
        "SELECT COALESCE(sum(n), 0) FROM rm_metrics.chunks WHERE run_id = ANY(%s)",
    ),
    ("rm_metrics.points", "SELECT count(*) FROM rm_metrics.points WHERE run_id = ANY(%s)"),
)


# --------------------------------------------------------------------------------- databases


def _connect(url: str) -> Any:
    try:
        import psycopg2
    except ImportError:
        raise BenchmarkError(
            "psycopg2 is needed (the reference MLflow server needs it too): "
            "pip install psycopg2-binary"
        ) from None
    try:
        return psycopg2.connect(url)
    except Exception as exc:
        raise BenchmarkError(f"cannot connect to PostgreSQL at {redact(url)}: {exc}") from None


def redact(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urllib.parse.urlunsplit(parts._replace(netloc=netloc))
    return url


def with_database(url: str, name: str, scheme: str | None = None) -> str:
    parts = urllib.parse.urlsplit(url)
    if scheme:
        parts = parts._replace(scheme=scheme)
    return urllib.parse.urlunsplit(parts._replace(path="/" + name))


class Databases:
    """Fresh databases for one benchmark run, dropped on ``drop_all``."""

    def __init__(self, admin_url: str) -> None:
        self.admin_url = admin_url
        self.created: list[str] = []

    def create(self, name: str) -> str:
        conn = _connect(self.admin_url)
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                cur.execute(f'CREATE DATABASE "{name}"')
        finally:
            conn.close()
        self.created.append(name)
        return with_database(self.admin_url, name)

    def drop_all(self) -> None:
        if not self.created:
            return
        try:
            conn = _connect(self.admin_url)
        except BenchmarkError as exc:
            say(f"could not drop databases {self.created}: {exc}")
            return
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                for name in self.created:
                    try:
                        cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                    except Exception as exc:
                        say(f"could not drop database {name}: {exc}")
        finally:
            conn.close()
        self.created.clear()

    def server_version(self) -> str:
        conn = _connect(self.admin_url)
        try:
            with conn.cursor() as cur:
                cur.execute("SHOW server_version")
                return str(cur.fetchone()[0])
        finally:
            conn.close()


class Sql:
    """A small autocommit connection for the harness's own checks."""

    def __init__(self, url: str) -> None:
        self.conn = _connect(url)
        self.conn.autocommit = True

    def one(self, query: str, *args: Any) -> Any:
        with self.conn.cursor() as cur:
            cur.execute(query, args or None)
            row = cur.fetchone()
            return None if row is None else row[0]

    def execute(self, query: str, *args: Any) -> None:
        with self.conn.cursor() as cur:
            cur.execute(query, args or None)

    def all(self, query: str, *args: Any) -> list[tuple[Any, ...]]:
        with self.conn.cursor() as cur:
            cur.execute(query, args or None)
            return list(cur.fetchall())

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.conn.close()


# --------------------------------------------------------------------------------- servers


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    name: str  # "mlflow", "fasttrackml" or "evtrack"
    cmd: list[str]
    env: dict[str, str]
    port: int
    db_url: str  # plain postgresql:// URL of its database (for the harness's checks)
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    _log: Any = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        say(f"starting {self.name}: {' '.join(self.cmd)}")
        self.proc = subprocess.Popen(
            self.cmd,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=self.env,
            start_new_session=True,  # its own process group: stop() ends the whole tree
        )

    def wait_healthy(self, timeout: float) -> float:
        assert self.proc is not None
        t0 = time.monotonic()
        deadline = t0 + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchmarkError(
                    f"{self.name} exited with code {self.proc.returncode} during start-up:\n"
                    + self.log_tail()
                )
            with contextlib.suppress(requests.RequestException):
                r = requests.get(self.url + "/health", timeout=2)
                if r.status_code == 200:
                    took = time.monotonic() - t0
                    say(f"{self.name} is up at {self.url} ({took:.1f}s)")
                    return took
            time.sleep(0.25)
        raise BenchmarkError(
            f"{self.name} did not answer /health within {timeout:.0f}s:\n" + self.log_tail()
        )

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def check_alive(self) -> None:
        if not self.alive():
            code = None if self.proc is None else self.proc.returncode
            raise BenchmarkError(f"{self.name} died (exit code {code}):\n" + self.log_tail())

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return "\n".join("    " + line for line in text[-lines:])

    def stop(self, timeout: float = 20.0) -> None:
        proc = self.proc
        if proc is not None and proc.poll() is None:
            say(f"stopping {self.name}")
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                say(f"{self.name} did not stop within {timeout:.0f}s; killing it")
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(10)
        # Workers that outlived their parent are still in the group.
        if proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        if self._log is not None:
            self._log.close()
            self._log = None


def evtrack_server(db_url: str, workdir: Path, python: str) -> Server:
    port = free_port()
    artifacts = workdir / "evtrack-artifacts"
    artifacts.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.setdefault("EVTRACK_LOG_LEVEL", "warning")  # one log line per request costs CPU
    cmd = [
        python,
        "-m",
        "evtrack",
        "server",
        "--database-url",
        db_url,
        "--artifacts-uri",
        str(artifacts),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    if env.get("EVTRACK_LOG_LEVEL"):
        cmd += ["--log-level", env["EVTRACK_LOG_LEVEL"]]
    return Server("evtrack", cmd, env, port, db_url, workdir / "evtrack.log")


def find_fml(explicit: str | None = None) -> str | None:
    """The ``fml`` binary of FastTrackML: ``--fml``, next to this interpreter (the PyPI wheel
    ships it into the environment's bin/), or on PATH."""
    if explicit:
        return explicit if Path(explicit).exists() else None
    here = Path(sys.executable).parent / "fml"
    if here.exists():
        return str(here)
    return shutil.which("fml")


def fasttrackml_server(db_url: str, workdir: Path, fml: str) -> Server:
    """FastTrackML (the Go rewrite of MLflow's tracking server) on its own fresh database.

    It migrates the empty database itself at start-up and serves MLflow's REST API under
    ``/api/2.0/mlflow`` plus ``/health``."""
    port = free_port()
    artifacts = workdir / "fasttrackml-artifacts"
    artifacts.mkdir(parents=True, exist_ok=True)
    # FastTrackML's driver takes postgres:// URLs.
    uri = with_database(db_url, urllib.parse.urlsplit(db_url).path.lstrip("/"), scheme="postgres")
    cmd = [
        fml,
        "server",
        "--database-uri",
        uri,
        "--listen-address",
        f"127.0.0.1:{port}",
        "--default-artifact-root",
        str(artifacts),
        "--log-level",
        "warn",  # like evtrack's: no log line per request
    ]
    return Server("fasttrackml", cmd, dict(os.environ), port, db_url, workdir / "fasttrackml.log")


def mlflow_server(db_url: str, workdir: Path, python: str, workers: int) -> Server:
    port = free_port()
    artifacts = workdir / "mlflow-artifacts"
    artifacts.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env["MLFLOW_DISABLE_TELEMETRY"] = "true"
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
    # SQLAlchemy 2 maps plain postgresql:// to psycopg 3; MLflow's docs use psycopg2.
    backend = with_database(
        db_url, urllib.parse.urlsplit(db_url).path.lstrip("/"), scheme="postgresql+psycopg2"
    )
    cmd = [
        python,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        backend,
        "--artifacts-destination",
        str(artifacts),
        "--serve-artifacts",
        "--workers",
        str(workers),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    return Server("mlflow", cmd, env, port, db_url, workdir / "mlflow.log")


# --------------------------------------------------------------------------------- memory


def _tree_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process tree so far (psutil only)."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0.0
    total = 0.0
    for p in procs:
        with contextlib.suppress(psutil.Error):
            t = p.cpu_times()
            total += t.user + t.system
    return total


def _machine_busy_seconds() -> float:
    t = psutil.cpu_times()
    return float(sum(t) - t.idle - getattr(t, "iowait", 0.0))


def _tree_rss_bytes(pid: int) -> int:
    """RSS of a process and all its descendants (the MLflow server has uvicorn workers)."""
    if psutil is not None:
        try:
            root = psutil.Process(pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.Error:
            return 0
        total = 0
        for p in procs:
            with contextlib.suppress(psutil.Error):
                total += p.memory_info().rss
        return total
    # /proc fallback: walk parent links.
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            status = Path(f"/proc/{entry}/status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        ppid = int(fields.get("PPid", "0").strip() or 0)
        children.setdefault(ppid, []).append(int(entry))
        vm = fields.get("VmRSS", "0 kB").strip().split()[0]
        rss[int(entry)] = int(vm) * 1024
    total, stack = 0, [pid]
    while stack:
        p = stack.pop()
        total += rss.get(p, 0)
        stack.extend(children.get(p, []))
    return total


class RssSampler:
    """Samples a server's process-tree RSS every ``interval`` seconds in a thread."""

    def __init__(self, pid: int, db_url: str | None = None, interval: float = 0.5) -> None:
        self.pid = pid
        self.db_name = urllib.parse.urlsplit(db_url).path.lstrip("/") if db_url else None
        self.interval = interval
        self.samples: list[tuple[float, int]] = []
        # (time, server CPU s, its PostgreSQL backends' CPU s, machine busy s)
        self.cpu: list[tuple[float, float, float, float]] = []
        self._backends: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            now = time.monotonic()
            self.samples.append((now, _tree_rss_bytes(self.pid)))
            if psutil is not None:
                self.cpu.append(
                    (
                        now,
                        _tree_cpu_seconds(self.pid),
                        self._backend_cpu_seconds(),
                        _machine_busy_seconds(),
                    )
                )
            self._stop.wait(self.interval)

    def _backend_cpu_seconds(self) -> float:
        """CPU seconds of the PostgreSQL backends serving this server's database (each
        backend's latest reading; backends that exit keep their last one)."""
        if not self.db_name:
            return 0.0
        marker = f" {self.db_name} "
        for p in psutil.process_iter(["cmdline"]):
            cmd = p.info.get("cmdline") or []
            if cmd and cmd[0].startswith("postgres:") and marker in cmd[0] + " ":
                with contextlib.suppress(psutil.Error):
                    t = p.cpu_times()
                    self._backends[p.pid] = t.user + t.system
        return sum(self._backends.values())

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def summary_between(self, t_from: float, t_to: float) -> dict[str, float]:
        """Peak, and flatness: the mean of the last third minus the mean of the middle
        third (the first third is warm-up), as MiB and MiB per minute, over the samples
        taken between ``t_from`` and ``t_to`` (monotonic clock)."""
        out = self._summary_rss(t_from, t_to)
        cpu = [c for c in self.cpu if t_from <= c[0] <= t_to]
        if len(cpu) >= 2 and cpu[-1][0] > cpu[0][0]:
            span = cpu[-1][0] - cpu[0][0]
            # Cores kept busy: by the server (its process tree), and by everything on the
            # machine (clients, PostgreSQL, other users).
            out["server_cores"] = max(0.0, cpu[-1][1] - cpu[0][1]) / span
            out["postgres_cores"] = max(0.0, cpu[-1][2] - cpu[0][2]) / span
            out["machine_cores"] = max(0.0, cpu[-1][3] - cpu[0][3]) / span
        return out

    def _summary_rss(self, t_from: float, t_to: float) -> dict[str, float]:
        mib = [(t, b / (1 << 20)) for t, b in self.samples if b > 0 and t_from <= t <= t_to]
        if len(mib) < 3:
            return {
                "peak_mib": max((m for _, m in mib), default=float("nan")),
                "growth_mib": float("nan"),
                "growth_mib_per_min": float("nan"),
                "samples": len(mib),
            }
        n = len(mib)
        middle = mib[n // 3 : 2 * n // 3] or mib[: n // 2]
        last = mib[2 * n // 3 :]
        m_mid = sum(m for _, m in middle) / len(middle)
        m_last = sum(m for _, m in last) / len(last)
        t_mid = sum(t for t, _ in middle) / len(middle)
        t_last = sum(t for t, _ in last) / len(last)
        growth = m_last - m_mid
        per_min = growth / max(1e-9, (t_last - t_mid) / 60)
        return {
            "peak_mib": max(m for _, m in mib),
            "first_mib": mib[0][1],
            "middle_mean_mib": m_mid,
            "last_mean_mib": m_last,
            "growth_mib": growth,
            "growth_mib_per_min": per_min,
            "samples": n,
        }


def cpu_note(summary: dict[str, float], clients: float | None = None) -> str:
    server, machine = summary.get("server_cores"), summary.get("machine_cores")
    if server is None or machine is None:
        return "CPU use not measured (needs psutil)"
    pg = summary.get("postgres_cores", 0.0)
    parts = [f"server {server:.2f}", f"its PostgreSQL backends {pg:.2f}"]
    if clients is not None:
        parts.append(f"benchmark clients {clients:.2f}")
    return (
        "cores busy: " + ", ".join(parts) + f"; whole machine {machine:.2f} of "
        f"{psutil.cpu_count()} (the rest: other processes on the machine)"
    )


# --------------------------------------------------------------------------------- evtrack


def stored_points(server_name: str, sql: Sql, run_ids: list[str]) -> int:
    """Metric points the server's database holds for ``run_ids`` (evtrack: its read model)."""
    if server_name in ("mlflow", "fasttrackml"):  # FastTrackML keeps MLflow's metrics table
        return int(sql.one("SELECT count(*) FROM metrics WHERE run_uuid = ANY(%s)", run_ids))
    for table, query in EVTRACK_POINT_COUNTS:
        if sql.one("SELECT to_regclass(%s) IS NOT NULL", table):
            return int(sql.one(query, run_ids))
    raise BenchmarkError("cannot find evtrack's metric read model to verify against")


def evtrack_projection_behind(sql: Sql, names: tuple[str, ...] = ("metrics", "runs")) -> int:
    """How many log events the slowest of ``names`` has not applied yet."""
    value = sql.one(
        """SELECT COALESCE(max(n), 0) FROM (
               SELECT (SELECT count(*) FROM events e
                       WHERE (e.transaction_id, e.global_position)
                             > (c.transaction_id, c.global_position)) AS n
               FROM projection_checkpoints c WHERE c.name = ANY(%s)) x""",
        list(names),
    )
    return int(value or 0)


LAG_DIAGNOSIS: list[str] = []


def oldest_transactions(sql: Sql, limit: int = 3) -> list[str]:
    """The cluster's oldest open transactions (they hold back evtrack's projectors)."""
    rows = sql.all(
        """SELECT datname, pid, round(extract(epoch FROM now() - xact_start)::numeric, 1),
                  state, left(regexp_replace(query, '\\s+', ' ', 'g'), 80)
           FROM pg_stat_activity
           WHERE (backend_xid IS NOT NULL OR backend_xmin IS NOT NULL)
             AND pid <> pg_backend_pid() AND xact_start IS NOT NULL
           ORDER BY xact_start LIMIT %s""",
        limit,
    )
    return [f"db={d} pid={p} open {age}s state={st} query={q!r}" for d, p, age, st, q in rows]


def wait_for_projections(
    sql: Sql, timeout: float, *, names: tuple[str, ...] = ("metrics", "runs")
) -> float:
    """Poll until the read models ``names`` include every committed event; return seconds.

    Projectors only read below the oldest transaction still running in the whole PostgreSQL
    cluster (transaction ids are cluster-wide), so a long transaction in another database on
    the same server delays them. When the wait exceeds a second, the oldest transactions are
    recorded in ``LAG_DIAGNOSIS`` for the report."""
    t0 = time.monotonic()
    last_report = t0
    diagnosed = False
    LAG_DIAGNOSIS.clear()
    while True:
        behind = evtrack_projection_behind(sql, names)
        now = time.monotonic()
        if behind == 0:
            return now - t0
        if not diagnosed and now - t0 > 1.0:
            diagnosed = True
            LAG_DIAGNOSIS.extend(oldest_transactions(sql))
        if now - t0 > timeout:
            raise BenchmarkError(
                f"evtrack read models still {behind} events behind after {timeout:.0f}s"
            )
        if now - last_report > 10:
            say(f"  evtrack projections: {behind} events behind ({now - t0:.0f}s)")
            last_report = now
        time.sleep(0.05)


class ProjectionWatcher:
    """Polls how far evtrack's read models are behind the log, from a thread, while a
    workload runs, so the catch-up moment is seen as it happens (not after the harness
    has finished collecting its worker processes)."""

    def __init__(self, db_url: str, interval: float = 0.05) -> None:
        self.db_url = db_url
        self.interval = interval
        self.samples: list[tuple[float, int]] = []  # (time the answer arrived, events behind)
        self.error: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="projection-watch", daemon=True)

    def _run(self) -> None:
        sql = Sql(self.db_url)
        try:
            while not self._stop.is_set():
                behind = evtrack_projection_behind(sql)
                self.samples.append((time.monotonic(), behind))
                self._stop.wait(self.interval)
        except Exception as exc:
            self.error = repr(exc)
        finally:
            sql.close()

    def __enter__(self) -> ProjectionWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def max_behind(self) -> int:
        return max((b for _, b in self.samples), default=0)

    def lag_after(self, t_ack: float, timeout: float) -> float:
        """Seconds from ``t_ack`` (the last acknowledgement) until a poll that started after
        it found the read models complete. Waits up to ``timeout``."""
        deadline = time.monotonic() + timeout
        diagnosed = False
        LAG_DIAGNOSIS.clear()
        last_report = time.monotonic()
        while True:
            # A poll answered at t started at most one query-time earlier; require the
            # previous answer to be after t_ack too, so the poll surely began after it.
            prev = None
            for t, behind in list(self.samples):
                if prev is not None and prev >= t_ack and behind == 0:
                    return t - t_ack
                prev = t
            now = time.monotonic()
            if self.error:
                raise BenchmarkError(f"projection watcher failed: {self.error}")
            if not self._thread.is_alive():
                raise BenchmarkError("projection watcher stopped")
            if not diagnosed and now - t_ack > 1.0:
                diagnosed = True
                with contextlib.suppress(Exception):
                    sql = Sql(self.db_url)
                    LAG_DIAGNOSIS.extend(oldest_transactions(sql))
                    sql.close()
            if now > deadline:
                behind = self.samples[-1][1] if self.samples else "?"
                raise BenchmarkError(
                    f"evtrack read models still {behind} events behind after {timeout:.0f}s"
                )
            if now - last_report > 10:
                say(f"  evtrack projections: {self.samples[-1][1]} events behind")
                last_report = now
            time.sleep(self.interval)


def python_executable() -> str:
    return sys.executable

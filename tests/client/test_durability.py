"""Nothing is lost, nothing is doubled: kills, outages, exits, restarts, full disks."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from _support.server import EvtrackServer, free_port

from evtrack.client import Client
from evtrack.client._spool import LockedFolder, client_folders, list_segments

from ._helpers import (
    child_env,
    create_experiment,
    evtrack_cli,
    history,
    logged_points,
    python_script,
    wait_for,
)

# A training job in a subprocess: logs N points, says "logged", then waits to be killed.
_JOB = """
    import sys, time
    from evtrack.client import Client
    url, spool, exp, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    interval = float(sys.argv[5]) if len(sys.argv) > 5 else 0.05
    client = Client(url, spool_dir=spool, batch_max_points=5000, batch_interval=interval,
                    retry_max_delay=0.2)
    run = client.start_run(experiment_id=exp)
    print(run.run_id, flush=True)
    for i in range(n):
        run.log_metric("loss", float(i), step=i)
    print("logged", flush=True)
    time.sleep(600)
"""


def _start_job(
    url: str, spool: Path, exp: str, n: int, interval: float = 0.05
) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [*python_script(_JOB), url, str(spool), exp, str(n), str(interval)],
        stdout=subprocess.PIPE,
        text=True,
        env=child_env(),
    )
    assert proc.stdout is not None
    run_id = proc.stdout.readline().strip()
    assert proc.stdout.readline().strip() == "logged", "the job died before logging"
    return proc, run_id


def _sigkill(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(30) == -signal.SIGKILL


@pytest.mark.parametrize("server_up", [True, False], ids=["server-up", "server-down"])
def test_sigkilled_job_loses_nothing_and_sync_delivers_exactly_once(
    evtrack_server: EvtrackServer, spool: Path, server_up: bool
) -> None:
    """SIGKILL right after the last log call returned. With the server up, part was already
    delivered and a request may be in flight; with it down, everything is in the spool.
    Either way ``evtrack sync`` brings the log to exactly N points."""
    url = evtrack_server.url
    exp = create_experiment(url)
    n = 60_000
    if not server_up:
        evtrack_server.stop()
    proc, run_id = _start_job(url, spool, exp, n)
    _sigkill(proc)
    if not server_up:
        evtrack_server.restart()
    before = logged_points(evtrack_server.dsn, run_id)[0]
    assert before < n or server_up
    result = evtrack_cli("sync", "--spool-dir", str(spool), "--server", url)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "delivered" in result.stdout
    assert logged_points(evtrack_server.dsn, run_id)[0] == n
    steps = [m["step"] for m in history(url, run_id, "loss")]
    assert sorted(steps) == list(range(n))
    assert client_folders(spool) == []
    # Running it again finds nothing and changes nothing.
    again = evtrack_cli("sync", "--spool-dir", str(spool), "--server", url)
    assert again.returncode == 0 and "nothing to deliver" in again.stdout
    assert logged_points(evtrack_server.dsn, run_id)[0] == n


def test_range_applied_but_not_acked_is_resent_under_its_key(
    evtrack_server: EvtrackServer, spool: Path
) -> None:
    """The worst moment to die: the server applied a batch, the process was killed before it
    wrote the ack. The range is still marked in flight, is resent with the same
    Idempotency-Key, and the server answers from its idempotency table: no duplicates."""
    url = evtrack_server.url
    exp = create_experiment(url)
    script = """
        import os, signal, sys
        from evtrack.client import Client
        url, spool, exp = sys.argv[1:4]
        client = Client(url, spool_dir=spool, batch_interval=3600)
        run = client.start_run(experiment_id=exp)
        for i in range(3000):
            run.log_metric("loss", 1.0, step=i // 3)
        assert client.flush(30)
        print(run.run_id, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    """
    out = subprocess.run(
        [*python_script(script), url, str(spool), exp],
        capture_output=True,
        text=True,
        timeout=120,
        env=child_env(),
    )
    run_id = out.stdout.strip()
    assert logged_points(evtrack_server.dsn, run_id) == (3000, 1)
    [folder] = client_folders(spool)
    [seq] = list_segments(folder)
    ack = folder / f"seg-{seq:08d}.ack"
    acked = int(ack.read_text().split()[0])
    ack.write_text(f"16 16 {acked}\n")  # as if killed between the 200 and the ack
    result = evtrack_cli("sync", "--spool-dir", str(spool), "--server", url)
    assert result.returncode == 0, result.stdout + result.stderr
    assert logged_points(evtrack_server.dsn, run_id) == (3000, 1)


def test_stopped_server_memory_stays_bounded_and_delivery_resumes(
    evtrack_server: EvtrackServer, spool: Path
) -> None:
    """With the server down, a million points go to disk, not RAM, and no log call blocks;
    after a restart the same client delivers every point exactly once."""
    url = evtrack_server.url
    exp = create_experiment(url)
    evtrack_server.stop()
    client = Client(
        url, spool_dir=spool, segment_bytes=4 << 20, retry_max_delay=1.0, batch_interval=0.2
    )
    try:
        run = client.start_run(experiment_id=exp)
        n = 1_000_000
        warm = 100_000
        for i in range(warm):
            run.log_metric("loss", float(i), step=i)
        rss_before = _rss_bytes()
        slowest = 0
        started = time.monotonic()
        clock = time.perf_counter_ns
        for i in range(warm, n):
            t0 = clock()
            run.log_metric("loss", float(i), step=i)
            slowest = max(slowest, clock() - t0)
        elapsed = time.monotonic() - started
        growth = _rss_bytes() - rss_before
        spooled = client.stats().spool_bytes
        assert client.stats().dropped == 0
        assert spooled > 35 << 20, spooled  # ~41 bytes a point went to disk...
        assert growth < 24 << 20, f"RSS grew {growth >> 20} MiB"  # ...not to memory
        assert elapsed < 60, f"{n - warm} log calls took {elapsed:.1f}s"
        assert slowest < 1_000_000_000, f"a log call took {slowest / 1e6:.0f} ms"
        assert client.stats().delivered_points == 0
        evtrack_server.restart()
        assert client.flush(180), "not delivered after the restart"
    finally:
        client.close(10)
    points, _ = logged_points(evtrack_server.dsn, run.run_id)
    assert points == n


def _rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@pytest.fixture
def black_hole() -> Iterator[str]:
    """A TCP port that accepts connections and never answers (a hung server or LB)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        sock.close()


@pytest.mark.parametrize("target", ["refused", "black-hole"])
def test_exit_with_server_down_returns_within_the_bound(
    evtrack_server: EvtrackServer, spool: Path, black_hole: str, target: str
) -> None:
    """A script that ends while its server is unreachable (nothing listening, or a server
    that accepts and never answers) exits within close_timeout; its points wait in the
    spool and arrive, once, with the next sync."""
    url = black_hole if target == "black-hole" else f"http://127.0.0.1:{free_port()}"
    exp = create_experiment(evtrack_server.url)
    script = """
        import sys, time
        from evtrack.client import Client
        url, spool, exp = sys.argv[1:4]
        client = Client(url, spool_dir=spool, close_timeout=3.0, batch_interval=0.05)
        run = client.start_run(experiment_id=exp)
        for i in range(20000):
            run.log_metric("loss", float(i), step=i)
        print(run.run_id, flush=True)
        print("logged", time.monotonic(), flush=True)
    """
    proc = subprocess.Popen(
        [*python_script(script), url, str(spool), exp],
        stdout=subprocess.PIPE,
        text=True,
        env=child_env(),
    )
    assert proc.stdout is not None
    run_id = proc.stdout.readline().strip()
    assert proc.stdout.readline().startswith("logged")
    logged_at = time.monotonic()
    assert proc.wait(60) == 0
    took = time.monotonic() - logged_at
    assert took < 3.0 + 2.5, f"exit took {took:.1f}s with close_timeout=3"
    assert took > 2.5, "returned before the bound: did it wait for the sender at all?"
    result = evtrack_cli("sync", "--spool-dir", str(spool), "--server", evtrack_server.url)
    assert result.returncode == 0, result.stdout + result.stderr
    assert logged_points(evtrack_server.dsn, run_id)[0] == 20000


def test_exit_with_server_up_delivers_everything(
    evtrack_server: EvtrackServer, spool: Path
) -> None:
    url = evtrack_server.url
    exp = create_experiment(url)
    script = """
        import sys
        from evtrack.client import Client
        url, spool, exp = sys.argv[1:4]
        client = Client(url, spool_dir=spool, batch_interval=3600)
        run = client.start_run(experiment_id=exp)
        for i in range(50000):
            run.log_metric("loss", float(i), step=i)
        print(run.run_id, flush=True)
    """
    out = subprocess.run(
        [*python_script(script), url, str(spool), exp],
        capture_output=True,
        text=True,
        timeout=120,
        env=child_env(),
    )
    run_id = out.stdout.strip()
    assert logged_points(evtrack_server.dsn, run_id)[0] == 50000
    assert client_folders(spool) == []  # delivered at exit, folder removed


def test_sync_does_not_steal_a_live_spool(evtrack_server: EvtrackServer, spool: Path) -> None:
    """A job still running (its server unreachable) keeps its spool: sync skips it. Once
    the job is dead, sync delivers it."""
    exp = create_experiment(evtrack_server.url)
    unreachable = f"http://127.0.0.1:{free_port()}"
    proc, run_id = _start_job(unreachable, spool, exp, 5000)
    try:
        result = evtrack_cli("sync", "--spool-dir", str(spool), "--server", evtrack_server.url)
        assert result.returncode == 0
        assert "in use by a running process" in result.stdout
        assert logged_points(evtrack_server.dsn, run_id)[0] == 0
        [folder] = client_folders(spool)
        assert LockedFolder.try_lock(folder) is None
    finally:
        _sigkill(proc)
    result = evtrack_cli("sync", "--spool-dir", str(spool), "--server", evtrack_server.url)
    assert result.returncode == 0, result.stdout + result.stderr
    assert logged_points(evtrack_server.dsn, run_id)[0] == 5000


def test_next_client_on_the_spool_adopts_a_dead_jobs_records(
    evtrack_server: EvtrackServer, spool: Path
) -> None:
    """No sync needed: the next client started on the same spool directory (for the same
    server) finds the dead job's folder and delivers it in the background."""
    url = evtrack_server.url
    exp = create_experiment(url)
    proc, run_id = _start_job(url, spool, exp, 20000, interval=3600)
    _sigkill(proc)
    assert logged_points(evtrack_server.dsn, run_id)[0] < 20000
    with Client(url, spool_dir=spool):
        wait_for(
            lambda: (
                logged_points(evtrack_server.dsn, run_id)[0] == 20000 and not client_folders(spool)
            ),
            60,
            "the new client to deliver the dead job's spool",
        )
    assert logged_points(evtrack_server.dsn, run_id)[0] == 20000


def test_full_spool_drops_new_points_and_never_blocks(
    spool: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "evtrack.client")
    cap = 256 * 1024
    client = Client(
        f"http://127.0.0.1:{free_port()}",
        spool_dir=spool,
        max_spool_bytes=cap,
        segment_bytes=64 * 1024,
        adopt_orphans=False,
    )
    try:
        run = client.start_run()
        started = time.monotonic()
        for i in range(50_000):  # ~2 MB of points into a 256 KiB spool
            run.log_metric("loss", float(i), step=i)
        assert time.monotonic() - started < 10
        stats = client.stats()
        assert stats.dropped > 40_000
        assert stats.spool_bytes <= cap
        full = [r for r in caplog.records if "is full" in r.getMessage()]
        assert len(full) == 1, "warn once, not per point"
    finally:
        assert client.close(1) is False  # nothing could be delivered: the rest stays


def test_full_spool_blocks_when_asked_and_loses_nothing(
    evtrack_server: EvtrackServer, spool: Path
) -> None:
    url = evtrack_server.url
    client = Client(
        url,
        spool_dir=spool,
        max_spool_bytes=256 * 1024,
        segment_bytes=64 * 1024,
        on_spool_full="block",
        batch_interval=0.05,
        batch_max_points=1000,
    )
    try:
        run = client.start_run(experiment_id=create_experiment(url))
        for i in range(30_000):  # 1.2 MB through a 256 KiB spool: waits for the sender
            run.log_metric("loss", float(i), step=i)
        assert client.flush(60)
        assert client.stats().dropped == 0
    finally:
        client.close(10)
    assert logged_points(evtrack_server.dsn, run.run_id)[0] == 30_000


def test_real_server_429_is_honoured(
    evtrack_server_factory: Callable[..., EvtrackServer], spool: Path
) -> None:
    """A server started with --ingest-max-lag 0 sheds load with 429 + Retry-After whenever
    its read models trail the log; the client waits as told and delivers exactly once."""
    server = evtrack_server_factory(extra_args=["--ingest-max-lag", "0"])
    url = server.url
    exp = create_experiment(url)
    with Client(url, spool_dir=spool, batch_max_points=20_000, batch_interval=3600) as client:
        run = client.start_run(experiment_id=exp)
        for i in range(200_000):
            run.log_metric("loss", float(i), step=i)
        assert client.flush(120)
        stats = client.stats()
    assert logged_points(server.dsn, run.run_id)[0] == 200_000
    if stats.throttled == 0:
        pytest.skip("the read models kept up; no 429 to honour this time")
    assert stats.requests >= 10 + stats.throttled


def test_pid_reuse_does_not_matter(spool: Path) -> None:
    """Liveness is the flock, not a pid file: a folder whose lock is free is adoptable even
    if its recorded pid now belongs to a running process (here: this one)."""
    folder = LockedFolder.create(spool, "feedface" * 4, {"pid": os.getpid()})
    assert LockedFolder.try_lock(folder.path) is None
    folder.release()
    adopted = LockedFolder.try_lock(folder.path)
    assert adopted is not None
    adopted.remove()
    assert client_folders(spool) == []

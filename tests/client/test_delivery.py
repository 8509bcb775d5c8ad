"""evtrack.client against the real server: batching, retries, refusals, artifacts, APIs."""

from __future__ import annotations

import asyncio
import http.client
import json
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import msgspec
import pytest
import requests
from _support.server import EvtrackServer

import evtrack.client
from evtrack.client import AsyncClient, Client
from evtrack.wire.ingest import INGEST_PATH, IngestRequest

from ._helpers import create_experiment, get_run, history, logged_points


def test_many_points_travel_in_few_requests(evtrack_server: EvtrackServer, spool: Path) -> None:
    """120k points with 50k-point batches and no time trigger: a handful of requests, and
    the log holds exactly the points logged, in as many RunDataLogged events."""
    url = evtrack_server.url
    exp = create_experiment(url)
    with Client(url, spool_dir=spool, batch_max_points=50_000, batch_interval=3600) as client:
        run = client.start_run(experiment_id=exp)
        n = 120_000
        for i in range(n):
            run.log_metric("loss", i * 0.5, step=i)
        assert client.flush(60)
        requests_sent = client.stats().requests
    points, events = logged_points(evtrack_server.dsn, run.run_id)
    assert points == n
    assert 3 <= events <= 5, f"{events} RunDataLogged events for {n} points"
    assert requests_sent <= 5
    got = history(url, run.run_id, "loss")
    assert len(got) == n
    assert {m["step"] for m in got} == set(range(n))


def test_threads_share_a_client(evtrack_server: EvtrackServer, spool: Path) -> None:
    """Log calls from several threads at once (the lock keeps frames whole): every point
    arrives, once."""
    url = evtrack_server.url
    with Client(url, spool_dir=spool, segment_bytes=256 * 1024) as client:
        run = client.start_run(experiment_id=create_experiment(url))

        def work(t: int) -> None:
            for i in range(25_000):
                run.log_metric(f"thread{t}", float(i), step=i)

        threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert client.flush(60)
        assert client.stats().dropped == 0
    assert logged_points(evtrack_server.dsn, run.run_id)[0] == 100_000
    for t in range(4):
        assert sorted(m["step"] for m in history(url, run.run_id, f"thread{t}")) == list(
            range(25_000)
        )


def test_slow_logging_is_batched_by_time(evtrack_server: EvtrackServer, spool: Path) -> None:
    """Points trickling in for 2 s with a 0.5 s interval go out in a few requests, not one
    request per point."""
    url = evtrack_server.url
    with Client(url, spool_dir=spool, batch_interval=0.5) as client:
        run = client.start_run(experiment_id=create_experiment(url))
        deadline = time.monotonic() + 2.0
        n = 0
        while time.monotonic() < deadline:
            run.log_metric("slow", float(n), step=n)
            n += 1
            time.sleep(0.002)
        assert client.flush(30)
        sent = client.stats().requests
    assert n > 300
    assert 2 <= sent <= 8, f"{sent} requests for {n} points"
    assert logged_points(evtrack_server.dsn, run.run_id)[0] == n


def test_run_lifecycle_params_tags_and_status(evtrack_server: EvtrackServer, spool: Path) -> None:
    url = evtrack_server.url
    exp = create_experiment(url)
    with Client(url, spool_dir=spool) as client:
        with client.start_run(experiment_id=exp, run_name="lifecycle", tags={"team": "a"}) as run:
            run.log_params({"lr": 0.1, "layers": 4})
            run.set_tag("phase", "train")
            run.log_metrics({"acc": 0.5, "f1": 0.25}, step=7)
        with pytest.raises(RuntimeError), client.start_run(experiment_id=exp) as failed:
            failed.log_metric("x", 1.0)
            raise RuntimeError("boom")
        assert client.flush(30)
    info = get_run(url, run.run_id)
    assert info["info"]["run_name"] == "lifecycle"
    assert info["info"]["status"] == "FINISHED"
    assert info["info"]["experiment_id"] == exp
    assert {p["key"]: p["value"] for p in info["data"]["params"]} == {"lr": "0.1", "layers": "4"}
    tags = {t["key"]: t["value"] for t in info["data"]["tags"]}
    assert tags["team"] == "a" and tags["phase"] == "train"
    assert {m["key"]: m["step"] for m in info["data"]["metrics"]} == {"acc": 7, "f1": 7}
    assert get_run(url, failed.run_id)["info"]["status"] == "FAILED"


def test_invalid_keys_and_changed_params_fail_at_the_call(spool: Path) -> None:
    """Programming errors surface where they are made, not as a refused batch later."""
    client = Client("http://127.0.0.1:9", spool_dir=spool, adopt_orphans=False)
    try:
        run = client.start_run()
        with pytest.raises(ValueError):
            run.log_metric("bad key!", 1.0)
        with pytest.raises(ValueError):
            run.log_metric("../escape", 1.0)
        with pytest.raises(TypeError):
            run.log_metric("loss", 1.0, step=1.5)  # type: ignore[arg-type]
        run.log_param("lr", 0.1)
        run.log_param("lr", 0.1)  # same value: fine
        with pytest.raises(ValueError, match="Changing param values"):
            run.log_param("lr", 0.2)
        with pytest.raises(ValueError, match="NUL"):
            run.log_param("p", "a\x00b")
        with pytest.raises(ValueError, match="NUL"):
            run.set_tag("t", "a\x00b")
    finally:
        client.close(0.5)


# ----------------------------------------------------------------- a misbehaving middle-man


@dataclass
class Proxy:
    """Forwards to the real server; can answer 429 first, or lose the server's answers."""

    upstream: str
    throttle: int = 0  # answer this many ingest requests with 429 + Retry-After
    retry_after: str = "1"
    lose: int = 0  # forward this many ingest requests, then answer 502 instead
    strip_packed: bool = False  # act as a server older than packed points: drop them
    ingest_log: list[tuple[float, int, str]] = field(default_factory=list)
    url: str = ""


def _without_packed(body: bytes) -> bytes:
    """The request as a server that does not know ``IngestRecord.packed`` would read it."""
    request = msgspec.msgpack.decode(body, type=IngestRequest)
    for record in request.records:
        record.packed = None
    return msgspec.msgpack.encode(request)


@pytest.fixture
def proxy(evtrack_server: EvtrackServer) -> Iterator[Proxy]:
    state = Proxy(evtrack_server.url)
    target = urlsplit(evtrack_server.url)
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def _relay(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            key = self.headers.get("Idempotency-Key", "")
            status = 0
            is_ingest = self.path.startswith(INGEST_PATH)
            with lock:
                throttled = is_ingest and state.throttle > 0
                if throttled:
                    state.throttle -= 1
                lost = not throttled and is_ingest and state.lose > 0
                if lost:
                    state.lose -= 1
            if throttled:
                payload = json.dumps(
                    {"error_code": "REQUEST_LIMIT_EXCEEDED", "message": "slow down"}
                ).encode()
                self._answer(429, payload, {"Retry-After": state.retry_after})
                status = 429
            else:
                conn = http.client.HTTPConnection(target.hostname or "", target.port, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                if is_ingest and state.strip_packed:
                    body = _without_packed(body)
                    headers["Content-Length"] = str(len(body))
                conn.request(self.command, self.path, body=body, headers=headers)
                upstream = conn.getresponse()
                data = upstream.read()
                conn.close()
                status = upstream.status
                if lost:  # the server applied it; the client never hears so
                    self._answer(502, b"bad gateway", {})
                    status = -status
                else:
                    self._answer(upstream.status, data, {"Content-Type": "application/json"})
            if is_ingest:
                with lock:
                    state.ingest_log.append((time.monotonic(), status, key))

        def _answer(self, status: int, body: bytes, headers: dict[str, str]) -> None:
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_PUT = _relay

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


def test_429_retry_after_is_honoured(
    evtrack_server: EvtrackServer, proxy: Proxy, spool: Path
) -> None:
    """Two 429s with Retry-After: 1: the client waits at least that long each time, resends
    the same range under the same key, and the points arrive once."""
    exp = create_experiment(evtrack_server.url)
    proxy.throttle = 2
    with Client(proxy.url, spool_dir=spool, batch_interval=3600) as client:
        run = client.start_run(experiment_id=exp)
        for i in range(1000):
            run.log_metric("m", float(i), step=i)
        assert client.flush(30)
    log = proxy.ingest_log
    assert [status for _, status, _ in log[:3]] == [429, 429, 200]
    assert log[1][0] - log[0][0] >= 0.95
    assert log[2][0] - log[1][0] >= 0.95
    assert len({key for _, _, key in log[:3]}) == 1
    assert logged_points(evtrack_server.dsn, run.run_id)[0] == 1000


def test_lost_answer_is_retried_without_duplicates(
    evtrack_server: EvtrackServer, proxy: Proxy, spool: Path
) -> None:
    """The server applies a batch but the client gets a 502: the retry carries the same
    Idempotency-Key, the server answers from its idempotency table, nothing is doubled."""
    exp = create_experiment(evtrack_server.url)
    proxy.lose = 1
    with Client(proxy.url, spool_dir=spool, batch_interval=3600, retry_max_delay=0.5) as client:
        run = client.start_run(experiment_id=exp)
        for i in range(5000):
            run.log_metric("m", 1.0, step=i // 10)  # repeated (step, value): dedup can't hide
        assert client.flush(30)
    statuses = [status for _, status, _ in proxy.ingest_log]
    assert statuses[:2] == [-200, 200]
    assert proxy.ingest_log[0][2] == proxy.ingest_log[1][2]
    points, events = logged_points(evtrack_server.dsn, run.run_id)
    assert (points, events) == (5000, 1)


def test_a_server_ignoring_packed_points_gets_them_as_lists(
    evtrack_server: EvtrackServer, proxy: Proxy, spool: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A server older than packed points applies the first batch without them and says so
    in its point count: the client sends those points again as lists under a key of their
    own, warns once, and sends lists from then on. Every point arrives once."""
    url = evtrack_server.url
    exp = create_experiment(url)
    proxy.strip_packed = True
    caplog.set_level(logging.WARNING, "evtrack.client")
    with Client(proxy.url, spool_dir=spool, batch_max_points=1000, batch_interval=3600) as client:
        run = client.start_run(experiment_id=exp)
        run.log_params({"lr": 0.1})
        for i in range(3000):
            run.log_metric("m", float(i), step=i)
        assert client.flush(30)
        stats = client.stats()
    assert logged_points(evtrack_server.dsn, run.run_id)[0] == 3000
    assert (stats.delivered_points, stats.rejected_points) == (3000, 0)
    keys = [key for _, status, key in proxy.ingest_log if status == 200]
    assert keys[1] == keys[0] + ":lists"
    assert sum(key.endswith(":lists") for key in keys) == 1
    assert get_run(url, run.run_id)["data"]["params"] == [{"key": "lr", "value": "0.1"}]
    assert sum("ignores packed" in r.getMessage() for r in caplog.records) == 1


def test_refused_record_is_isolated_and_kept(
    evtrack_server: EvtrackServer, spool: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A param that conflicts with the server's value makes the server refuse the batch;
    the client splits it, delivers the good points, drops the bad record with a copy in
    rejected/, and does not retry it forever."""
    url = evtrack_server.url
    exp = create_experiment(url)
    with Client(url, spool_dir=spool) as first:
        run = first.start_run(experiment_id=exp, end_on_exit=False)
        run.log_param("lr", "0.1")
        assert first.flush(30)
    caplog.set_level(logging.WARNING, "evtrack.client")
    with Client(url, spool_dir=spool, batch_interval=3600) as second:
        again = second.start_run(experiment_id=exp, run_id=run.run_id)
        for i in range(500):
            again.log_metric("m", float(i), step=i)
        again.log_param("lr", "0.2")  # unknown to this process, refused by the server
        for i in range(500, 1000):
            again.log_metric("m", float(i), step=i)
        assert second.flush(60)
        stats = second.stats()
    delivered = logged_points(evtrack_server.dsn, run.run_id)[0]
    assert delivered == stats.delivered_points
    assert delivered + stats.rejected_points == 1000
    assert delivered >= 990
    reasons = [json.loads(p.read_text()) for p in (spool / "rejected").glob("*.json")]
    assert any("Changing param values" in r["message"] for r in reasons)
    assert stats.requests < 40
    assert any("refused a batch" in r.getMessage() for r in caplog.records)


def test_artifacts_are_uploaded_after_the_run_exists(
    evtrack_server: EvtrackServer, spool: Path, tmp_path: Path
) -> None:
    url = evtrack_server.url
    model = tmp_path / "model.bin"
    model.write_bytes(b"\x00weights" * 1000)
    folder = tmp_path / "plots"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_text("a")
    (folder / "sub" / "b.txt").write_text("b")
    with Client(url, spool_dir=spool) as client:
        with client.start_run(experiment_id=create_experiment(url)) as run:
            run.log_artifact(model)
            model.write_bytes(b"overwritten")  # the spooled copy is what gets uploaded
            run.log_artifact(folder, "plots")
        assert client.flush(30)
    base = f"{url}/api/2.0/mlflow"
    listing = requests.get(f"{base}/artifacts/list", params={"run_id": run.run_id}).json()
    assert {f["path"] for f in listing["files"]} == {"model.bin", "plots"}
    root = get_run(url, run.run_id)["info"]["artifact_uri"].removeprefix("mlflow-artifacts:/")
    got = requests.get(f"{url}/api/2.0/mlflow-artifacts/artifacts/{root}/model.bin")
    assert got.content == b"\x00weights" * 1000
    got = requests.get(f"{url}/api/2.0/mlflow-artifacts/artifacts/{root}/plots/sub/b.txt")
    assert got.content == b"b"
    assert not any((spool).glob("*/artifacts/*"))


def test_async_client(evtrack_server: EvtrackServer, spool: Path) -> None:
    url = evtrack_server.url
    exp = create_experiment(url)

    async def main() -> str:
        async with AsyncClient(url, spool_dir=spool) as client:
            async with client.start_run(experiment_id=exp) as run:
                for i in range(2000):
                    run.log_metric("loss", 1.0 / (i + 1), step=i)
                assert await run.flush(30)
            return run.run_id

    run_id = asyncio.run(main())
    assert logged_points(evtrack_server.dsn, run_id)[0] == 2000
    assert get_run(url, run_id)["info"]["status"] == "FINISHED"


def test_module_level_api(evtrack_server: EvtrackServer, spool: Path) -> None:
    url = evtrack_server.url
    run = evtrack.client.init(experiment_id=create_experiment(url), server_url=url, spool_dir=spool)
    try:
        evtrack.client.log_params({"optimizer": "adam"})
        for i in range(100):
            evtrack.client.log_metric("loss", float(i), step=i)
        evtrack.client.finish()
        assert evtrack.client.flush(30)
    finally:
        evtrack.client.get_client().close(5)
    assert logged_points(evtrack_server.dsn, run.run_id)[0] == 100
    assert get_run(url, run.run_id)["info"]["status"] == "FINISHED"


def test_start_creates_the_experiment_by_name(evtrack_server: EvtrackServer, spool: Path) -> None:
    url = evtrack_server.url
    with Client(url, spool_dir=spool) as client:
        with client.start_run(experiment_name="made-by-the-client") as run:
            run.log_metric("m", 1.0)
        assert client.flush(30)
    assert logged_points(evtrack_server.dsn, run.run_id)[0] == 1

"""Limits that hold under abuse (issue 9, point 6), each against a real server over sockets.

Bodies are bounded per request (413) and server-wide (503 with Retry-After); a body must keep
arriving (408); a request head must complete in time; idle connections are closed and give
way at the connection cap; per-user rate limits answer 429 with Retry-After; and event-stream
subscribers share one reader, so many of them starve no other request.
"""

from __future__ import annotations

import asyncio
import base64
import http.client
import json
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import asyncpg
import requests
from _support.server import EvtrackServer

import evtrack.api

CREATE = "/api/2.0/mlflow/experiments/create"
SEARCH = "/api/2.0/mlflow/experiments/search?max_results=1"


def _connect(server: EvtrackServer, timeout: float = 10.0) -> socket.socket:
    return socket.create_connection((server.host, server.port), timeout=timeout)


def _send_head(
    server: EvtrackServer,
    path: str,
    declared: int,
    *,
    method: str = "POST",
    content_type: str = "application/json",
    first: bytes = b"",
) -> socket.socket:
    sock = _connect(server)
    sock.sendall(
        (
            f"{method} {path} HTTP/1.1\r\nHost: {server.host}:{server.port}\r\n"
            f"Content-Type: {content_type}\r\nContent-Length: {declared}\r\n\r\n"
        ).encode()
        + first
    )
    return sock


def _read_all(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def _closed_within(sock: socket.socket, seconds: float) -> float:
    """Seconds until the server closed ``sock`` (fails if it did not within ``seconds``)."""
    started = time.monotonic()
    sock.settimeout(seconds)
    try:
        while sock.recv(65536):
            pass
    except TimeoutError:
        raise AssertionError(f"connection still open after {seconds} s") from None
    except ConnectionResetError:
        pass
    return time.monotonic() - started


def _status(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


def _json_body(answer: bytes) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(answer.split(b"\r\n\r\n", 1)[1])
    return body


def test_bodies_are_bounded_per_request_and_server_wide(
    evtrack_server_factory: Callable[..., EvtrackServer],
) -> None:
    server = evtrack_server_factory(
        extra_args=["--max-buffered-body-bytes", "2M", "--body-budget-wait", "0.5"]
    )
    big = 900_000
    body = b'{"name": "' + b"a" * (big - 12) + b'"}'
    assert len(body) == big
    # A body is charged twice its size (bytes and decoded form): this one holds 1.8 of 2 MB.
    holder = _send_head(server, CREATE, big, first=body[:10])
    time.sleep(0.3)

    started = time.monotonic()
    waited = requests.post(server.url + CREATE, json={"name": "x" * 200_000}, timeout=30)
    assert waited.status_code == 503, waited.text
    assert waited.headers["Retry-After"] == "1"
    assert waited.json()["error_code"] == "TEMPORARILY_UNAVAILABLE"
    assert 0.4 < time.monotonic() - started < 5

    too_big = requests.post(
        server.url + CREATE,
        data=b"x" * 2_000_000,
        timeout=30,
        headers={"Content-Type": "application/json"},
    )
    assert too_big.status_code == 413, too_big.text
    assert too_big.json()["error_code"] == "INVALID_PARAMETER_VALUE"
    assert too_big.headers["Connection"] == "close"

    holder.sendall(body[10:])  # the held request completes and gives its share back
    assert _status(_read_all_first(holder)) == 400  # a 900 KB name is no valid name
    holder.close()
    name = f"budget-{uuid.uuid4().hex}"
    ok = requests.post(server.url + CREATE, json={"name": name, "pad": "x" * 200_000}, timeout=30)
    assert ok.status_code == 200, ok.text


def _read_all_first(sock: socket.socket) -> bytes:
    """The first answer on ``sock`` (up to the end of its body)."""
    data = b""
    sock.settimeout(30)
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, rest = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(rest) < length:
        rest += sock.recv(65536)
    return head + b"\r\n\r\n" + rest


def test_stalled_and_trickling_bodies_get_408_and_are_disconnected(
    evtrack_server_factory: Callable[..., EvtrackServer],
) -> None:
    server = evtrack_server_factory(extra_args=["--body-timeout", "1", "--body-min-rate", "1000"])

    stalled = _send_head(server, CREATE, 10_000, first=b'{"name": "')
    started = time.monotonic()
    answer = _read_all(stalled)  # the server answers, then closes
    assert _status(answer) == 408, answer
    assert _json_body(answer)["error_code"] == "BAD_REQUEST"
    assert 0.8 < time.monotonic() - started < 5

    trickle = _send_head(server, CREATE, 10_000, first=b'{"name": "')
    started = time.monotonic()
    trickle.settimeout(0.25)
    answer = b""
    while time.monotonic() - started < 10:
        try:
            trickle.sendall(b"aaaaa")  # 20 bytes a second: below the floor
            chunk = trickle.recv(65536)
        except TimeoutError:
            continue
        except (BrokenPipeError, ConnectionResetError):
            break
        if not chunk:
            break
        answer += chunk
    assert _status(answer) == 408, answer
    assert time.monotonic() - started < 5

    # A steady upload above the floor takes longer than the timeout and is fine.
    steady = _send_head(server, CREATE, 10_000, first=b'{"name": "')
    sent = 10
    while sent < 10_000 - 2:
        piece = min(400, 10_000 - 2 - sent)
        steady.sendall(b"s" * piece)
        sent += piece
        time.sleep(0.05)  # 8 KB/s, for about 1.3 s
    steady.sendall(b'"}')
    answer = _read_all_first(steady)
    assert _status(answer) == 400, answer  # the name is too long: the handler got the body
    steady.close()


def test_without_a_rate_floor_only_a_pause_ends_a_body(
    evtrack_server_factory: Callable[..., EvtrackServer],
) -> None:
    server = evtrack_server_factory(extra_args=["--body-timeout", "1", "--body-min-rate", "0"])
    sock = _send_head(server, CREATE, 22, first=b'{"name": "')
    for _ in range(10):  # a byte every 0.25 s for 2.5 s: slow, but never a 1 s pause
        time.sleep(0.25)
        sock.sendall(b"x")
    sock.sendall(b'"}')
    assert _status(_read_all_first(sock)) == 200
    sock.close()
    paused = _send_head(server, CREATE, 22, first=b'{"name": "')
    started = time.monotonic()
    assert _status(_read_all(paused)) == 408
    assert time.monotonic() - started < 3


def test_every_body_is_read_through_the_limits() -> None:
    """Handlers get bodies from ``read_body`` or ``body_chunks`` only: a direct read would
    escape the budget and the clock (and leave nothing for ``read_body`` to read)."""
    api = Path(evtrack.api.__file__).parent
    for module in api.glob("*.py"):
        if module.name == "_bodies.py":
            continue
        text = module.read_text()
        for direct in ("request.read(", "request.json(", "request.text(", "request.post("):
            assert direct not in text, f"{module.name} reads the body with {direct}"
        assert not re.search(r"request\.content\b(?!_)", text), f"{module.name} reads content"


def test_a_stalled_artifact_upload_gets_408_and_leaves_no_file(
    evtrack_server_factory: Callable[..., EvtrackServer],
) -> None:
    server = evtrack_server_factory(extra_args=["--body-timeout", "1"])
    path = "/api/2.0/mlflow-artifacts/artifacts/0/run/artifacts/big.bin"
    sock = _send_head(
        server,
        path,
        1_000_000,
        method="PUT",
        content_type="application/octet-stream",
        first=b"x" * 1000,
    )
    answer = _read_all(sock)
    assert _status(answer) == 408, answer
    time.sleep(0.2)
    assert [p for p in server.artifacts_root.rglob("*") if p.is_file()] == []


def test_request_heads_must_complete_in_time(
    evtrack_server_factory: Callable[..., EvtrackServer],
) -> None:
    server = evtrack_server_factory(extra_args=["--header-timeout", "1"])
    partial = _connect(server)
    partial.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
    assert 0.8 < _closed_within(partial, 5) < 3

    slowloris = _connect(server)
    slowloris.sendall(b"GET /health HTTP/1.1\r\n")
    started = time.monotonic()
    slowloris.settimeout(0.2)
    closed = False
    while time.monotonic() - started < 6 and not closed:
        try:
            slowloris.sendall(b"X-a: b\r\n")  # a header line every 0.2 s, never the end
            closed = slowloris.recv(1) == b""
        except TimeoutError:
            continue
        except (BrokenPipeError, ConnectionResetError):
            closed = True
    assert closed and time.monotonic() - started < 3

    # A complete request on the same kind of connection is answered as usual.
    assert requests.get(server.url + "/health", timeout=5).status_code == 200


def test_idle_connections_are_closed(evtrack_server_factory: Callable[..., EvtrackServer]) -> None:
    server = evtrack_server_factory(extra_args=["--keepalive-timeout", "1"])
    silent = _connect(server)  # sends nothing at all
    assert 0.8 < _closed_within(silent, 5) < 3

    kept = _connect(server)
    kept.sendall(f"GET /health HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n\r\n".encode())
    assert _status(_read_all_first(kept)) == 200
    assert 0.8 < _closed_within(kept, 5) < 3  # nothing more after its answer


def test_at_the_connection_cap_idle_connections_give_way_and_busy_ones_do_not(
    evtrack_server_factory: Callable[..., EvtrackServer],
) -> None:
    server = evtrack_server_factory(extra_args=["--max-connections", "10"])
    idle = [_connect(server) for _ in range(10)]
    time.sleep(0.2)
    assert requests.get(server.url + "/health", timeout=5).status_code == 200
    _closed_within(idle[0], 2)  # the longest idle gave way
    for sock in idle:
        sock.close()

    busy = [_send_head(server, CREATE, 1000, first=b"{") for _ in range(10)]
    time.sleep(0.5)  # each handler is now waiting for the rest of its body
    refused = _connect(server)
    refused.sendall(f"GET /health HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n\r\n".encode())
    answer = _read_all(refused)
    assert _status(answer) == 503, answer
    assert b"Retry-After: 1" in answer
    assert _json_body(answer)["error_code"] == "TEMPORARILY_UNAVAILABLE"
    for sock in busy:
        sock.close()
    time.sleep(0.3)
    assert requests.get(server.url + "/health", timeout=5).status_code == 200


def _get_from(server: EvtrackServer, source: str, path: str) -> http.client.HTTPResponse:
    conn = http.client.HTTPConnection(
        server.host, server.port, timeout=10, source_address=(source, 0)
    )
    conn.request("GET", path)
    response = conn.getresponse()
    response.read()
    conn.close()
    return response


def test_rate_limits_answer_429_with_retry_after_per_caller(
    evtrack_server_factory: Callable[..., EvtrackServer],
) -> None:
    server = evtrack_server_factory(extra_args=["--rate-limit", "5", "--rate-limit-burst", "5"])
    session = requests.Session()
    answers = [session.get(server.url + SEARCH, timeout=10) for _ in range(20)]
    codes = [a.status_code for a in answers]
    assert codes[:5] == [200] * 5, codes
    limited = [a for a in answers if a.status_code == 429]
    assert len(limited) >= 10, codes
    assert all(int(a.headers["Retry-After"]) >= 1 for a in limited)
    assert limited[0].json()["error_code"] == "REQUEST_LIMIT_EXCEEDED"
    # Probes are never limited; another caller has a bucket of its own.
    assert all(session.get(server.url + p).status_code == 200 for p in ["/health"] * 20)
    assert _get_from(server, "127.0.0.2", SEARCH).status == 200
    time.sleep(1.2)  # the bucket refills at 5 a second
    assert session.get(server.url + SEARCH).status_code == 200


def test_with_auth_rate_limits_count_per_user_and_failed_logins_per_address(
    evtrack_server_factory: Callable[..., EvtrackServer],
) -> None:
    admin = ("admin", "admin-secret-Pw1")
    server = evtrack_server_factory(
        extra_args=["--auth", "--rate-limit", "1", "--rate-limit-burst", "3"],
        env={"EVTRACK_ADMIN_PASSWORD": admin[1]},
    )
    bob = (f"bob-{uuid.uuid4().hex[:6]}", f"pw-{uuid.uuid4().hex}")
    created = requests.post(
        server.url + "/api/2.0/mlflow/users/create",
        json={"username": bob[0], "password": bob[1]},
        auth=admin,
        timeout=30,
    )
    assert created.status_code == 200, created.text
    codes = [
        requests.get(server.url + SEARCH, auth=admin, timeout=30).status_code for _ in range(8)
    ]
    assert 429 in codes, codes
    # Same address, another user: a bucket of their own.
    assert requests.get(server.url + SEARCH, auth=bob, timeout=30).status_code == 200

    def guess(password: str) -> int:
        conn = http.client.HTTPConnection(
            server.host, server.port, timeout=30, source_address=("127.0.0.2", 0)
        )
        token = base64.b64encode(f"{bob[0]}:{password}".encode()).decode()
        conn.request("GET", SEARCH, headers={"Authorization": f"Basic {token}"})
        status = conn.getresponse().status
        conn.close()
        return status

    with ThreadPoolExecutor(8) as pool:  # (each check of a password takes a while)
        guesses = list(pool.map(guess, [f"wrong-{i}" for i in range(8)]))
    # Failed logins spend the address's requests: guessing in parallel is throttled.
    assert 401 in guesses and guesses.count(429) >= 3, guesses
    time.sleep(1.0)  # bob's own bucket has a token again (he spent one above)
    assert guess(bob[1]) == 200  # ... and the right password counts against the user


def _stream(server: EvtrackServer, names: set[str], got: set[str], ready: threading.Event) -> None:
    with requests.get(
        f"{server.url}/api/2.0/evtrack/events/stream",
        params={"types": "ExperimentCreated"},
        stream=True,
        timeout=60,
    ) as resp:
        assert resp.status_code == 200
        for line in resp.iter_lines(decode_unicode=True):
            if line.startswith(":"):
                ready.set()
            elif line.startswith("data: "):
                name = json.loads(line[6:])["change"]["name"]
                if name in names:
                    got.add(name)
                    if got == names:
                        return


def _commits(dsn: str) -> int:
    """Transactions committed in the server's database so far (PostgreSQL's statistics)."""

    async def count() -> int:
        conn = await asyncpg.connect(dsn)
        try:
            return int(
                await conn.fetchval(
                    "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
                )
            )
        finally:
            await conn.close()

    return asyncio.run(count())


def _commit_rate(dsn: str, seconds: float = 3.0) -> float:
    time.sleep(1.5)  # backends report their statistics about once a second
    before = _commits(dsn)
    time.sleep(seconds)
    return (_commits(dsn) - before) / seconds


def test_25_event_streams_share_one_reader_and_starve_no_request(
    evtrack_server_factory: Callable[..., EvtrackServer],
) -> None:
    server = evtrack_server_factory()  # the default pool of 20 connections
    names = {f"stream-{uuid.uuid4().hex}" for _ in range(30)}
    received: list[set[str]] = [set() for _ in range(25)]
    readies = [threading.Event() for _ in range(25)]
    listeners = [
        threading.Thread(target=_stream, args=(server, names, got, ready), daemon=True)
        for got, ready in zip(received, readies, strict=True)
    ]
    listeners[0].start()
    assert readies[0].wait(20)
    one_stream = _commit_rate(server.dsn)
    for t in listeners[1:]:
        t.start()
    assert all(r.wait(20) for r in readies)
    many_streams = _commit_rate(server.dsn)
    # One reader polls the log for all subscribers: 24 more cost (next to) no more queries.
    # (A poller per subscriber adds 5 queries a second each: 120 a second.)
    print(f"commits per second: one stream {one_stream:.1f}, 25 streams {many_streams:.1f}")
    assert many_streams - one_stream < 15, (one_stream, many_streams)

    def work(name: str) -> int:
        session = requests.Session()
        created = session.post(server.url + CREATE, json={"name": name}, timeout=20)
        assert created.status_code == 200, created.text
        experiment_id = created.json()["experiment_id"]
        run = session.post(
            server.url + "/api/2.0/mlflow/runs/create",
            json={"experiment_id": experiment_id},
            timeout=20,
        )
        assert run.status_code == 200, run.text
        found = session.get(
            server.url + "/api/2.0/mlflow/experiments/get-by-name",
            params={"experiment_name": name},
            timeout=20,
        )
        assert found.status_code == 200, found.text
        return 3

    started = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        assert sum(pool.map(work, sorted(names))) == 90
    assert time.monotonic() - started < 30
    for t in listeners:
        t.join(20)
    assert all(got == names for got in received)

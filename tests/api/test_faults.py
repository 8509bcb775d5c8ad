"""The server under client faults: a client that goes away mid-request, a slow upload."""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Callable

import msgspec
import requests
from _support.server import EvtrackServer


def _wait_for_log(server: EvtrackServer, needle: str, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        text = server.stderr_path.read_text(errors="replace")
        if needle in text or time.monotonic() > deadline:
            return text
        time.sleep(0.1)


def _start_upload(
    server: EvtrackServer,
    path: str,
    declared: int,
    sent: bytes,
    content_type: str = "application/json",
) -> socket.socket:
    """A raw POST on loopback that declares ``declared`` body bytes and sends only ``sent``."""
    sock = socket.create_connection((server.host, server.port), timeout=10)
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {server.host}:{server.port}\r\n"
        f"Content-Type: {content_type}\r\nContent-Length: {declared}\r\n\r\n"
    ).encode()
    sock.sendall(head + sent)
    return sock


def test_a_client_that_disconnects_mid_body_is_no_server_error(
    evtrack_server_factory: Callable[..., EvtrackServer],
) -> None:
    server = evtrack_server_factory()
    for path, content_type in (
        ("/api/2.0/mlflow/runs/log-batch", "application/json"),
        ("/api/2.0/evtrack/ingest", "application/x-ndjson"),
    ):
        sock = _start_upload(server, path, 10_000, b'{"run_id": "', content_type)
        time.sleep(0.5)  # the handler is now reading the body
        sock.close()
    text = _wait_for_log(server, '/api/2.0/evtrack/ingest", "status": 499')
    closed = [line for line in text.splitlines() if "request.client_closed" in line]
    assert len(closed) == 2, text
    assert all('"status": 499' in line for line in closed), closed
    assert "request.failed" not in text, text
    assert "Traceback" not in text, text
    assert '"status": 500' not in text, text


def test_a_slow_ingest_upload_holds_no_slot(
    evtrack_server_factory: Callable[..., EvtrackServer],
) -> None:
    server = evtrack_server_factory(
        extra_args=["--ingest-max-in-flight", "1", "--ingest-queue-wait", "0.2"]
    )

    def body(run_id: str) -> bytes:
        record = {
            "run_id": run_id,
            "start": {"experiment_id": "0", "run_name": run_id[:8]},
            "metrics": {"keys": ["loss"], "values": [0.5], "timestamps": [1], "steps": [0]},
        }
        return msgspec.msgpack.encode([record])

    slow_body = body(uuid.uuid4().hex)
    slow = socket.create_connection((server.host, server.port), timeout=30)
    slow.sendall(
        (
            f"POST /api/2.0/evtrack/ingest HTTP/1.1\r\nHost: {server.host}\r\n"
            f"Content-Type: application/msgpack\r\nContent-Length: {len(slow_body)}\r\n"
            "Connection: close\r\n\r\n"
        ).encode()
        + slow_body[:10]
    )
    time.sleep(0.5)  # the slow request is reading its body now
    started = time.monotonic()
    fast = requests.post(
        server.url + "/api/2.0/evtrack/ingest",
        data=body(uuid.uuid4().hex),
        headers={"Content-Type": "application/msgpack"},
        timeout=30,
    )
    assert fast.status_code == 200, fast.text
    assert time.monotonic() - started < 5
    slow.sendall(slow_body[10:])
    answer = b""
    while chunk := slow.recv(65536):
        answer += chunk
    slow.close()
    assert answer.startswith(b"HTTP/1.1 200"), answer

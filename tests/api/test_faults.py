"""The server under client faults: a client that goes away mid-request, a slow upload."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

from _support.server import EvtrackServer


def _wait_for_log(server: EvtrackServer, needle: str, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        text = server.stderr_path.read_text(errors="replace")
        if needle in text or time.monotonic() > deadline:
            return text
        time.sleep(0.1)


def _start_upload(server: EvtrackServer, path: str, declared: int, sent: bytes) -> socket.socket:
    """A raw POST on loopback that declares ``declared`` body bytes and sends only ``sent``."""
    sock = socket.create_connection((server.host, server.port), timeout=10)
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {server.host}:{server.port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {declared}\r\n\r\n"
    ).encode()
    sock.sendall(head + sent)
    return sock


def test_a_client_that_disconnects_mid_body_is_no_server_error(
    evtrack_server_factory: Callable[..., EvtrackServer],
) -> None:
    server = evtrack_server_factory()
    for path in ("/api/2.0/mlflow/runs/log-batch", "/api/2.0/evtrack/ingest"):
        sock = _start_upload(server, path, 10_000, b'{"run_id": "')
        time.sleep(0.5)  # the handler is now reading the body
        sock.close()
    text = _wait_for_log(server, "/api/2.0/evtrack/ingest\", \"status\": 499")
    closed = [line for line in text.splitlines() if "request.client_closed" in line]
    assert len(closed) == 2, text
    assert all('"status": 499' in line for line in closed), closed
    assert "request.failed" not in text, text
    assert "Traceback" not in text, text
    assert '"status": 500' not in text, text

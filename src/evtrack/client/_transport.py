"""HTTP for the sender: stdlib ``http.client`` with one kept-alive connection.

No third-party HTTP stack: the client must import cleanly into any training environment and
its dependency set is evtrack's own. Every request has a timeout; a connection that failed
in any way is thrown away and the next request opens a fresh one.
"""

from __future__ import annotations

import base64
import contextlib
import email.utils
import http.client
import ipaddress
import json
import os
import socket
import time
import zlib
from dataclasses import dataclass
from typing import IO, Any
from urllib.parse import quote, urlencode, urlsplit

from evtrack import __version__

USER_AGENT = f"evtrack-client/{__version__}"


class TransportError(Exception):
    """The request did not get an HTTP answer (connection refused, reset, timed out)."""


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        try:
            return json.loads(self.body or b"{}")
        except ValueError:
            return {}

    @property
    def error_code(self) -> str:
        data = self.json()
        return str(data.get("error_code", "")) if isinstance(data, dict) else ""

    @property
    def message(self) -> str:
        data = self.json()
        if isinstance(data, dict) and "message" in data:
            return str(data["message"])
        return self.body[:500].decode("utf-8", "replace")

    def retry_after(self) -> float | None:
        """``Retry-After`` in seconds (delta-seconds or an HTTP date), if present."""
        value = self.headers.get("retry-after")
        if not value:
            return None
        try:
            return max(0.0, float(value))
        except ValueError:
            pass
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        return max(0.0, when.timestamp() - time.time())


def validate_server_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(
            f"evtrack.client needs an http(s) server URL, got {url!r} "
            "(set EVTRACK_SERVER or pass server_url=...)"
        )
    return url.rstrip("/")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Transport:
    def __init__(
        self,
        url: str,
        *,
        user: str | None,
        timeout: float = 30.0,
        compress: bool | None = None,
    ) -> None:
        self.url = validate_server_url(url)
        parts = urlsplit(self.url)
        self.https = parts.scheme == "https"
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port
        self.base_path = parts.path.rstrip("/")
        self.timeout = timeout
        self.compress = (not _is_loopback(self.host)) if compress is None else compress
        self.headers = {"User-Agent": USER_AGENT}
        if user:
            self.headers["X-Evtrack-User"] = user
        token = os.environ.get("MLFLOW_TRACKING_TOKEN")
        username = os.environ.get("MLFLOW_TRACKING_USERNAME")
        if token:
            self.headers["Authorization"] = f"Bearer {token}"
        elif username:
            password = os.environ.get("MLFLOW_TRACKING_PASSWORD", "")
            basic = base64.b64encode(f"{username}:{password}".encode()).decode()
            self.headers["Authorization"] = f"Basic {basic}"
        self._conn: http.client.HTTPConnection | None = None

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None

    def _connection(self, timeout: float) -> tuple[http.client.HTTPConnection, bool]:
        conn = self._conn
        if conn is not None:
            if conn.sock is not None:
                conn.sock.settimeout(timeout)
            return conn, True
        if self.https:
            conn = http.client.HTTPSConnection(self.host, self.port, timeout=timeout)
        else:
            conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        self._conn = conn
        return conn, False

    def request(
        self,
        method: str,
        path: str,
        *,
        body: bytes | IO[bytes] | None = None,
        headers: dict[str, str] | None = None,
        query: dict[str, str] | None = None,
        timeout: float | None = None,
        retry_stale: bool = True,
    ) -> Response:
        """One HTTP exchange. A request on a kept-alive connection the server had already
        closed is retried once on a new connection (``retry_stale``: only for requests that
        are safe to repeat, which every evtrack client request is)."""
        target = self.base_path + path
        if query:
            target += "?" + urlencode(query)
        all_headers = dict(self.headers)
        if headers:
            all_headers.update(headers)
        wait = self.timeout if timeout is None else max(0.05, min(timeout, self.timeout))
        for attempt in (0, 1):
            conn, reused = self._connection(wait)
            try:
                conn.request(method, target, body=body, headers=all_headers)
                raw = conn.getresponse()
                data = raw.read()
                response_headers = {k.lower(): v for k, v in raw.getheaders()}
                if raw.will_close:
                    self.close()
                return Response(raw.status, response_headers, data)
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                stale = isinstance(
                    exc,
                    http.client.RemoteDisconnected | ConnectionResetError | BrokenPipeError,
                )
                rewindable = body is None or isinstance(body, bytes)
                if attempt == 0 and reused and stale and retry_stale and rewindable:
                    continue
                if isinstance(exc, socket.timeout | TimeoutError):
                    raise TransportError(f"timed out after {wait:.1f}s") from exc
                raise TransportError(f"{type(exc).__name__}: {exc}") from exc
        raise AssertionError("unreachable")

    def post_ingest(self, path: str, body: bytes, key: str, timeout: float | None) -> Response:
        headers = {"Content-Type": "application/msgpack", "Idempotency-Key": key}
        if self.compress and len(body) > 64 * 1024:
            packer = zlib.compressobj(1, wbits=31)  # gzip framing; zlib releases the GIL
            body = packer.compress(body) + packer.flush()
            headers["Content-Encoding"] = "gzip"
        return self.request("POST", path, body=body, headers=headers, timeout=timeout)

    def put_file(self, path: str, file: IO[bytes], size: int, timeout: float | None) -> Response:
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(size)}
        return self.request(
            "PUT", quote(path), body=file, headers=headers, timeout=timeout, retry_stale=False
        )

"""The HTTP listener: request-head limits MLflow's clients need, and JSON for unparseable requests.

MLflow's UI and clients put run ids in the query string: ``metrics/get-history-bulk`` with
1,000 ids is a request line of about 41 KB, beyond aiohttp's default of 8,190 bytes. The
reference server (uvicorn) accepts request heads up to about 128 KiB and resets the connection
beyond that. evtrack accepts request lines and header fields up to :data:`MAX_REQUEST_LINE`.

A request whose head cannot be parsed never reaches the application's middlewares: aiohttp's
protocol handler answers it with a ``text/plain`` page. MLflow's clients read every error as
the JSON envelope ``{"error_code", "message"}``, so :class:`_Protocol` renders those answers
as that envelope too: 414 for a request line over the limit, 431 for a header, 400 for other
malformed requests.

The same protocol handler keeps the connection limits of :mod:`evtrack.api._connections`:
each connection counts against the cap (the longest-idle one gives way to a newcomer), a
request head that has started must be complete within ``--header-timeout`` seconds, and a
connection that sends nothing is closed after ``--keepalive-timeout`` (aiohttp's keep-alive
timer, which also runs before the first request).
"""

from __future__ import annotations

import asyncio
import json
import resource
import select
import signal
import socket
import sys
from typing import Any, cast

import structlog
from aiohttp import web
from aiohttp.http_exceptions import LineTooLong
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest
from aiohttp.web_server import Server

from evtrack.api._connections import (
    LISTEN_QUEUE,
    AcceptFailures,
    ConnectionLimits,
    ConnectionRegistry,
    ThrottledLog,
    default_max_connections,
    raise_fd_limit,
)
from evtrack.config import Settings
from evtrack.errors import ErrorCode

log = structlog.get_logger("evtrack.api")

# Above the reference's ~128 KiB head; the memory a connection may hold for its head is bounded.
MAX_REQUEST_LINE = 256 * 1024
HANDLER_ARGS: dict[str, Any] = {
    "max_line_size": MAX_REQUEST_LINE,
    "max_field_size": MAX_REQUEST_LINE,
}


def _status_and_body(status: int, exc: BaseException | None) -> tuple[int, dict[str, str]]:
    if isinstance(exc, LineTooLong):
        line = exc.args[0] if exc.args else b""
        if isinstance(line, bytes | bytearray) and line.startswith(b"/"):
            return 414, {
                "error_code": ErrorCode.INVALID_PARAMETER_VALUE.value,
                "message": f"Request line too long: more than {MAX_REQUEST_LINE} bytes. "
                "Send fewer values per request.",
            }
        return 431, {
            "error_code": ErrorCode.INVALID_PARAMETER_VALUE.value,
            "message": f"Request header too long: more than {MAX_REQUEST_LINE} bytes.",
        }
    if status >= 500:
        return status, {"error_code": ErrorCode.INTERNAL_ERROR.value, "message": "Internal error"}
    message = getattr(exc, "message", None) or str(exc or "Bad request")
    return status, {"error_code": ErrorCode.BAD_REQUEST.value, "message": f"{message}"}


REFUSAL_LINGER_S = 1.0
_REFUSAL_BODY = json.dumps(
    {
        "error_code": ErrorCode.TEMPORARILY_UNAVAILABLE.value,
        "message": "The server is at its connection limit; retry shortly.",
    }
).encode()
_REFUSAL = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
    b"Retry-After: 1\r\nConnection: close\r\n"
    + f"Content-Length: {len(_REFUSAL_BODY)}\r\n\r\n".encode()
    + _REFUSAL_BODY
)


class _Protocol(RequestHandler):
    """aiohttp's protocol handler, answering the requests it cannot parse in MLflow's JSON,
    counted against the server's connection cap, and with a deadline for request heads.

    Idleness is read from aiohttp's own state (``_waiter``: the handler waits for the next
    request), the state its keep-alive timer checks before closing a connection.
    """

    def __init__(
        self,
        manager: Server,
        *,
        registry: ConnectionRegistry,
        header_timeout_s: float,
        **kwargs: Any,
    ) -> None:
        super().__init__(manager, **kwargs)
        self._registry = registry
        self._header_timeout_s = header_timeout_s
        self._head_timer: asyncio.TimerHandle | None = None
        self._refused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if self._refused:
            self._refuse(cast(asyncio.Transport, transport))

    def _refuse(self, transport: asyncio.Transport) -> None:
        """Answer 503 before reading anything, then close. The request the client sends
        meanwhile is read and dropped for a moment: closing a socket with unread data resets
        it, and the client would lose the answer."""
        try:
            transport.write(_REFUSAL)
            if transport.can_write_eof():
                transport.write_eof()
        except OSError:  # the client is gone already
            transport.abort()
            return
        self._loop.call_later(REFUSAL_LINGER_S, transport.close)

    def connection_lost(self, exc: BaseException | None) -> None:
        self._registry.forget(self)
        self._cancel_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        before = self._request_count
        super().data_received(data)
        if self._request_count != before:
            self._cancel_head_timer()  # a whole head arrived
        elif data and self._head_timer is None and self.is_idle() and self.transport is not None:
            # The first bytes of a request head: the rest must follow within the timeout.
            self._head_timer = self._loop.call_later(
                self._header_timeout_s, self._head_timed_out, self._request_count
            )

    def is_idle(self) -> bool:
        """No request in progress: nothing received yet, an unfinished head, or a keep-alive
        connection waiting for its next request."""
        if self._request_count == 0 or self.transport is None:
            return True
        waiter = self._waiter
        return waiter is not None and not waiter.done()

    def can_give_way(self) -> bool:
        """Idle, and nothing waiting to be read either: a connection accepted a moment ago
        whose request is already in the socket (a probe) is not idle, even if this process
        has not read it yet."""
        transport = self.transport
        if transport is None or not self.is_idle():
            return False  # not connected yet (accepted a moment ago), closing, or busy
        sock = transport.get_extra_info("socket")
        if sock is None:
            return True
        poller = select.poll()
        poller.register(sock.fileno(), select.POLLIN)
        return not poller.poll(0)

    def _head_timed_out(self, request_count: int) -> None:
        self._head_timer = None
        if self._request_count == request_count and self.is_idle():
            self.force_close()

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        plain = super().handle_error(request, status, exc, message)  # logs; checks nothing sent
        code, body = _status_and_body(status, exc)
        response = web.Response(status=code, text=json.dumps(body), content_type="application/json")
        response.headers.update({k: v for k, v in plain.headers.items() if k == "Connection"})
        response.force_close()
        return response


_REFUSED = ThrottledLog("server.connections_refused")


class _Server(Server):
    registry: ConnectionRegistry
    header_timeout_s: float

    def __call__(self) -> RequestHandler:
        """A protocol for a connection just accepted, counted against the cap at once (a turn
        before its ``connection_made``): at the cap, the longest-idle connection is closed
        for it, or, when none is idle, it is refused."""
        protocol = _Protocol(
            self,
            loop=self._loop,
            registry=self.registry,
            header_timeout_s=self.header_timeout_s,
            **self._kwargs,
        )
        if not self.registry.admit(protocol):
            _REFUSED(open_connections=len(self.registry))
            protocol._refused = True  # data_received parses nothing: no request is handled
        return protocol


class _AppRunner(web.AppRunner):
    def __init__(
        self,
        app: web.Application,
        limits: ConnectionLimits,
        registry: ConnectionRegistry,
        shutdown_timeout: float,
    ) -> None:
        super().__init__(
            app,
            access_log=None,
            shutdown_timeout=shutdown_timeout,
            keepalive_timeout=limits.keepalive_timeout_s,
        )
        self._limits = limits
        self._registry = registry

    async def _make_server(self) -> Server:
        server = await super()._make_server()
        # Same server, same arguments; only the protocol handler it makes per connection differs.
        server.__class__ = _Server
        assert isinstance(server, _Server)
        server.registry = self._registry
        server.header_timeout_s = self._limits.header_timeout_s
        return server


def connection_limits(settings: Settings) -> ConnectionLimits:
    """The connection limits ``settings`` ask for; without ``max_connections``, as many as
    the descriptor limit allows (raised to the hard limit first)."""
    soft, _ = raise_fd_limit()
    max_connections = settings.max_connections or default_max_connections(soft, settings.pool_size)
    return ConnectionLimits(
        keepalive_timeout_s=settings.keepalive_timeout_s,
        header_timeout_s=settings.header_timeout_s,
        max_connections=max_connections,
    )


async def _serve(
    app: web.Application, host: str, port: int, shutdown_timeout: float, limits: ConnectionLimits
) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    registry = ConnectionRegistry(limits.max_connections)
    loop.set_exception_handler(AcceptFailures(registry))
    runner = _AppRunner(app, limits, registry, shutdown_timeout)
    await runner.setup()
    try:
        names = []
        for sock in _listening_sockets(host, port):
            site = web.SockSite(runner, sock, backlog=limits.accept_burst)
            await site.start()  # asyncio sets the backlog, which is also its accept burst
            sock.listen(LISTEN_QUEUE)  # ... and the kernel's queue is made long again
            names.append(site.name)
            print(f"======== Running on {site.name} ========", file=sys.stderr)
        log.info(
            "server.listening",
            address=", ".join(names),
            fd_limit=resource.getrlimit(resource.RLIMIT_NOFILE)[0],
            max_connections=limits.max_connections,
            keepalive_timeout_s=limits.keepalive_timeout_s,
            header_timeout_s=limits.header_timeout_s,
        )
        await stop.wait()
    finally:
        # Stops listening, then gives in-flight requests shutdown_timeout to finish; only after
        # that does asyncio.run cancel what is left.
        await runner.cleanup()


def _listening_sockets(host: str, port: int) -> list[socket.socket]:
    """One listening socket per address ``host`` resolves to, as asyncio would bind them, but
    owned here so that the kernel's queue can be longer than asyncio's accept burst."""
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    sockets: list[socket.socket] = []
    seen = set()
    try:
        for family, kind, proto, _, address in infos:
            if (family, address) in seen:
                continue
            seen.add((family, address))
            try:
                sock = socket.socket(family, kind, proto)
            except OSError:  # a family this host lacks (IPv6), as asyncio skips it
                continue
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6 and hasattr(socket, "IPV6_V6ONLY"):
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.listen(LISTEN_QUEUE)
            sock.setblocking(False)
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def serve(
    app: web.Application,
    *,
    host: str,
    port: int,
    shutdown_timeout: float,
    limits: ConnectionLimits | None = None,
) -> None:
    """Run ``app`` until SIGTERM/SIGINT, draining in-flight requests as ``web.run_app`` does,
    with the protocol handler above."""
    asyncio.run(_serve(app, host, port, shutdown_timeout, limits or ConnectionLimits()))

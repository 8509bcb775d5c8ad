"""The HTTP listener: request-head limits MLflow's clients need, and JSON for unparseable requests.

MLflow's UI and clients put run ids in the query string: ``metrics/get-history-bulk`` with
1,000 ids is a request line of about 41 KB, beyond aiohttp's default of 8,190 bytes. The
reference server (uvicorn) accepts request heads up to about 128 KiB and resets the connection
beyond that. evtrack accepts request lines and header fields up to :data:`MAX_REQUEST_LINE`.

A request whose head cannot be parsed never reaches the application's middlewares: aiohttp's
protocol handler answers it with a ``text/plain`` page. MLflow's clients read every error as
the JSON envelope ``{"error_code", "message"}``, so :class:`_JsonErrorRequestHandler` renders
those answers as that envelope too: 414 for a request line over the limit, 431 for a header,
400 for other malformed requests.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import LineTooLong
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest
from aiohttp.web_server import Server

from evtrack.errors import ErrorCode

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


class _JsonErrorRequestHandler(RequestHandler):
    """aiohttp's protocol handler, answering the requests it cannot parse in MLflow's JSON."""

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


class _JsonErrorServer(Server):
    def __call__(self) -> RequestHandler:
        return _JsonErrorRequestHandler(self, loop=self._loop, **self._kwargs)


class _AppRunner(web.AppRunner):
    async def _make_server(self) -> Server:
        server = await super()._make_server()
        # Same server, same arguments; only the protocol handler it makes per connection differs.
        server.__class__ = _JsonErrorServer
        return server


async def _serve(app: web.Application, host: str, port: int, shutdown_timeout: float) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    runner = _AppRunner(app, shutdown_timeout=shutdown_timeout, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        print(f"======== Running on {site.name} ========", file=sys.stderr)
        await stop.wait()
    finally:
        # Stops listening, then gives in-flight requests shutdown_timeout to finish; only after
        # that does asyncio.run cancel what is left.
        await runner.cleanup()


def serve(app: web.Application, *, host: str, port: int, shutdown_timeout: float) -> None:
    """Run ``app`` until SIGTERM/SIGINT, draining in-flight requests as ``web.run_app`` does,
    with the JSON-rendering protocol handler above."""
    asyncio.run(_serve(app, host, port, shutdown_timeout))

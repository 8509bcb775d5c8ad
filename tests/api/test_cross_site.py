"""No cross-site writes (issue 9, point 5): what a page on another site could make a browser
send is refused before any handler runs.

- write routes refuse the body types a browser sends cross-site without asking (text/plain,
  forms, multipart) and undeclared bodies, with MLflow's 400; the artifact upload takes any
  type (a PUT always needs a CORS preflight) and native ingest only its own;
- a ``Host`` that is not an allowed name is 403 (DNS rebinding), except for probes;
- a write whose ``Origin`` is not allowed is 403;
- CORS headers only for the origins an operator lists, never ``*``.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import uuid
from collections.abc import Callable

import pytest
import requests
from _support.server import EvtrackServer
from aiohttp import web

from evtrack.api import all_routes, mount

WRITES = ("POST", "PUT", "PATCH", "DELETE")
CONTENT_TYPE_MESSAGE = "Content-Type must be one of"
BROWSER_TYPES = (
    "text/plain",
    "text/plain; charset=utf-8",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=x",
)


@pytest.fixture
def evtrack_server(shared_server: EvtrackServer) -> EvtrackServer:
    return shared_server


def _error(resp: requests.Response, status: int, code: str) -> str:
    assert resp.status_code == status, (resp.request.method, resp.url, resp.text)
    body = resp.json()
    assert body["error_code"] == code, body
    return str(body["message"])


def _write_routes() -> list[tuple[str, str, tuple[str, ...] | None]]:
    """(method, mounted path, body types) of every write route, under every prefix."""
    out = []
    for route in all_routes():
        if route.method not in WRITES:
            continue
        app = web.Application()
        mount(app, [route])
        for mounted in app.router.routes():
            assert mounted.resource is not None
            path = re.sub(r"\{[^}]*\}", "x", mounted.resource.canonical)
            out.append((route.method, path, route.body_types))
    return out


def _event_count(dsn: str) -> int:
    import asyncio

    import asyncpg

    async def count() -> int:
        conn = await asyncpg.connect(dsn)
        try:
            return int(await conn.fetchval("SELECT count(*) FROM events"))
        finally:
            await conn.close()

    return asyncio.run(count())


def test_every_write_route_refuses_browser_body_types(evtrack_server: EvtrackServer) -> None:
    routes = _write_routes()
    assert len(routes) > 50  # the walk covers the route table, under every prefix
    before = _event_count(evtrack_server.dsn)
    session = requests.Session()
    checked = 0
    for method, path, body_types in routes:
        if body_types is None:
            continue  # the artifact upload: raw bytes of any type
        for content_type in BROWSER_TYPES:
            for body in ('{"name": "x", "experiment_id": "0"}', ""):  # also with no body
                resp = session.request(
                    method,
                    evtrack_server.url + path,
                    data=body,
                    headers={"Content-Type": content_type},
                )
                message = _error(resp, 400, "INVALID_PARAMETER_VALUE")
                assert CONTENT_TYPE_MESSAGE in message, (method, path, message)
                checked += 1
        # A body without a declared type is a form's text/plain in disguise.
        resp = session.request(method, evtrack_server.url + path, data=b'{"name": "x"}')
        assert CONTENT_TYPE_MESSAGE in _error(resp, 400, "INVALID_PARAMETER_VALUE")
    assert checked > 400
    assert _event_count(evtrack_server.dsn) == before  # nothing was written


def test_json_writes_without_a_body_or_type_still_reach_the_handler(
    evtrack_server: EvtrackServer,
) -> None:
    api = f"{evtrack_server.url}/api/2.0/mlflow"
    resp = requests.post(f"{api}/experiments/create")  # no body, no type: the handler decides
    message = _error(resp, 400, "INVALID_PARAMETER_VALUE")
    assert "Missing value for required parameter 'name'" in message
    resp = requests.post(
        f"{api}/experiments/create",
        data=json.dumps({"name": f"cs-{uuid.uuid4().hex}"}),
        headers={"Content-Type": "application/json; charset=utf-8"},
    )
    assert resp.status_code == 200, resp.text


def test_artifact_upload_takes_any_type_and_ingest_only_its_own(
    evtrack_server: EvtrackServer,
) -> None:
    api = f"{evtrack_server.url}/api/2.0"
    exp = requests.post(
        f"{api}/mlflow/experiments/create", json={"name": f"cs-{uuid.uuid4().hex}"}
    ).json()["experiment_id"]
    base = f"{api}/mlflow-artifacts/artifacts/{exp}/run/artifacts"
    for i, headers in enumerate(
        [{"Content-Type": "text/plain"}, {"Content-Type": "application/octet-stream"}, {}]
    ):
        put = requests.put(f"{base}/f{i}.txt", data=b"hello", headers=headers)
        assert put.status_code == 200, (headers, put.text)
    ingest = f"{api}/evtrack/ingest"
    for content_type in (*BROWSER_TYPES, "application/json"):
        resp = requests.post(ingest, data=b"\x90", headers={"Content-Type": content_type})
        assert "application/msgpack" in _error(resp, 400, "INVALID_PARAMETER_VALUE")
    resp = requests.post(ingest, data=b"\x90", headers={"Content-Type": "application/msgpack"})
    assert resp.status_code == 200, resp.text


def test_a_foreign_host_is_refused_except_on_probes(evtrack_server: EvtrackServer) -> None:
    url, port = evtrack_server.url, evtrack_server.port
    api = f"{url}/api/2.0/mlflow"
    for host in ("evil.example", f"evil.example:{port}", "127.0.0.1.nip.io", "localhost.evil"):
        resp = requests.get(f"{api}/experiments/search?max_results=1", headers={"Host": host})
        assert "DNS rebinding" in _error(resp, 403, "PERMISSION_DENIED"), host
        resp = requests.post(
            f"{api}/experiments/create", json={"name": "rebound"}, headers={"Host": host}
        )
        _error(resp, 403, "PERMISSION_DENIED")
        for probe in ("/health", "/ready", "/version"):
            assert requests.get(url + probe, headers={"Host": host}).status_code == 200, probe
    for host in (f"localhost:{port}", "localhost", f"127.0.0.1:{port}", "[::1]:5000", "LOCALHOST"):
        resp = requests.get(f"{api}/experiments/search?max_results=1", headers={"Host": host})
        assert resp.status_code == 200, (host, resp.text)


def test_writes_from_foreign_pages_are_refused(evtrack_server: EvtrackServer) -> None:
    api = f"{evtrack_server.url}/api/2.0/mlflow"

    def create(origin: str) -> requests.Response:
        return requests.post(
            f"{api}/experiments/create",
            json={"name": f"cs-{uuid.uuid4().hex}"},
            headers={"Origin": origin},
        )

    for origin in ("http://evil.example", "null", "https://localhost.evil.example", "file://"):
        message = _error(create(origin), 403, "PERMISSION_DENIED")
        assert "Cross-origin request blocked" in message, origin
    # The server's own pages (the UI served from it) write as usual.
    for origin in (f"http://127.0.0.1:{evtrack_server.port}", "http://localhost:3000"):
        assert create(origin).status_code == 200, origin
    # Reads are not refused, but nothing lets another site's page read the answer.
    resp = requests.get(
        f"{api}/experiments/search?max_results=1", headers={"Origin": "http://evil.example"}
    )
    assert resp.status_code == 200
    assert "Access-Control-Allow-Origin" not in resp.headers


def test_listed_hosts_and_cors_origins(
    evtrack_server_factory: Callable[..., EvtrackServer],
) -> None:
    ui = "https://ui.example.com"
    server = evtrack_server_factory(
        extra_args=["--allowed-hosts", "mlflow.example.com, *.corp.example,127.0.0.1"],
        env={"EVTRACK_CORS_ALLOWED_ORIGINS": f"{ui},http://localhost:8080"},
    )
    api = f"{server.url}/api/2.0/mlflow"
    search = f"{api}/experiments/search?max_results=1"
    for host in ("mlflow.example.com", "mlflow.example.com:443", "a.corp.example:8443"):
        assert requests.get(search, headers={"Host": host}).status_code == 200, host
    for host in ("corp.example", "localhost", "evil.example"):  # the list replaces the default
        _error(requests.get(search, headers={"Host": host}), 403, "PERMISSION_DENIED")

    preflight = requests.options(
        f"{api}/experiments/create",
        headers={
            "Host": "mlflow.example.com",
            "Origin": ui,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type, authorization",
        },
    )
    assert preflight.status_code == 204, preflight.text
    assert preflight.headers["Access-Control-Allow-Origin"] == ui
    assert preflight.headers["Access-Control-Allow-Credentials"] == "true"
    assert "POST" in preflight.headers["Access-Control-Allow-Methods"]
    assert preflight.headers["Access-Control-Allow-Headers"] == "content-type, authorization"
    assert "Origin" in preflight.headers["Vary"]

    created = requests.post(
        f"{api}/experiments/create",
        json={"name": f"cs-{uuid.uuid4().hex}"},
        headers={"Host": "mlflow.example.com", "Origin": ui},
    )
    assert created.status_code == 200, created.text
    assert created.headers["Access-Control-Allow-Origin"] == ui  # never "*"
    assert "X-Request-Id" in created.headers["Access-Control-Expose-Headers"]
    error = requests.get(f"{api}/runs/get?run_id=nope", headers={"Origin": ui})
    assert error.status_code >= 400 and error.headers["Access-Control-Allow-Origin"] == ui

    other = "https://other.example.com"
    refused = requests.post(
        f"{api}/experiments/create",
        json={"name": "x"},
        headers={"Host": "mlflow.example.com", "Origin": other},
    )
    _error(refused, 403, "PERMISSION_DENIED")
    assert "Access-Control-Allow-Origin" not in refused.headers
    unlisted = requests.options(
        f"{api}/experiments/create",
        headers={"Origin": other, "Access-Control-Request-Method": "POST"},
    )
    assert "Access-Control-Allow-Origin" not in unlisted.headers
    # A page of an allowed host writes without being listed for CORS.
    own = requests.post(
        f"{api}/experiments/create",
        json={"name": f"cs-{uuid.uuid4().hex}"},
        headers={"Host": "mlflow.example.com", "Origin": "https://mlflow.example.com"},
    )
    assert own.status_code == 200, own.text
    assert "Access-Control-Allow-Origin" not in own.headers


def test_any_host_still_refuses_foreign_pages(
    evtrack_server_factory: Callable[..., EvtrackServer],
) -> None:
    server = evtrack_server_factory(extra_args=["--allowed-hosts", "*"])
    api = f"{server.url}/api/2.0/mlflow"
    resp = requests.get(f"{api}/experiments/search", headers={"Host": "anything.example"})
    assert resp.status_code == 200

    def create(host: str, origin: str) -> int:
        return requests.post(
            f"{api}/experiments/create",
            json={"name": f"cs-{uuid.uuid4().hex}"},
            headers={"Host": host, "Origin": origin},
        ).status_code

    assert create("mlflow.example.com", "https://mlflow.example.com") == 200
    assert create("mlflow.example.com:8443", "https://mlflow.example.com:8443") == 200
    assert create("mlflow.example.com", "https://evil.example") == 403
    assert create("mlflow.example.com", "https://mlflow.example.com:8443") == 403


def test_bound_to_all_interfaces_ip_literals_and_the_machine_name_are_allowed(
    evtrack_server_factory: Callable[..., EvtrackServer],
) -> None:
    server = evtrack_server_factory(extra_args=["--host", "0.0.0.0"])
    search = f"{server.url}/api/2.0/mlflow/experiments/search?max_results=1"
    machine = socket.gethostname()
    for host in ("10.1.2.3:5000", "192.168.0.7", "[fd00::1]:5000", "localhost", machine):
        assert requests.get(search, headers={"Host": host}).status_code == 200, host
    for host in ("evil.example", "10.1.2.3.evil.example", f"{machine}.evil.example"):
        _error(requests.get(search, headers={"Host": host}), 403, "PERMISSION_DENIED")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--cors-allowed-origins", "*"], "'*' is not allowed"),
        (["--cors-allowed-origins", "ui.example.com"], "not an origin"),
        (["--allowed-hosts", "bad host"], "not a host pattern"),
        (["--allowed-hosts", "a.*.example"], "not a host pattern"),
    ],
)
def test_bad_protection_flags_stop_the_server_with_a_message(args: list[str], message: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "evtrack", "server", "--database-url", "postgresql://x/y", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert message in done.stderr

"""Every answer carries the security headers, streamed ones included, and none grants CORS."""

from __future__ import annotations

import uuid

import pytest
import requests
from _support.server import EvtrackServer


@pytest.fixture
def evtrack_server(shared_server: EvtrackServer) -> EvtrackServer:
    return shared_server


def _assert_secured(resp: requests.Response) -> None:
    assert resp.headers["X-Content-Type-Options"] == "nosniff", resp.url
    assert resp.headers["X-Frame-Options"] == "DENY", resp.url
    assert "Access-Control-Allow-Origin" not in resp.headers, resp.url


def test_plain_json_error_streamed_and_html_answers_are_secured(
    evtrack_server: EvtrackServer,
) -> None:
    base = evtrack_server.url
    api = f"{base}/api/2.0/mlflow"
    origin = {"Origin": "http://evil.example"}
    _assert_secured(requests.get(f"{base}/health", headers=origin))
    _assert_secured(requests.get(f"{api}/nope", headers=origin))  # a JSON 404
    refused = requests.post(  # a write from another site's page: 403, secured too
        f"{api}/experiments/create", json={"name": f"sec-{uuid.uuid4().hex}"}, headers=origin
    )
    assert refused.status_code == 403, refused.text
    _assert_secured(refused)
    exp = requests.post(f"{api}/experiments/create", json={"name": f"sec-{uuid.uuid4().hex}"})
    _assert_secured(exp)
    run = requests.post(f"{api}/runs/create", json={"experiment_id": exp.json()["experiment_id"]})
    run_id = run.json()["run"]["info"]["run_id"]
    artifacts = f"{base}/api/2.0/mlflow-artifacts/artifacts/{exp.json()['experiment_id']}"
    put = requests.put(f"{artifacts}/{run_id}/artifacts/page.html", data=b"<script>x</script>")
    assert put.status_code == 200, put.text
    got = requests.get(f"{artifacts}/{run_id}/artifacts/page.html", stream=True)  # streamed
    _assert_secured(got)
    if got.headers.get("Content-Type", "").startswith("text/html"):
        assert "frame-ancestors 'none'" in got.headers["Content-Security-Policy"]
    with requests.get(
        f"{base}/api/2.0/evtrack/events/stream", stream=True, timeout=10, headers=origin
    ) as stream:  # the event stream: headers are sent before the handler returns
        _assert_secured(stream)
    preflight = requests.options(
        f"{api}/runs/log-metric",
        headers={**origin, "Access-Control-Request-Method": "POST"},
    )
    assert "Access-Control-Allow-Origin" not in preflight.headers

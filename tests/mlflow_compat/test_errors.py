"""The error protocol (compat doc §0, §2): status codes and error_code names, on the wire.

Most cases are one table (``CASES``) run against a fresh experiment and run; every mismatch is
reported at once. Where the reference's answer is an accident (a 5xx or an HTML page for a bad
request), the case names what evtrack must answer instead (``evtrack=``): DESIGN invariant 8
says bad input gets a clear 4xx with an MLflow error body, and unknown routes are
``404 ENDPOINT_NOT_FOUND`` JSON.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from mlflow import MlflowClient
from mlflow.entities import Param, RunTag
from mlflow.utils.rest_utils import MlflowHostCreds, http_request, verify_rest_response

from ._support import API, Response, Server, raises_mlflow, unique

JSON = {"Content-Type": "application/json"}
MISSING_RUN = "0123456789abcdef0123456789abcdef"
IPV = "INVALID_PARAMETER_VALUE"
RDNE = "RESOURCE_DOES_NOT_EXIST"


@dataclass
class Ids:
    exp_id: str
    exp_name: str
    run_id: str


@dataclass
class Case:
    name: str
    method: str
    path: str  # relative to /api/2.0/mlflow unless it starts with "/"
    # request kwargs; a callable receives Ids (for bodies that need real ids)
    kwargs: dict[str, Any] | Callable[[Ids], dict[str, Any]] = field(default_factory=dict)
    status: int = 400
    code: str | None = IPV  # None: the body need not be JSON (reference HTML pages)
    message: str | None = None  # substring of the reference's message (also demanded...)
    message_reference_only: bool = False  # (...unless the wording is immaterial)
    # What evtrack must answer where it deliberately differs: (status, allowed error codes).
    evtrack: tuple[int | tuple[int, ...], tuple[str, ...]] | None = None
    why: str = ""


def _j(body: Any) -> dict[str, Any]:
    return {"json": body}


CASES: list[Case] = [
    # ---- body encoding ------------------------------------------------------------------------
    Case(
        "malformed JSON",
        "POST",
        "experiments/create",
        {"data": "{not json", "headers": JSON},
        message="Missing value for required parameter",
        message_reference_only=True,
        why="the reference reads malformed JSON as an empty body; evtrack says it is malformed",
    ),
    Case(
        "malformed JSON (runs/create)",
        "POST",
        "runs/create",
        {"data": "{bad", "headers": JSON},
        code="BAD_REQUEST",
        evtrack=(400, ("BAD_REQUEST", IPV)),
        why="the reference parses it as {} and leaks sqlite's FOREIGN KEY error",
    ),
    Case(
        "JSON array body",
        "POST",
        "experiments/create",
        {"data": "[]", "headers": JSON},
        status=500,
        code=None,
        evtrack=(400, (IPV, "BAD_REQUEST")),
        why="the reference crashes (500 HTML page)",
    ),
    Case(
        "JSON string body",
        "POST",
        "experiments/create",
        {"data": '"x"', "headers": JSON},
        status=500,
        code=None,
        evtrack=(400, (IPV, "BAD_REQUEST")),
        why="the reference crashes (500 HTML page)",
    ),
    Case(
        "empty body",
        "POST",
        "experiments/create",
        {"data": "", "headers": JSON},
        message="Missing value for required parameter 'name'",
    ),
    Case(
        "missing Content-Type",
        "POST",
        "experiments/create",
        {"data": '{"name": "x"}'},
        message="Content-Type",
    ),
    Case(
        "wrong Content-Type",
        "POST",
        "experiments/create",
        {"data": '{"name": "x"}', "headers": {"Content-Type": "text/plain"}},
        message="Content-Type must be one of ['application/json']",
    ),
    Case(
        "both spellings of a field",
        "POST",
        "runs/create",
        lambda i: _j({"experiment_id": i.exp_id, "experimentId": i.exp_id}),
        message="provide only one of them",
        message_reference_only=True,
    ),
    # ---- wrong types ---------------------------------------------------------------------------
    Case(
        "name is a number",
        "POST",
        "experiments/create",
        _j({"name": 123}),
        message="Invalid value 123 for parameter 'name' supplied",
    ),
    Case("name is a list", "POST", "experiments/create", _j({"name": ["a"]})),
    Case("experiment_id is a number", "POST", "runs/create", _j({"experiment_id": 0})),
    Case(
        "start_time is a string",
        "POST",
        "runs/create",
        lambda i: _j({"experiment_id": i.exp_id, "start_time": "abc"}),
    ),
    Case(
        "param value is a number",
        "POST",
        "runs/log-parameter",
        lambda i: _j({"run_id": i.run_id, "key": "k", "value": 5}),
    ),
    Case(
        "metric value is a string",
        "POST",
        "runs/log-metric",
        lambda i: _j({"run_id": i.run_id, "key": "k", "value": "abc", "timestamp": 1}),
    ),
    Case(
        "timestamp is a string",
        "POST",
        "runs/log-metric",
        lambda i: _j({"run_id": i.run_id, "key": "k", "value": 1, "timestamp": "x"}),
    ),
    Case(
        "max_results is a string (POST)", "POST", "experiments/search", _j({"max_results": "abc"})
    ),
    Case(
        "max_results is a string (GET)",
        "GET",
        "experiments/search",
        {"params": {"max_results": "abc"}},
    ),
    Case("experiment_ids is a string", "POST", "runs/search", _j({"experiment_ids": "0"})),
    Case(
        "experiment id not an integer",
        "GET",
        "experiments/get",
        {"params": {"experiment_id": "abc"}},
        message="Invalid experiment ID 'abc'",
    ),
    Case(
        "experiment id out of range",
        "GET",
        "experiments/get",
        {"params": {"experiment_id": "99999999999999999999"}},
        status=500,
        code="INTERNAL_ERROR",
        evtrack=((400, 404), (IPV, RDNE)),
        why="the reference's sqlite overflows (500)",
    ),
    # ---- missing required fields ---------------------------------------------------------------
    Case(
        "experiments/get without id",
        "GET",
        "experiments/get",
        message="Missing value for required parameter 'experiment_id'",
    ),
    Case(
        "get-by-name without name",
        "GET",
        "experiments/get-by-name",
        message="Missing value for required parameter 'experiment_name'",
    ),
    Case(
        "runs/get without id",
        "GET",
        "runs/get",
        message="Missing value for required parameter 'run_id'",
    ),
    Case(
        "log-parameter without key",
        "POST",
        "runs/log-parameter",
        lambda i: _j({"run_id": i.run_id, "value": "v"}),
        message="Missing value for required parameter 'key'",
    ),
    Case(
        "set-tag without key",
        "POST",
        "runs/set-tag",
        lambda i: _j({"run_id": i.run_id, "value": "v"}),
    ),
    Case(
        "experiments/update without new_name",
        "POST",
        "experiments/update",
        lambda i: _j({"experiment_id": i.exp_id}),
        message="Missing value for required parameter 'new_name'",
    ),
    # ---- unknown resources ---------------------------------------------------------------------
    Case(
        "missing experiment",
        "GET",
        "experiments/get",
        {"params": {"experiment_id": "987654"}},
        status=404,
        code=RDNE,
        message="No Experiment with id=987654 exists",
    ),
    Case(
        "missing experiment (negative id)",
        "GET",
        "experiments/get",
        {"params": {"experiment_id": "-1"}},
        status=404,
        code=RDNE,
    ),
    Case(
        "missing experiment name",
        "GET",
        "experiments/get-by-name",
        {"params": {"experiment_name": "no-such-experiment-xyz"}},
        status=404,
        code=RDNE,
        message="Could not find experiment with name 'no-such-experiment-xyz'",
    ),
    Case(
        "run in missing experiment",
        "POST",
        "runs/create",
        _j({"experiment_id": "987654"}),
        status=404,
        code=RDNE,
    ),
    Case(
        "missing run",
        "GET",
        "runs/get",
        {"params": {"run_id": MISSING_RUN}},
        status=404,
        code=RDNE,
        message=f"Run with id={MISSING_RUN} not found",
    ),
    Case(
        "update missing run",
        "POST",
        "runs/update",
        _j({"run_id": MISSING_RUN, "status": "FINISHED"}),
        status=404,
        code=RDNE,
    ),
    Case(
        "log to missing run",
        "POST",
        "runs/log-parameter",
        _j({"run_id": MISSING_RUN, "key": "k", "value": "v"}),
        status=404,
        code=RDNE,
    ),
    Case(
        "tag missing run",
        "POST",
        "runs/set-tag",
        _j({"run_id": MISSING_RUN, "key": "k", "value": "v"}),
        status=404,
        code=RDNE,
    ),
    Case(
        "delete missing run",
        "POST",
        "runs/delete",
        _j({"run_id": MISSING_RUN}),
        status=404,
        code=RDNE,
    ),
    Case(
        "delete missing run tag",
        "POST",
        "runs/delete-tag",
        lambda i: _j({"run_id": i.run_id, "key": "never-set"}),
        status=404,
        code=RDNE,
        message="No tag with name: never-set in run with id",
    ),
    Case(
        "tag missing experiment",
        "POST",
        "experiments/set-experiment-tag",
        _j({"experiment_id": "987654", "key": "k", "value": "v"}),
        status=404,
        code=RDNE,
    ),
    Case(
        "delete missing experiment tag",
        "POST",
        "experiments/delete-experiment-tag",
        lambda i: _j({"experiment_id": i.exp_id, "key": "never-set"}),
        status=404,
        code=RDNE,
        message="No tag with name: never-set in experiment with id",
    ),
    Case(
        "rename missing experiment",
        "POST",
        "experiments/update",
        _j({"experiment_id": "987654", "new_name": "x"}),
        status=404,
        code=RDNE,
    ),
    Case(
        "duplicate experiment",
        "POST",
        "experiments/create",
        lambda i: _j({"name": i.exp_name}),
        code="RESOURCE_ALREADY_EXISTS",
        message="already exists",
    ),
    # ---- limits --------------------------------------------------------------------------------
    Case(
        "1001 metrics in a batch",
        "POST",
        "runs/log-batch",
        lambda i: _j(
            {
                "run_id": i.run_id,
                "metrics": [
                    {"key": "m", "value": 1, "timestamp": 1, "step": s} for s in range(1001)
                ],
            }
        ),
        message="at most 1000 metrics",
    ),
    Case(
        "search max_results too big",
        "POST",
        "runs/search",
        lambda i: _j({"experiment_ids": [i.exp_id], "max_results": 50001}),
    ),
    Case(
        "search max_results zero",
        "POST",
        "runs/search",
        lambda i: _j({"experiment_ids": [i.exp_id], "max_results": 0}),
    ),
    Case(
        "bad page token",
        "POST",
        "runs/search",
        lambda i: _j({"experiment_ids": [i.exp_id], "page_token": "garbage"}),
    ),
    Case(
        "OR in filter",
        "POST",
        "runs/search",
        lambda i: _j({"experiment_ids": [i.exp_id], "filter": "metrics.a > 1 OR metrics.b < 2"}),
        message="Invalid clause(s) in filter string",
    ),
    # ---- routing -------------------------------------------------------------------------------
    Case(
        "unknown route (GET)",
        "GET",
        "nope",
        status=404,
        code=None,
        evtrack=(404, ("ENDPOINT_NOT_FOUND",)),
        why="the reference answers an HTML 404 page",
    ),
    Case(
        "unknown route (POST)",
        "POST",
        "experiments/nope",
        _j({}),
        status=404,
        code=None,
        evtrack=(404, ("ENDPOINT_NOT_FOUND",)),
        why="the reference answers an HTML 404 page",
    ),
    Case(
        "unknown API version",
        "GET",
        "/api/2.0/nope",
        status=404,
        code=None,
        evtrack=(404, ("ENDPOINT_NOT_FOUND",)),
        why="the reference answers an HTML 404 page",
    ),
    Case(
        "unknown ajax route",
        "GET",
        "/ajax-api/2.0/mlflow/nope",
        status=404,
        code=None,
        evtrack=(404, ("ENDPOINT_NOT_FOUND",)),
        why="the reference answers an HTML 404 page",
    ),
    Case(
        "wrong method (GET on a POST route)",
        "GET",
        "runs/create",
        status=405,
        code=None,
        evtrack=((404, 405), ("ENDPOINT_NOT_FOUND", "BAD_REQUEST", "NOT_FOUND")),
        why="the reference answers an HTML 405 page",
    ),
    Case(
        "wrong method (PUT)",
        "PUT",
        "experiments/create",
        _j({"name": "x"}),
        status=405,
        code=None,
        evtrack=((404, 405), ("ENDPOINT_NOT_FOUND", "BAD_REQUEST", "NOT_FOUND")),
        why="the reference answers an HTML 405 page",
    ),
]


@pytest.fixture
def ids(tracking_server: Server) -> Ids:
    name = unique("errors")
    exp_id = tracking_server.ok_post("experiments/create", {"name": name})["experiment_id"]
    run_id = tracking_server.ok_post("runs/create", {"experiment_id": exp_id})["run"]["info"][
        "run_id"
    ]
    return Ids(exp_id, name, run_id)


def _send(server: Server, case: Case, ids: Ids) -> Response:
    kwargs = case.kwargs(ids) if callable(case.kwargs) else dict(case.kwargs)
    path = case.path if case.path.startswith("/") else f"{API}/{case.path}"
    return server.request(case.method, path, **kwargs)


def _check(server: Server, case: Case, r: Response) -> str | None:
    """None if the response is what this server must answer, else a description."""
    if server.kind != "reference" and case.evtrack is not None:
        statuses, codes = case.evtrack
        statuses = statuses if isinstance(statuses, tuple) else (statuses,)
        ok = (
            r.status in statuses
            and r.is_json
            and r.error_code in codes
            and isinstance(r.body.get("message"), str)
        )
        return None if ok else f"expected {statuses} {codes} ({case.why})"
    if r.status != case.status:
        return f"expected status {case.status}"
    if case.code is None:
        return None
    if not (r.is_json and "application/json" in r.content_type):
        return "expected a JSON error body"
    if r.error_code != case.code or not isinstance(r.body.get("message"), str):
        return f"expected error_code {case.code}"
    check_message = server.kind == "reference" or not case.message_reference_only
    if case.message and check_message and case.message not in r.body["message"]:
        return f"expected message containing {case.message!r}"
    return None


def test_error_matrix(tracking_server: Server, ids: Ids) -> None:
    failures = []
    for case in CASES:
        r = _send(tracking_server, case, ids)
        problem = _check(tracking_server, case, r)
        if problem:
            failures.append(f"{case.name}: {problem}; got {r.status} {str(r.body)[:200]}")
    assert not failures, f"{len(failures)} of {len(CASES)} cases:\n" + "\n".join(failures)


def test_nothing_changes_after_rejected_requests(tracking_server: Server, ids: Ids) -> None:
    for case in CASES:
        _send(tracking_server, case, ids)
    run = tracking_server.ok_get("runs/get", {"run_id": ids.run_id})["run"]
    assert "params" not in run["data"] and "metrics" not in run["data"]
    assert [t["key"] for t in run["data"]["tags"]] == ["mlflow.runName"]
    exp = tracking_server.ok_get("experiments/get", {"experiment_id": ids.exp_id})["experiment"]
    assert exp["lifecycle_stage"] == "active" and "tags" not in exp


def test_accepted_variants(tracking_server: Server, ids: Ids) -> None:
    """Inputs the reference accepts: camelCase fields, unknown fields, a charset in the
    Content-Type, run_uuid instead of run_id, query-string booleans/enums."""
    s = tracking_server
    r = s.post("runs/create", {"experimentId": ids.exp_id, "runName": "camel", "startTime": 5})
    assert r.status == 200, r.body
    assert (r.body["run"]["info"]["run_name"], r.body["run"]["info"]["start_time"]) == ("camel", 5)
    r = s.post("runs/create", {"experiment_id": ids.exp_id, "some_future_field": 1})
    assert r.status == 200, r.body
    r = s.request(
        "POST",
        f"{API}/experiments/create",
        data=f'{{"name": "{unique("cs")}"}}',
        headers={"Content-Type": "application/json; charset=utf-8"},
    )
    assert r.status == 200, r.body
    assert s.ok_post("runs/set-tag", {"run_uuid": ids.run_id, "key": "k", "value": "v"}) == {}
    assert s.ok_get("runs/get", {"run_uuid": ids.run_id})["run"]["info"]["run_id"] == ids.run_id
    body = s.ok_get(
        "experiments/search",
        {"view_type": "ALL", "max_results": 1, "filter": f"name = '{ids.exp_name}'"},
    )
    assert [e["name"] for e in body["experiments"]] == [ids.exp_name]


def test_metric_history_of_missing_run_is_empty(tracking_server: Server) -> None:
    """Reference behaviour: no 404 for an unknown run, just an empty history."""
    assert (
        tracking_server.ok_get("metrics/get-history", {"run_id": MISSING_RUN, "metric_key": "m"})
        == {}
    )


def test_batch_body_over_one_megabyte(client: MlflowClient, tracking_server: Server) -> None:
    """MLflow's limit for a log-batch body is 1,000,000 bytes (MAX_BATCH_LOG_REQUEST_SIZE). The
    reference never enforces it (it checks len() of the parsed dict), so its client's ~2 MB
    batch of long values succeeds there and is truncated. evtrack refuses the body by its size,
    before decoding it, with MLflow's error JSON, and stores nothing (a deliberate deviation:
    issue 8, point 7). Bodies within the limit are truncated the same way on both."""
    exp_id = client.create_experiment(unique("big"))
    run_id = client.create_run(exp_id).info.run_id
    params = [Param(f"p{i}", "v" * 10_000) for i in range(100)]
    tags = [RunTag(f"t{i}", "w" * 10_000) for i in range(100)]
    body = {
        "run_id": run_id,
        "params": [{"key": p.key, "value": p.value} for p in params],
        "tags": [{"key": t.key, "value": t.value} for t in tags],
    }
    r = tracking_server.post("runs/log-batch", body)
    if tracking_server.kind == "reference":
        assert (r.status, r.body) == (200, {})
    else:
        assert r.status == 400 and r.body["error_code"] == IPV
        assert "at most 1000000 bytes" in r.body["message"]
        assert client.get_run(run_id).data.params == {}

    # Within the limit: long values are truncated on both servers.
    run_id2 = client.create_run(exp_id).info.run_id
    client.log_batch(run_id2, params=[Param(f"p{i}", "v" * 7_000) for i in range(100)])
    data = client.get_run(run_id2).data
    assert len(data.params) == 100 and all(v == "v" * 6000 for v in data.params.values())


def test_client_error_codes(tracking_server: Server) -> None:
    """What the Python client makes of the answers (mlflow.utils.rest_utils)."""
    creds = MlflowHostCreds(tracking_server.url)
    for path in (f"{API}/nope", "/ajax-api/2.0/mlflow/nope"):
        resp = http_request(creds, path, "GET", max_retries=0)
        with raises_mlflow("ENDPOINT_NOT_FOUND"):
            verify_rest_response(resp, path)
    resp = http_request(
        creds, f"{API}/experiments/get", "GET", max_retries=0, params={"experiment_id": "987654"}
    )
    with raises_mlflow(RDNE):
        verify_rest_response(resp, f"{API}/experiments/get")

"""``/graphql`` over HTTP: the operations MLflow's UI sends, their encoding, and their errors.

Expected shapes and messages were taken from the reference ``mlflow server`` 3.17.2 (the
differential suite, tests/mlflow_compat/test_differential.py, compares a scripted session with
it). Where evtrack deliberately differs (the reference answers an HTML 500, ignores the
bulk-interval arguments or reports NaN as an error too), the test says so.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import pytest
import requests
from _support.server import EvtrackServer
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from evtrack.api.graphql import SCHEMA, _Batcher

DOUBLE_MAX = 1.7976931348623157e308
BIG_INT = 2**53 + 1  # a JavaScript number would round it

# The UI's operations, as its bundle sends them (mlflow/server/js/build, MLflow 3.17.2).
UI_GET_EXPERIMENT = """
query MlflowGetExperimentQuery($input: MlflowGetExperimentInput!)
    @component(name: "MLflow.ExperimentRunTracking") {
  mlflowGetExperiment(input: $input) {
    apiError { code message }
    experiment {
      artifactLocation creationTime effectiveTraceArchivalRetention experimentId
      lastUpdateTime lifecycleStage name tags { key value }
    }
  }
}
"""
_RUN_FIELDS = """
  info {
    runName status runUuid experimentId artifactUri endTime lifecycleStage startTime userId
  }
  experiment {
    experimentId name tags { key value } artifactLocation lifecycleStage lastUpdateTime
  }
  modelVersions { status version name source creationTimestamp }
  data {
    metrics { key value step timestamp }
    params { key value }
    tags { key value }
  }
  inputs {
    datasetInputs {
      dataset { digest name profile schema source sourceType }
      tags { key value }
    }
    modelInputs { modelId }
  }
  outputs { modelOutputs { modelId step } }
"""
UI_GET_RUN = (
    'query GetRun($data: MlflowGetRunInput!) @component(name: "MLflow.ExperimentRunTracking") {'
    " mlflowGetRun(input: $data) { apiError { helpUrl code message } run {" + _RUN_FIELDS + "} } }"
)
UI_SEARCH_RUNS = (
    "query SearchRuns($data: MlflowSearchRunsInput!) { mlflowSearchRuns(input: $data) {"
    " apiError { helpUrl code message } nextPageToken runs {" + _RUN_FIELDS + "} } }"
)
UI_BULK_INTERVAL = """
query GetMetricHistoryBulkInterval($data: MlflowGetMetricHistoryBulkIntervalInput!)
    @component(name: "MLflow.ExperimentRunTracking") {
  mlflowGetMetricHistoryBulkInterval(input: $data) {
    __typename
    metrics { timestamp step runId key value }
    apiError { code message }
  }
}
"""


@pytest.fixture
def server(shared_server: EvtrackServer) -> EvtrackServer:
    return shared_server


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def _rest(server: EvtrackServer, path: str, body: dict[str, Any]) -> Any:
    resp = requests.post(f"{server.url}/api/2.0/mlflow/{path}", json=body, timeout=30)
    assert resp.status_code == 200, resp.text
    return resp.json()


def _gql(
    server: EvtrackServer,
    query: str,
    variables: dict[str, Any] | None = None,
    *,
    status: int = 200,
    **extra: Any,
) -> dict[str, Any]:
    body = {"query": query, **({"variables": variables} if variables is not None else {}), **extra}
    resp = requests.post(f"{server.url}/graphql", json=body, timeout=30)
    assert resp.status_code == status, resp.text
    assert resp.headers["Content-Type"].startswith("application/json")
    answer: dict[str, Any] = resp.json()
    assert set(answer) == {"data", "errors"}, answer
    return answer


def _ok(server: EvtrackServer, query: str, variables: dict[str, Any] | None = None) -> Any:
    answer = _gql(server, query, variables)
    assert answer["errors"] is None, answer
    return answer["data"]


def _experiment(server: EvtrackServer, **fields: Any) -> str:
    return str(
        _rest(server, "experiments/create", {"name": _name("gql"), **fields})["experiment_id"]
    )


def _run(server: EvtrackServer, exp: str, **fields: Any) -> str:
    body = {"experiment_id": exp, "start_time": 1000, **fields}
    return str(_rest(server, "runs/create", body)["run"]["info"]["run_id"])


def _metric(server: EvtrackServer, run: str, key: str, value: Any, step: int, ts: int) -> None:
    _rest(
        server,
        "runs/log-metric",
        {"run_id": run, "key": key, "value": value, "timestamp": ts, "step": step},
    )


# --------------------------------------------------------------------------------------------
# Operations
# --------------------------------------------------------------------------------------------


def test_get_experiment_as_the_ui_asks(server: EvtrackServer) -> None:
    exp = _experiment(server, tags=[{"key": "team", "value": "ml"}])
    data = _ok(server, UI_GET_EXPERIMENT, {"input": {"experimentId": exp}})
    got = data["mlflowGetExperiment"]
    assert got["apiError"] is None
    experiment = got["experiment"]
    assert experiment["experimentId"] == exp
    assert experiment["name"].startswith("gql-")
    assert experiment["artifactLocation"] == f"mlflow-artifacts:/{exp}"
    assert experiment["lifecycleStage"] == "active"
    assert experiment["tags"] == [{"key": "team", "value": "ml"}]
    assert experiment["effectiveTraceArchivalRetention"] == ""  # unset: the proto default
    for field in ("creationTime", "lastUpdateTime"):  # int64 travel as strings
        assert isinstance(experiment[field], str) and experiment[field].isdigit()


def test_get_run_as_the_ui_asks(server: EvtrackServer) -> None:
    exp = _experiment(server)
    run = _run(server, exp, run_name="r1", start_time=BIG_INT)
    _rest(
        server,
        "runs/log-batch",
        {
            "run_id": run,
            "metrics": [
                {"key": "acc", "value": 0.5, "timestamp": BIG_INT, "step": BIG_INT},
                {"key": "nan", "value": "NaN", "timestamp": 1, "step": 0},
                {"key": "inf", "value": "Infinity", "timestamp": 1, "step": 0},
                {"key": "ninf", "value": "-Infinity", "timestamp": 1, "step": 0},
            ],
            "params": [{"key": "alpha", "value": "0.1"}],
            "tags": [{"key": "team", "value": "ml"}],
        },
    )
    model = _name("model")
    _rest(server, "registered-models/create", {"name": model})
    _rest(
        server,
        "model-versions/create",
        {"name": model, "source": f"runs:/{run}/model", "run_id": run},
    )

    data = _ok(server, UI_GET_RUN, {"data": {"runId": run}})
    got = data["mlflowGetRun"]
    assert got["apiError"] is None
    info = got["run"]["info"]
    assert info == {
        "runName": "r1",
        "status": "RUNNING",
        "runUuid": run,
        "experimentId": exp,
        "artifactUri": f"mlflow-artifacts:/{exp}/{run}/artifacts",
        "endTime": "0",  # unset: the proto default, as the reference
        "lifecycleStage": "active",
        "startTime": str(BIG_INT),
        "userId": "",
    }
    metrics = {m["key"]: m for m in got["run"]["data"]["metrics"]}
    assert metrics["acc"] == {
        "key": "acc",
        "value": 0.5,
        "step": str(BIG_INT),
        "timestamp": str(BIG_INT),
    }
    assert metrics["nan"]["value"] is None
    assert metrics["inf"]["value"] == DOUBLE_MAX
    assert metrics["ninf"]["value"] == -DOUBLE_MAX
    assert got["run"]["data"]["params"] == [{"key": "alpha", "value": "0.1"}]
    assert {"key": "team", "value": "ml"} in got["run"]["data"]["tags"]
    assert got["run"]["inputs"] == {"datasetInputs": [], "modelInputs": []}
    assert got["run"]["outputs"] == {"modelOutputs": []}
    assert got["run"]["experiment"]["experimentId"] == exp
    [version] = got["run"]["modelVersions"]
    assert version["name"] == model
    assert version["version"] == "1"
    assert version["status"] == "READY"
    assert version["source"] == f"runs:/{run}/model"
    assert version["creationTimestamp"].isdigit()


def test_get_run_accepts_the_legacy_run_uuid(server: EvtrackServer) -> None:
    run = _run(server, _experiment(server))
    query = 'query { mlflowGetRun(input: {runUuid: "' + run + '"}) { run { info { runId } } } }'
    assert _ok(server, query)["mlflowGetRun"]["run"]["info"]["runId"] == run


def test_search_runs_as_query_and_mutation_with_paging(server: EvtrackServer) -> None:
    exp = _experiment(server)
    runs = [_run(server, exp, start_time=t) for t in (3, 1, 2)]
    deleted = _run(server, exp, start_time=9)
    _rest(server, "runs/delete", {"run_id": deleted})
    model = _name("model")
    _rest(server, "registered-models/create", {"name": model})
    for run in runs[:2]:
        _rest(
            server,
            "model-versions/create",
            {"name": model, "source": f"runs:/{run}/model", "run_id": run},
        )

    variables = {"data": {"experimentIds": [exp], "maxResults": 2, "orderBy": ["start_time ASC"]}}
    page1 = _ok(server, UI_SEARCH_RUNS, variables)["mlflowSearchRuns"]
    assert [r["info"]["runUuid"] for r in page1["runs"]] == [runs[1], runs[2]]
    assert page1["nextPageToken"]
    # Each run carries its experiment and its model versions (loaded once per request).
    assert {r["experiment"]["experimentId"] for r in page1["runs"]} == {exp}
    assert [len(r["modelVersions"]) for r in page1["runs"]] == [1, 0]
    assert page1["runs"][0]["modelVersions"][0]["version"] == "2"

    mutation = (
        "mutation SearchRuns($data: MlflowSearchRunsInput) { mlflowSearchRuns(input: $data) "
        "{ runs { info { runId } } nextPageToken } }"
    )
    variables["data"]["pageToken"] = page1["nextPageToken"]
    page2 = _ok(server, mutation, variables)["mlflowSearchRuns"]
    assert [r["info"]["runId"] for r in page2["runs"]] == [runs[0]]
    assert page2["nextPageToken"] == ""  # the proto default, as the reference

    deleted_only = (
        'query { mlflowSearchRuns(input: {experimentIds: ["' + exp + '"], '
        "runViewType: DELETED_ONLY}) { runs { info { runId lifecycleStage } } } }"
    )
    [found] = _ok(server, deleted_only)["mlflowSearchRuns"]["runs"]
    assert found["info"] == {"runId": deleted, "lifecycleStage": "deleted"}

    filtered = {"data": {"experimentIds": [exp], "filter": f"attributes.run_id = '{runs[0]}'"}}
    found_runs = _ok(server, UI_SEARCH_RUNS, filtered)["mlflowSearchRuns"]["runs"]
    assert [r["info"]["runUuid"] for r in found_runs] == [runs[0]]


def test_search_runs_reports_search_errors(server: EvtrackServer) -> None:
    query = (
        "query Q($data: MlflowSearchRunsInput) { mlflowSearchRuns(input: $data) "
        "{ runs { info { runId } } } }"
    )
    cases = [
        ({"experimentIds": ["0"], "filter": "metrics.a > 1 OR x"}, "Invalid clause(s)"),
        ({"experimentIds": ["abc"]}, "Invalid experiment ID 'abc'"),
        (
            {"experimentIds": ["0"], "maxResults": 100000},
            "Invalid value 100000 for parameter 'max_results' supplied. It must be at most 50000",
        ),
        ({"experimentIds": ["0"], "pageToken": "garbage"}, "Invalid page token"),
    ]
    for data, message in cases:
        answer = _gql(server, query, {"data": data})
        assert answer["data"] == {"mlflowSearchRuns": None}
        [error] = answer["errors"]
        assert error.startswith(message), (data, error)


def test_metric_history_bulk_interval(server: EvtrackServer) -> None:
    exp = _experiment(server)
    a, b = _run(server, exp), _run(server, exp)
    _rest(
        server,
        "runs/log-batch",
        {
            "run_id": a,
            "metrics": [
                {"key": "loss", "value": 1 / (s + 1), "timestamp": 100 + s, "step": s}
                for s in range(10)
            ]
            + [{"key": "loss", "value": "NaN", "timestamp": 200, "step": 10}],
        },
    )
    _metric(server, b, "loss", 0.25, BIG_INT, BIG_INT)

    everything = {"data": {"runIds": [b, a], "metricKey": "loss", "maxResults": 320}}
    got = _ok(server, UI_BULK_INTERVAL, everything)["mlflowGetMetricHistoryBulkInterval"]
    assert got["__typename"] == "MlflowGetMetricHistoryBulkIntervalResponse"
    assert got["apiError"] is None
    points = got["metrics"]
    assert [p["runId"] for p in points] == [b] + [a] * 11  # in the requested runs' order
    assert points[0] == {
        "timestamp": str(BIG_INT),
        "step": str(BIG_INT),
        "runId": b,
        "key": "loss",
        "value": 0.25,
    }
    assert [p["step"] for p in points[1:]] == [str(s) for s in range(11)]
    # NaN is null, and (unlike the reference) not also reported as an error.
    assert points[-1]["value"] is None

    # maxResults, startStep and endStep are honoured (the reference ignores them).
    sampled = {"data": {"runIds": [a], "metricKey": "loss", "maxResults": 3}}
    got = _ok(server, UI_BULK_INTERVAL, sampled)["mlflowGetMetricHistoryBulkInterval"]
    assert len(got["metrics"]) == 3
    assert got["metrics"][-1]["step"] == "10"  # the last point is always kept
    ranged = {"data": {"runIds": [a], "metricKey": "loss", "startStep": 2, "endStep": 4}}
    got = _ok(server, UI_BULK_INTERVAL, ranged)["mlflowGetMetricHistoryBulkInterval"]
    assert [p["step"] for p in got["metrics"]] == ["2", "3", "4"]

    nothing = {"data": {"runIds": [], "metricKey": "loss"}}
    assert _ok(server, UI_BULK_INTERVAL, nothing)["mlflowGetMetricHistoryBulkInterval"] == {
        "__typename": "MlflowGetMetricHistoryBulkIntervalResponse",
        "metrics": [],
        "apiError": None,
    }
    for data, message in [
        ({"startStep": 2}, "If either start step or end step are specified, both must be"),
        ({"startStep": 5, "endStep": 2}, "end_step must be greater than start_step."),
        ({"maxResults": 2501}, "max_results must be between 1 and 2500."),
    ]:
        answer = _gql(
            server, UI_BULK_INTERVAL, {"data": {"runIds": [a], "metricKey": "loss", **data}}
        )
        assert answer["data"] == {"mlflowGetMetricHistoryBulkInterval": None}
        assert answer["errors"][0].startswith(message)


def test_list_artifacts(server: EvtrackServer) -> None:
    exp = _experiment(server)
    run = _run(server, exp)
    base = f"{server.url}/api/2.0/mlflow-artifacts/artifacts/{exp}/{run}/artifacts"
    for path, content in (("a.txt", b"hello"), ("dir/b.bin", b"xyz"), ("empty.txt", b"")):
        assert requests.put(f"{base}/{path}", data=content, timeout=30).status_code == 200
    query = (
        "query Q($data: MlflowListArtifactsInput) { mlflowListArtifacts(input: $data) "
        "{ rootUri files { path isDir fileSize } nextPageToken apiError { code } } }"
    )

    root = _ok(server, query, {"data": {"runId": run}})["mlflowListArtifacts"]
    assert root == {
        "rootUri": f"mlflow-artifacts:/{exp}/{run}/artifacts",
        "files": [
            {"path": "a.txt", "isDir": False, "fileSize": "5"},
            {"path": "dir", "isDir": True, "fileSize": "0"},
            {"path": "empty.txt", "isDir": False, "fileSize": "0"},
        ],
        "nextPageToken": "",
        "apiError": None,
    }
    sub = _ok(server, query, {"data": {"runUuid": run, "path": "dir"}})["mlflowListArtifacts"]
    assert sub["files"] == [{"path": "dir/b.bin", "isDir": False, "fileSize": "3"}]
    missing = _ok(server, query, {"data": {"runId": run, "path": "nope"}})
    assert missing["mlflowListArtifacts"]["files"] == []

    answer = _gql(server, query, {"data": {"runId": run, "path": "../x"}})
    assert answer == {"data": {"mlflowListArtifacts": None}, "errors": ["Invalid path"]}


def test_search_model_versions(server: EvtrackServer) -> None:
    run = _run(server, _experiment(server))
    model = _name("model")
    _rest(server, "registered-models/create", {"name": model})
    for _ in range(3):
        _rest(
            server,
            "model-versions/create",
            {
                "name": model,
                "source": f"runs:/{run}/model",
                "run_id": run,
                "tags": [{"key": "k", "value": "v"}],
            },
        )
    query = (
        "query Q($data: MlflowSearchModelVersionsInput) { mlflowSearchModelVersions(input: $data)"
        " { modelVersions { name version currentStage status runId tags { key value } aliases"
        " description creationTimestamp deploymentJobState { jobId jobState } }"
        " nextPageToken } }"
    )
    data = {"filter": f"name = '{model}'"}
    got = _ok(server, query, {"data": data})["mlflowSearchModelVersions"]
    assert [v["version"] for v in got["modelVersions"]] == ["3", "2", "1"]
    first = got["modelVersions"][0]
    assert first["currentStage"] == "None"
    assert first["status"] == "READY"
    assert first["runId"] == run
    assert first["tags"] == [{"key": "k", "value": "v"}]
    assert first["description"] == ""
    assert first["creationTimestamp"].isdigit()
    # An unset enum is null (the reference reports an error for it besides).
    assert first["deploymentJobState"] == {"jobId": "", "jobState": None}
    assert got["nextPageToken"] == ""

    # maxResults is a LongString: a number or a string holding one, literal or variable.
    for max_results in (2, "2"):
        page = _ok(server, query, {"data": {**data, "maxResults": max_results}})
        assert len(page["mlflowSearchModelVersions"]["modelVersions"]) == 2
        assert page["mlflowSearchModelVersions"]["nextPageToken"]
    literal = (
        "query { mlflowSearchModelVersions(input: {filter: \"name = '" + model + "'\", "
        "maxResults: 1}) { modelVersions { version } } }"
    )
    assert _ok(server, literal)["mlflowSearchModelVersions"]["modelVersions"] == [{"version": "3"}]
    answer = _gql(server, query, {"data": {**data, "maxResults": "many"}})
    assert answer["data"] is None
    assert "LongString" in answer["errors"][0]

    answer = _gql(server, query, {"data": {"filter": "bogus"}})
    assert answer["data"] == {"mlflowSearchModelVersions": None}
    assert answer["errors"] == ["Invalid clause(s) in filter string: bogus"]


def test_get_works_for_queries_but_not_mutations(server: EvtrackServer) -> None:
    exp = _experiment(server)
    resp = requests.get(
        f"{server.url}/graphql",
        params={
            "query": UI_GET_EXPERIMENT,
            "variables": json.dumps({"input": {"experimentId": exp}}),
        },
        timeout=30,
    )
    assert resp.status_code == 200, resp.text
    assert resp.json()["data"]["mlflowGetExperiment"]["experiment"]["experimentId"] == exp

    resp = requests.get(
        f"{server.url}/graphql",
        params={"query": 'mutation { testMutation(inputString: "x") { output } }'},
        timeout=30,
    )
    assert resp.status_code == 405
    assert resp.json()["errors"] == ["Can only perform a query operation from a GET request."]


def test_echo_fields_and_operation_name(server: EvtrackServer) -> None:
    document = 'query A { test(inputString: "a") { output } } query B { __typename }'
    assert _ok(server, 'query { test(inputString: "hi") { output } }') == {"test": {"output": "hi"}}
    answer = _gql(server, document, operationName="B")
    assert answer == {"data": {"__typename": "Query"}, "errors": None}
    answer = _gql(server, document)
    assert answer["errors"] == [
        "Must provide operation name if query contains multiple operations."
    ]


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------


def test_missing_run_and_experiment_are_errors_with_a_null_field(server: EvtrackServer) -> None:
    missing_run = "0123456789abcdef0123456789abcdef"
    answer = _gql(server, UI_GET_RUN, {"data": {"runId": missing_run}})
    assert answer == {
        "data": {"mlflowGetRun": None},
        "errors": [f"Run with id={missing_run} not found"],
    }
    answer = _gql(server, UI_GET_EXPERIMENT, {"input": {"experimentId": "987654321"}})
    assert answer == {
        "data": {"mlflowGetExperiment": None},
        "errors": ["No Experiment with id=987654321 exists"],
    }
    answer = _gql(server, UI_GET_EXPERIMENT, {"input": {"experimentId": "abc"}})
    assert answer["errors"] == [
        "Invalid experiment ID 'abc'. Experiment ID must be a valid integer."
    ]
    listing = 'query { mlflowListArtifacts(input: {runId: "' + missing_run + '"}) { rootUri } }'
    assert _gql(server, listing)["errors"] == [f"Run with id={missing_run} not found"]


def test_one_failing_field_does_not_fail_the_others(server: EvtrackServer) -> None:
    exp = _experiment(server)
    query = (
        'query { ok: mlflowGetExperiment(input: {experimentId: "' + exp + '"}) '
        '{ experiment { name } } bad: mlflowGetRun(input: {runId: "nope"}) '
        "{ run { info { runId } } } }"
    )
    answer = _gql(server, query)
    assert answer["data"]["ok"]["experiment"]["name"].startswith("gql-")
    assert answer["data"]["bad"] is None
    assert answer["errors"] == ["Run with id=nope not found"]


def test_syntax_and_validation_errors_are_graphql_errors(server: EvtrackServer) -> None:
    # The reference answers a syntax error with an HTML 500.
    assert _gql(server, "query { mlflowGetRun(") == {
        "data": None,
        "errors": ["Syntax Error: Expected Name, found <EOF>."],
    }
    assert _gql(server, 'query { mlflowGetRun(input: {runId: "x"}) { bogus } }') == {
        "data": None,
        "errors": ["Cannot query field 'bogus' on type 'MlflowGetRunResponse'."],
    }
    assert _gql(server, "query { mlflowSearchDatasets { datasetSummaries { name } } }")[
        "errors"
    ] == [
        "Cannot query field 'mlflowSearchDatasets' on type 'Query'. "
        "Did you mean 'mlflowSearchRuns'?"
    ]
    answer = _gql(
        server,
        "query Q($d: MlflowGetRunInput!) { mlflowGetRun(input: $d) { run { info { runId } } } }",
    )
    assert answer["errors"] == [
        "Variable '$d' of required type 'MlflowGetRunInput!' was not provided."
    ]
    answer = _gql(
        server,
        "query Q($d: MlflowGetRunInput) { mlflowGetRun(input: $d) { run { info { runId } } } }",
        {"d": {"runId": 5}},
    )
    assert answer["errors"] == [
        "Variable '$d' got invalid value 5 at 'd.runId'; "
        "String cannot represent a non string value: 5"
    ]


def test_costly_documents_are_refused(server: EvtrackServer) -> None:
    """The reference's limits (mlflow/server/graphql/graphql_no_batching.py), checked before
    validation, so the fields need not exist."""
    for fields in (
        " ".join(f"f{i}: __typename" for i in range(11)),
        " ".join("__typename" for _ in range(11)),
    ):
        assert _gql(server, "{ " + fields + " }")["errors"] == [
            "GraphQL queries should have at most 10 root fields, got 11 root fields."
        ]
    aliases = " ".join(f"a{i}: runId" for i in range(11))
    assert _gql(server, "{ mlflowGetRun { run { info { " + aliases + " } } } }")["errors"] == [
        "GraphQL queries should have at most 10 aliases, got 11 aliases."
    ]
    assert _gql(server, "{ a " * 11 + "}" * 11)["errors"] == ["Query exceeds maximum depth of 10"]
    wide = "{ a { " + " ".join(f"b{i}" for i in range(1000)) + " } }"
    assert _gql(server, wide)["errors"] == ["Query exceeds maximum total selections of 1000"]


def test_malformed_requests_are_400s(server: EvtrackServer) -> None:
    url = f"{server.url}/graphql"
    cases: list[tuple[dict[str, Any], str]] = [
        (
            {"data": b"not json", "headers": {"Content-Type": "application/json"}},
            "The request body is not valid JSON.",
        ),
        ({"json": [1]}, "The request body must be a JSON object."),
        ({"json": {}}, "Must provide query string."),
        ({"json": {"query": 5}}, "Must provide query string."),
        ({"json": {"query": "{ __typename }", "variables": "x"}}, "Variables must be"),
        ({"json": {"query": "{ __typename }", "operationName": 1}}, "operationName must be"),
        ({"json": {"query": " " * 70000 + "{ __typename }"}}, "The query is longer than"),
    ]
    for kwargs, message in cases:
        resp = requests.post(url, timeout=30, **kwargs)
        assert resp.status_code == 400, (kwargs, resp.text)
        body = resp.json()
        assert body["data"] is None
        assert body["errors"][0].startswith(message)


def test_only_the_root_path_is_served(server: EvtrackServer) -> None:
    resp = requests.post(
        f"{server.url}/ajax-api/graphql", json={"query": "{ __typename }"}, timeout=30
    )
    assert resp.status_code == 404  # as the reference: the UI posts to /graphql


# --------------------------------------------------------------------------------------------
# In-process
# --------------------------------------------------------------------------------------------


def test_schema_matches_the_reference_for_what_it_serves() -> None:
    """Every type and field evtrack serves has the reference's name, type and arguments; the
    only operation left out is mlflowSearchDatasets."""
    import mlflow.server.graphql.graphql_schema_extensions as reference
    from graphql import (
        GraphQLEnumType,
        GraphQLInputObjectType,
        GraphQLObjectType,
        GraphQLScalarType,
    )

    theirs = reference.schema.graphql_schema

    def signature(schema: Any) -> dict[str, str]:
        out = {}
        for name, type_ in schema.type_map.items():
            if name.startswith("__"):
                continue
            if isinstance(type_, GraphQLObjectType | GraphQLInputObjectType):
                for field_name, field in type_.fields.items():
                    args = getattr(field, "args", {})
                    out[f"{name}.{field_name}"] = str(field.type) + str(
                        sorted((a, str(arg.type)) for a, arg in args.items())
                    )
            elif isinstance(type_, GraphQLEnumType):
                out[name] = str(sorted(type_.values))
            else:  # scalars (graphene subclasses graphql-core's types)
                assert isinstance(type_, GraphQLScalarType), name
                out[name] = "scalar"
        return out

    ours, ref = signature(SCHEMA), signature(theirs)
    assert {k: v for k, v in ours.items() if ref.get(k) != v} == {}
    assert sorted(set(ref) - set(ours)) == [
        "MlflowDatasetSummary.context",
        "MlflowDatasetSummary.digest",
        "MlflowDatasetSummary.experimentId",
        "MlflowDatasetSummary.name",
        "MlflowSearchDatasetsInput.experimentIds",
        "MlflowSearchDatasetsResponse.apiError",
        "MlflowSearchDatasetsResponse.datasetSummaries",
        "Mutation.mlflowSearchDatasets",
    ]
    assert {d.name for d in SCHEMA.directives} >= {"component"}


async def test_batcher_loads_sibling_keys_with_one_call() -> None:
    calls: list[list[int]] = []

    async def load_many(keys: list[int]) -> dict[int, str]:
        calls.append(keys)
        return {k: f"v{k}" for k in keys if k != 3}

    batcher: _Batcher[int, str] = _Batcher(load_many)

    async def ask(key: int) -> str | None:
        await asyncio.sleep(0)
        return await batcher.load(key)

    assert await asyncio.gather(*(ask(k) for k in (1, 2, 1, 3))) == ["v1", "v2", "v1", None]
    assert calls == [[1, 2, 3]]
    assert await batcher.load(2) == "v2"  # remembered for the rest of the request
    assert calls == [[1, 2, 3]]


async def test_a_search_loads_experiments_and_model_versions_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """50 runs selecting their experiment and model versions cost one query each, not 100."""
    from graphql import ExecutionResult, execute, parse

    from evtrack.api import graphql as module
    from evtrack.wire import mlflow as wire

    def run(i: int) -> wire.Run:
        info = wire.RunInfo(
            run_id=f"run{i}",
            run_uuid=f"run{i}",
            run_name=f"n{i}",
            experiment_id=str(1 + i % 2),
            user_id="",
            status="RUNNING",
            artifact_uri="",
            lifecycle_stage="active",
        )
        return wire.Run(info, wire.RunData(), wire.RunInputs(), wire.RunOutputs())

    runs = [run(i) for i in range(50)]
    calls: dict[str, list[Any]] = {"experiments": [], "versions": []}

    class Pool:
        async def fetch(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
            if "rm_registry" in sql:  # the model version search
                return [("key", 1)]
            return [(r.info.run_id,) for r in runs]

    async def get_runs(_db: Any, ids: list[str]) -> list[wire.Run]:
        return [r for r in runs if r.info.run_id in ids]

    async def get_experiments(_db: Any, ids: list[int]) -> list[wire.Experiment]:
        calls["experiments"].append(ids)
        return [wire.Experiment(str(i), f"e{i}", "loc", "active", 1, 1) for i in ids]

    async def model_versions(_db: Any, keys: list[Any]) -> list[wire.ModelVersion]:
        calls["versions"].append(keys)
        return [wire.ModelVersion("m", "1", 1, 1, "None", "src", "READY", run_id="run7")]

    monkeypatch.setattr(module.run_queries, "get_runs", get_runs)
    monkeypatch.setattr(module.experiment_queries, "get_experiments", get_experiments)
    monkeypatch.setattr(module.registry_queries, "model_versions", model_versions)
    document = parse(
        '{ mlflowSearchRuns(input: {experimentIds: ["1", "2"]}) { runs { info { runId } '
        "experiment { name } modelVersions { version } } } }"
    )
    result = execute(
        module.SCHEMA,
        document,
        # A request of an app without authentication: every caller reads everything.
        context_value=module._Context(
            request=make_mocked_request("POST", "/graphql", app=web.Application()),
            pool=Pool(),  # type: ignore[arg-type]
        ),
        field_resolver=module._resolve_field,
    )
    if not isinstance(result, ExecutionResult):
        result = await result
    assert result.errors is None
    assert result.data is not None
    found = result.data["mlflowSearchRuns"]["runs"]
    assert [r["experiment"]["name"] for r in found[:3]] == ["e1", "e2", "e1"]
    assert [r["info"]["runId"] for r in found if r["modelVersions"]] == ["run7"]
    assert calls == {"experiments": [[1, 2]], "versions": [[("key", 1)]]}

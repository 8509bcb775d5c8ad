"""Routes only MLflow's web UI calls, proven against the reference first, then demanded of
evtrack: the runs table's dataset summaries (for real, from the runs' dataset inputs), and the
empty answers of the GenAI features evtrack does not have, in the reference's shapes."""

from __future__ import annotations

from typing import Any

import mlflow
import pandas as pd
from mlflow import MlflowClient

from ._support import Server, assert_error, unique

AJAX = "/ajax-api/2.0/mlflow"
AJAX3 = "/ajax-api/3.0/mlflow"


def _dataset(name: str, seed: int) -> Any:
    frame = pd.DataFrame({"x": [seed, seed + 1, seed + 2], "y": [0, 1, 0]})
    return mlflow.data.from_pandas(frame, name=name)


def _summaries(server: Server, *experiment_ids: str) -> set[tuple[str, str, str, str | None]]:
    r = server.request(
        "POST", f"{AJAX}/experiments/search-datasets", json={"experiment_ids": experiment_ids}
    )
    assert r.status == 200, r.body
    assert set(r.body) <= {"dataset_summaries"}, r.body  # empty: {}
    return {
        (s["experiment_id"], s["name"], s["digest"], s.get("context"))
        for s in r.body.get("dataset_summaries", [])
    }


def test_search_datasets_lists_what_the_runs_used(tracking_server: Server) -> None:
    client = MlflowClient(tracking_server.url)
    first = client.create_experiment(unique("ds"))
    second = client.create_experiment(unique("ds"))
    train, holdout, extra, other = (
        _dataset("train", 1),
        _dataset("holdout", 10),
        _dataset("extra", 20),
        _dataset("other", 30),
    )
    with mlflow.start_run(experiment_id=first):
        mlflow.log_input(train, context="training")
        mlflow.log_input(holdout)  # no context
    with mlflow.start_run(experiment_id=first):
        mlflow.log_input(train, context="evaluation")  # the same dataset, another context
    with mlflow.start_run(experiment_id=first) as doomed:
        mlflow.log_input(extra, context="training")
    client.delete_run(doomed.info.run_id)  # its dataset stays listed, as in MLflow
    with mlflow.start_run(experiment_id=second):
        mlflow.log_input(other, context="training")

    expected_first = {
        (first, "train", train.digest, "training"),
        (first, "train", train.digest, "evaluation"),
        (first, "holdout", holdout.digest, None),
        (first, "extra", extra.digest, "training"),
    }
    assert _summaries(tracking_server, first) == expected_first
    assert _summaries(tracking_server, first, second) == expected_first | {
        (second, "other", other.digest, "training")
    }
    empty = client.create_experiment(unique("ds"))
    assert _summaries(tracking_server, empty) == set()


def test_search_datasets_refuses_bad_requests(tracking_server: Server) -> None:
    path = f"{AJAX}/experiments/search-datasets"
    none = tracking_server.request("POST", path, json={})
    assert_error(none, 400, "INVALID_PARAMETER_VALUE", "at least one experiment_id")
    many = tracking_server.request(
        "POST", path, json={"experiment_ids": [str(i) for i in range(21)]}
    )
    assert_error(many, 400, "INVALID_PARAMETER_VALUE", "more than 20")


def test_genai_searches_answer_empty(tracking_server: Server) -> None:
    experiment_id = MlflowClient(tracking_server.url).create_experiment(unique("genai"))
    location = {"type": "MLFLOW_EXPERIMENT", "mlflow_experiment": {"experiment_id": experiment_id}}
    traces = tracking_server.request(
        "POST", f"{AJAX3}/traces/search", json={"locations": [location], "max_results": 25}
    )
    assert (traces.status, traces.body) == (200, {})
    datasets = tracking_server.request(
        "POST", f"{AJAX3}/datasets/search", json={"experiment_ids": [experiment_id]}
    )
    assert (datasets.status, datasets.body) == (200, {})


def test_trace_metrics_of_no_traces(tracking_server: Server) -> None:
    experiment_id = MlflowClient(tracking_server.url).create_experiment(unique("genai"))
    path = f"{AJAX3}/traces/metrics"
    base = {"experiment_ids": [experiment_id], "view_type": "TRACES"}
    counting = {"metric_name": "trace_count", "aggregations": [{"aggregation_type": "COUNT"}]}

    count = tracking_server.request("POST", path, json={**base, **counting})
    assert count.status == 200, count.body
    assert count.body == {"data_points": [{"metric_name": "trace_count", "values": {"COUNT": 0.0}}]}
    for extra in (
        {"dimensions": ["trace_status"]},
        {"time_interval_seconds": 3600, "start_time_ms": 0, "end_time_ms": 10**12},
    ):
        grouped = tracking_server.request(
            "POST",
            path,
            json={**base, **counting, **extra},
        )
        assert (grouped.status, grouped.body) == (200, {}), extra
    latency = tracking_server.request(
        "POST",
        path,
        json={**base, "metric_name": "latency", "aggregations": [{"aggregation_type": "AVG"}]},
    )
    assert (latency.status, latency.body) == (200, {})
    missing = tracking_server.request(
        "POST", path, json={"experiment_ids": [experiment_id], "metric_name": "trace_count"}
    )
    assert_error(missing, 400, "INVALID_PARAMETER_VALUE", "view_type")


def test_gateway_telemetry_and_assistant_are_off(tracking_server: Server) -> None:
    for method in ("GET", "POST"):
        kwargs: dict[str, Any] = {"json": {}} if method == "POST" else {}
        proxy = tracking_server.request(method, f"{AJAX}/gateway-proxy", **kwargs)
        assert (proxy.status, proxy.body) == (200, {"endpoints": []}), method

    telemetry = tracking_server.request("GET", f"{AJAX3}/ui-telemetry")
    assert telemetry.status == 200
    assert telemetry.body["disable_ui_telemetry"] is True
    assert telemetry.body == {
        "disable_ui_events": [],
        "disable_ui_telemetry": True,
        "ui_rollout_percentage": 0,
    }
    events = tracking_server.request("POST", f"{AJAX3}/ui-telemetry", json={"records": []})
    assert (events.status, events.body) == (200, {"status": "disabled"})

    config = tracking_server.request("GET", f"{AJAX3}/assistant/config")
    assert (config.status, config.body) == (
        200,
        {"providers": {}, "projects": {}, "remote_access_allowed": False},
    )
    providers = tracking_server.request("GET", f"{AJAX3}/assistant/providers")
    assert providers.status == 200
    assert isinstance(providers.body["providers"], list)  # evtrack's: empty

    mcp = tracking_server.request("GET", f"{AJAX3}/mcp-servers", params={"max_results": 25})
    assert mcp.status == 200
    assert {k: v for k, v in mcp.body.items() if v is not None} == {"mcp_servers": []}

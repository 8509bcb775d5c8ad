"""Runs, params, metrics, tags, log-batch and metric history (compat doc §1.2-§1.4).

Modelled on MLflow's test_rest_tracking.py: test_create_run_all_args, test_create_run_defaults,
test_update_run_name_without_changing_status, test_set_terminated_*, test_log_metrics_params_tags,
test_log_*_validation, test_*_with_empty_string_as_value, test_log_batch*, test_delete_tag,
test_get_metric_history_respects_max_results / _with_page_token,
test_get_metric_history_bulk_interval_*.
"""

from __future__ import annotations

import math
import re
import time

import mlflow
import pytest
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunStatus, RunTag, ViewType

from ._support import Server, assert_error, raises_mlflow, unique

RUN_ID_RE = re.compile(r"^[a-zA-Z0-9][\w\-]{0,255}$")
GENERATED_NAME_RE = re.compile(r"^[a-z]+-[a-z]+-\d+$")
DOUBLE_MAX = 1.7976931348623157e308


def _now_ms() -> int:
    return int(time.time() * 1000)


@pytest.fixture
def exp_id(client: MlflowClient) -> str:
    return client.create_experiment(unique("runs"))


# --------------------------------------------------------------------------------------------
# Run lifecycle
# --------------------------------------------------------------------------------------------


def test_fluent_run_logs_params_metrics_tags(tracking_server: Server) -> None:
    exp = mlflow.set_experiment(unique("fluent"))
    before = _now_ms()
    with mlflow.start_run(run_name="r1") as run:
        mlflow.log_param("alpha", 0.5)
        mlflow.log_params({"beta": "b", "gamma": 3})
        for step in range(3):
            mlflow.log_metric("loss", 1.0 / (step + 1), step=step)
        mlflow.log_metrics({"acc": 0.7, "f1": 0.6}, step=7)
        mlflow.set_tag("stage", "dev")
        mlflow.set_tags({"team": "ml", "note": "x y"})
        assert mlflow.active_run().info.run_id == run.info.run_id
    assert mlflow.active_run() is None

    got = MlflowClient().get_run(run.info.run_id)
    info, data = got.info, got.data
    assert info.experiment_id == exp.experiment_id
    assert info.run_name == "r1"
    assert info.status == "FINISHED"
    assert info.lifecycle_stage == "active"
    assert before - 5000 <= info.start_time <= info.end_time <= _now_ms() + 5000
    assert info.artifact_uri == f"mlflow-artifacts:/{exp.experiment_id}/{info.run_id}/artifacts"
    assert data.params == {"alpha": "0.5", "beta": "b", "gamma": "3"}
    assert data.metrics == {"loss": pytest.approx(1 / 3), "acc": 0.7, "f1": 0.6}
    for key in ("stage", "team", "note"):
        assert data.tags[key] == {"stage": "dev", "team": "ml", "note": "x y"}[key]
    assert data.tags["mlflow.runName"] == "r1"
    assert data.tags["mlflow.source.type"] == "LOCAL"
    assert "mlflow.user" in data.tags and "mlflow.source.name" in data.tags
    assert info.user_id == data.tags["mlflow.user"]
    history = MlflowClient().get_metric_history(info.run_id, "loss")
    assert [(m.step, m.value) for m in history] == [(0, 1.0), (1, 0.5), (2, pytest.approx(1 / 3))]


def test_run_whose_body_raises_ends_failed(tracking_server: Server) -> None:
    mlflow.set_experiment(unique("failing"))
    with pytest.raises(ZeroDivisionError), mlflow.start_run() as run:
        mlflow.log_param("p", 1)
        1 / 0  # noqa: B018
    got = MlflowClient().get_run(run.info.run_id)
    assert got.info.status == "FAILED"
    assert got.info.end_time is not None and got.info.end_time >= got.info.start_time
    assert got.data.params == {"p": "1"}
    assert mlflow.active_run() is None


def test_nested_runs(tracking_server: Server) -> None:
    mlflow.set_experiment(unique("nested"))
    with mlflow.start_run() as parent, mlflow.start_run(nested=True) as child:
        pass
    got = MlflowClient().get_run(child.info.run_id)
    assert got.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert MlflowClient().get_run(parent.info.run_id).info.status == "FINISHED"


def test_create_run_defaults(client: MlflowClient, exp_id: str) -> None:
    before = _now_ms()
    run = client.create_run(exp_id)
    info = run.info
    assert RUN_ID_RE.match(info.run_id)
    assert info.experiment_id == exp_id
    assert info.user_id == "unknown"  # MlflowClient.create_run without an mlflow.user tag
    assert info.status == "RUNNING"
    assert info.lifecycle_stage == "active"
    assert info.end_time is None
    assert before - 5000 <= info.start_time <= _now_ms() + 5000
    assert info.artifact_uri == f"mlflow-artifacts:/{exp_id}/{info.run_id}/artifacts"
    # The server generates a name and records it as the mlflow.runName tag.
    assert GENERATED_NAME_RE.match(info.run_name), info.run_name
    assert run.data.tags == {"mlflow.runName": info.run_name}
    assert run.data.params == {} and run.data.metrics == {}
    got = client.get_run(info.run_id)
    assert got.info.run_name == info.run_name
    assert got.data.tags == {"mlflow.runName": info.run_name}


def test_create_run_all_args(client: MlflowClient, exp_id: str) -> None:
    run = client.create_run(
        exp_id,
        start_time=1234,
        run_name="named",
        tags={"mlflow.user": "alice", "k": "v", "mlflow.runName": "named"},
    )
    got = client.get_run(run.info.run_id)
    assert got.info.start_time == 1234
    assert got.info.run_name == "named"
    assert got.info.user_id == "alice"
    assert got.data.tags == {"mlflow.user": "alice", "k": "v", "mlflow.runName": "named"}

    # run_name alone sets the tag; the tag alone sets run_name.
    by_tag = client.create_run(exp_id, tags={"mlflow.runName": "from-tag"})
    assert client.get_run(by_tag.info.run_id).info.run_name == "from-tag"

    with raises_mlflow("INVALID_PARAMETER_VALUE", match="different values"):
        client.create_run(exp_id, run_name="a", tags={"mlflow.runName": "b"})
    with raises_mlflow("RESOURCE_DOES_NOT_EXIST"):
        client.create_run("987654321")


def test_update_run_name_without_changing_status(client: MlflowClient, exp_id: str) -> None:
    run_id = client.create_run(exp_id, run_name="before").info.run_id
    client.update_run(run_id, name="after")
    got = client.get_run(run_id)
    assert got.info.run_name == "after"
    assert got.info.status == "RUNNING"
    assert got.data.tags["mlflow.runName"] == "after"

    client.set_tag(run_id, "mlflow.runName", "via-tag")  # the tag renames the run too
    assert client.get_run(run_id).info.run_name == "via-tag"

    client.update_run(run_id, status="KILLED")
    got = client.get_run(run_id)
    assert (got.info.status, got.info.run_name) == ("KILLED", "via-tag")


def test_set_terminated(client: MlflowClient, exp_id: str) -> None:
    run_id = client.create_run(exp_id).info.run_id
    client.set_terminated(run_id)
    got = client.get_run(run_id).info
    assert got.status == "FINISHED"
    assert got.end_time is not None and got.end_time >= got.start_time

    for status in ("KILLED", "FAILED", "SCHEDULED", "RUNNING"):
        rid = client.create_run(exp_id).info.run_id
        client.set_terminated(rid, status=status, end_time=424242)
        info = client.get_run(rid).info
        assert info.status == status
        assert info.end_time == 424242

    with raises_mlflow("RESOURCE_DOES_NOT_EXIST"):
        client.set_terminated("0123456789abcdef0123456789abcdef")


def test_get_missing_run(client: MlflowClient) -> None:
    with raises_mlflow("RESOURCE_DOES_NOT_EXIST", match="not found"):
        client.get_run("0123456789abcdef0123456789abcdef")


def test_delete_restore_run(client: MlflowClient, exp_id: str) -> None:
    run_id = client.create_run(exp_id).info.run_id
    client.log_param(run_id, "p", "1")
    client.delete_run(run_id)
    assert client.get_run(run_id).info.lifecycle_stage == "deleted"  # still readable
    client.delete_run(run_id)  # deleting twice is fine
    assert client.search_runs([exp_id]) == []
    assert [r.info.run_id for r in client.search_runs([exp_id], run_view_type=ViewType.ALL)] == [
        run_id
    ]

    msg = "must be in the 'active' state"
    with raises_mlflow("INVALID_PARAMETER_VALUE", match=msg):
        client.log_param(run_id, "q", "1")
    with raises_mlflow("INVALID_PARAMETER_VALUE", match=msg):
        client.log_metric(run_id, "m", 1.0)
    with raises_mlflow("INVALID_PARAMETER_VALUE", match=msg):
        client.set_tag(run_id, "t", "1")
    with raises_mlflow("INVALID_PARAMETER_VALUE", match=msg):
        client.delete_tag(run_id, "mlflow.runName")
    with raises_mlflow("INVALID_PARAMETER_VALUE", match=msg):
        client.log_batch(run_id, metrics=[Metric("m", 1.0, 1, 0)])
    with raises_mlflow("INVALID_PARAMETER_VALUE", match=msg):
        client.update_run(run_id, name="renamed")

    client.restore_run(run_id)
    client.restore_run(run_id)  # restoring twice is fine
    assert client.get_run(run_id).info.lifecycle_stage == "active"
    client.log_param(run_id, "q", "1")
    assert client.get_run(run_id).data.params == {"p": "1", "q": "1"}

    with raises_mlflow("RESOURCE_DOES_NOT_EXIST"):
        client.delete_run("0123456789abcdef0123456789abcdef")
    with raises_mlflow("RESOURCE_DOES_NOT_EXIST"):
        client.restore_run("0123456789abcdef0123456789abcdef")


# --------------------------------------------------------------------------------------------
# Params, tags, metrics
# --------------------------------------------------------------------------------------------


def test_param_values_are_immutable(client: MlflowClient, exp_id: str) -> None:
    run_id = client.create_run(exp_id).info.run_id
    client.log_param(run_id, "p", "1")
    client.log_param(run_id, "p", "1")  # same value again is idempotent
    client.log_batch(run_id, params=[Param("p", "1")])
    with raises_mlflow("INVALID_PARAMETER_VALUE", match="Changing param values is not allowed"):
        client.log_param(run_id, "p", "2")
    with raises_mlflow("INVALID_PARAMETER_VALUE", match="Changing param values is not allowed"):
        client.log_batch(run_id, params=[Param("p", "3")])
    assert client.get_run(run_id).data.params == {"p": "1"}


def test_tags_upsert_and_delete(client: MlflowClient, exp_id: str) -> None:
    run_id = client.create_run(exp_id).info.run_id
    client.set_tag(run_id, "t", "1")
    client.set_tag(run_id, "t", "2")
    assert client.get_run(run_id).data.tags["t"] == "2"
    client.delete_tag(run_id, "t")
    assert "t" not in client.get_run(run_id).data.tags
    with raises_mlflow("RESOURCE_DOES_NOT_EXIST", match="No tag with name: t"):
        client.delete_tag(run_id, "t")
    with raises_mlflow("RESOURCE_DOES_NOT_EXIST"):
        client.set_tag("0123456789abcdef0123456789abcdef", "t", "1")


def test_empty_string_values(client: MlflowClient, exp_id: str) -> None:
    run_id = client.create_run(exp_id).info.run_id
    client.log_param(run_id, "p_single", "")
    client.set_tag(run_id, "t_single", "")
    client.log_batch(run_id, params=[Param("p_batch", "")], tags=[RunTag("t_batch", "")])
    data = client.get_run(run_id).data
    assert data.params == {"p_single": "", "p_batch": ""}
    assert data.tags["t_single"] == "" and data.tags["t_batch"] == ""


def test_latest_metric_value(client: MlflowClient, exp_id: str) -> None:
    """data.metrics holds, per key, the max of (step, timestamp, value)."""
    run_id = client.create_run(exp_id).info.run_id
    client.log_metric(run_id, "by_step", 1.0, timestamp=10, step=5)
    client.log_metric(run_id, "by_step", 9.0, timestamp=20, step=2)
    client.log_metric(run_id, "by_ts", 1.0, timestamp=30, step=5)
    client.log_metric(run_id, "by_ts", 9.0, timestamp=20, step=5)
    client.log_metric(run_id, "by_value", 1.0, timestamp=30, step=5)
    client.log_metric(run_id, "by_value", 0.5, timestamp=30, step=5)
    client.log_metric(run_id, "negative_step", 3.0, timestamp=30, step=-1)
    got = client.get_run(run_id).data.metrics
    assert got == {"by_step": 1.0, "by_ts": 1.0, "by_value": 1.0, "negative_step": 3.0}


def test_identical_metric_points_are_deduplicated(client: MlflowClient, exp_id: str) -> None:
    run_id = client.create_run(exp_id).info.run_id
    client.log_metric(run_id, "d", 1.0, timestamp=10, step=1)
    client.log_metric(run_id, "d", 1.0, timestamp=10, step=1)
    client.log_batch(run_id, metrics=[Metric("d", 1.0, 10, 1), Metric("d", 2.0, 10, 1)])
    hist = client.get_metric_history(run_id, "d")
    assert [(m.value, m.timestamp, m.step) for m in hist] == [(1.0, 10, 1), (2.0, 10, 1)]


def test_nan_and_infinite_metric_values(client: MlflowClient, exp_id: str) -> None:
    run_id = client.create_run(exp_id).info.run_id
    client.log_metric(run_id, "nan", float("nan"), timestamp=1, step=0)
    client.log_metric(run_id, "inf", float("inf"), timestamp=1, step=0)
    client.log_metric(run_id, "ninf", float("-inf"), timestamp=1, step=0)
    client.log_batch(
        run_id,
        metrics=[
            Metric("b_nan", float("nan"), 1, 0),
            Metric("b_inf", float("inf"), 1, 0),
            Metric("big", 1e308, 1, 0),
            Metric("tiny", 5e-324, 1, 0),
            Metric("neg_zero", -0.0, 1, 0),
        ],
    )
    metrics = client.get_run(run_id).data.metrics
    assert math.isnan(metrics["nan"]) and math.isnan(metrics["b_nan"])
    # The reference clamps +-Inf to +-DBL_MAX.
    assert metrics["inf"] == DOUBLE_MAX and metrics["b_inf"] == DOUBLE_MAX
    assert metrics["ninf"] == -DOUBLE_MAX
    assert metrics["big"] == 1e308 and metrics["tiny"] == 5e-324 and metrics["neg_zero"] == 0.0
    nan_hist = client.get_metric_history(run_id, "nan")
    assert len(nan_hist) == 1 and math.isnan(nan_hist[0].value)
    assert [m.value for m in client.get_metric_history(run_id, "ninf")] == [-DOUBLE_MAX]


def test_nan_and_infinite_metric_values_raw(tracking_server: Server, exp_id: str) -> None:
    """On the wire NaN / +-Inf are the strings "NaN", "Infinity", "-Infinity"."""
    s = tracking_server
    run_id = s.ok_post("runs/create", {"experiment_id": exp_id})["run"]["info"]["run_id"]
    for key, value in (("nan", "NaN"), ("inf", "Infinity"), ("ninf", "-Infinity")):
        assert (
            s.ok_post(
                "runs/log-metric",
                {"run_id": run_id, "key": key, "value": value, "timestamp": 5, "step": 0},
            )
            == {}
        )
    metrics = {
        m["key"]: m for m in s.ok_get("runs/get", {"run_id": run_id})["run"]["data"]["metrics"]
    }
    assert metrics["nan"] == {"key": "nan", "value": "NaN", "timestamp": 5, "step": 0}
    assert metrics["inf"]["value"] == DOUBLE_MAX
    assert metrics["ninf"]["value"] == -DOUBLE_MAX
    hist = s.ok_get("metrics/get-history", {"run_id": run_id, "metric_key": "nan"})
    assert hist == {"metrics": [{"key": "nan", "value": "NaN", "timestamp": 5, "step": 0}]}


INVALID_KEYS = {
    "bang": "a!b",
    "at": "a@b",
    "hash": "a#b",
    "question": "a?b",
    "dotdot-mid": "a/../b",
    "dotdot-lead": "../a",
    "dotdot-tail": "a/..",
    "dotdot-prefix": "..a",
    "dot-lead": "./a",
    "leading-slash": "/a",
    "double-slash": "a//b",
    "too-long": "x" * 251,
}


def test_invalid_keys(client: MlflowClient, exp_id: str) -> None:
    """Key names must match ^[/\\w.\\- :]*$ and must not normalise to another path."""
    from mlflow.exceptions import MlflowException

    run_id = client.create_run(exp_id).info.run_id
    calls = {
        "log_param": lambda k: client.log_param(run_id, k, "v"),
        "log_metric": lambda k: client.log_metric(run_id, k, 1.0),
        "set_tag": lambda k: client.set_tag(run_id, k, "v"),
        "log_batch": lambda k: client.log_batch(run_id, params=[Param(k, "v")]),
    }
    failures = []
    for label, key in INVALID_KEYS.items():
        for name, call in calls.items():
            try:
                call(key)
                failures.append(f"{name}({label} {key[:20]!r}): accepted")
            except MlflowException as e:
                if e.error_code != "INVALID_PARAMETER_VALUE":
                    failures.append(f"{name}({label}): {e.error_code} {str(e)[:150]}")
    assert not failures, "\n".join(failures)
    data = client.get_run(run_id).data
    assert data.params == {} and data.metrics == {}


def test_valid_unusual_keys(client: MlflowClient, exp_id: str) -> None:
    run_id = client.create_run(exp_id).info.run_id
    keys = ["a b", "a/b/c", "a.b-c_d", "a:b", "x" * 250, "Ünïcode", "a.", "a..b"]
    client.log_batch(
        run_id,
        params=[Param(k, "v") for k in keys],
        metrics=[Metric(k, 1.0, 1, 0) for k in keys],
        tags=[RunTag(k, "v") for k in keys],
    )
    data = client.get_run(run_id).data
    assert set(keys) <= set(data.params) and set(keys) <= set(data.metrics)
    assert set(keys) <= set(data.tags)


def test_log_batch(client: MlflowClient, exp_id: str) -> None:
    run_id = client.create_run(exp_id).info.run_id
    client.log_batch(
        run_id,
        metrics=[Metric("m", float(i), 1000 + i, i) for i in range(5)],
        params=[Param(f"p{i}", str(i)) for i in range(3)],
        tags=[RunTag("t", "v")],
    )
    data = client.get_run(run_id).data
    assert data.metrics == {"m": 4.0}
    assert data.params == {"p0": "0", "p1": "1", "p2": "2"}
    assert data.tags["t"] == "v"
    # The client splits big batches into requests the server accepts.
    client.log_batch(
        run_id,
        metrics=[Metric("big", float(i), 5, i) for i in range(2500)],
        params=[Param(f"q{i}", "v") for i in range(250)],
    )
    assert len(client.get_metric_history(run_id, "big")) == 2500
    assert len(client.get_run(run_id).data.params) == 253


def test_log_batch_limits_raw(tracking_server: Server, exp_id: str) -> None:
    s = tracking_server
    run_id = s.ok_post("runs/create", {"experiment_id": exp_id})["run"]["info"]["run_id"]

    def metrics(n: int) -> list[dict[str, object]]:
        return [{"key": "m", "value": i, "timestamp": 1, "step": i} for i in range(n)]

    def kvs(n: int, prefix: str) -> list[dict[str, str]]:
        return [{"key": f"{prefix}{i}", "value": "v"} for i in range(n)]

    assert_error(
        s.post("runs/log-batch", {"run_id": run_id, "metrics": metrics(1001)}),
        400,
        "INVALID_PARAMETER_VALUE",
        "at most 1000 metrics",
    )
    assert_error(
        s.post("runs/log-batch", {"run_id": run_id, "params": kvs(101, "p")}),
        400,
        "INVALID_PARAMETER_VALUE",
        "at most 100 params",
    )
    assert_error(
        s.post("runs/log-batch", {"run_id": run_id, "tags": kvs(101, "t")}),
        400,
        "INVALID_PARAMETER_VALUE",
        "at most 100 tags",
    )
    assert_error(
        s.post(
            "runs/log-batch", {"run_id": run_id, "metrics": metrics(950), "params": kvs(51, "p")}
        ),
        400,
        "INVALID_PARAMETER_VALUE",
        "at most 1000 metrics, params, and tags",
    )
    # Nothing of the rejected batches was written (validated before writing).
    data = s.ok_get("runs/get", {"run_id": run_id})["run"]["data"]
    assert "metrics" not in data and "params" not in data
    # Exactly at the limits is accepted.
    assert s.ok_post("runs/log-batch", {"run_id": run_id, "metrics": metrics(1000)}) == {}
    assert (
        s.ok_post(
            "runs/log-batch", {"run_id": run_id, "params": kvs(100, "p"), "tags": kvs(100, "t")}
        )
        == {}
    )


def test_log_batch_validation_raw(tracking_server: Server, exp_id: str) -> None:
    s = tracking_server
    run_id = s.ok_post("runs/create", {"experiment_id": exp_id})["run"]["info"]["run_id"]

    def batch(**kw: object) -> object:
        return s.post("runs/log-batch", {"run_id": run_id, **kw})

    assert_error(
        batch(metrics=[{"key": "m", "value": 1}]),
        400,
        "INVALID_PARAMETER_VALUE",
        "Missing value for required parameter 'metrics[0].timestamp'",
    )
    assert_error(
        batch(metrics=[{"key": "m", "timestamp": 1}]),
        400,
        "INVALID_PARAMETER_VALUE",
        "Missing value for required parameter 'metrics[0].value'",
    )
    assert_error(
        batch(metrics=[{"value": 1, "timestamp": 1}]),
        400,
        "INVALID_PARAMETER_VALUE",
        "Missing value for required parameter 'metrics[0].key'",
    )
    assert_error(
        batch(metrics=[{"key": "m", "value": 1, "timestamp": -1}]),
        400,
        "INVALID_PARAMETER_VALUE",
        "metrics[0].timestamp",
    )
    assert_error(
        batch(params=[{"value": "v"}]),
        400,
        "INVALID_PARAMETER_VALUE",
        "Missing value for required parameter 'params[0].key'",
    )
    assert_error(
        batch(tags=[{"value": "v"}]),
        400,
        "INVALID_PARAMETER_VALUE",
        "Missing value for required parameter 'tags[0].key'",
    )
    assert_error(
        batch(params=[{"key": "dup", "value": "1"}, {"key": "dup", "value": "2"}]),
        400,
        "INVALID_PARAMETER_VALUE",
        "Duplicate parameter keys",
    )
    assert_error(
        batch(params=[{"key": "a!b", "value": "1"}]),
        400,
        "INVALID_PARAMETER_VALUE",
        "params[0].key",
    )
    assert_error(batch(metrics="nope"), 400, "INVALID_PARAMETER_VALUE")
    assert_error(
        s.post("runs/log-batch", {"metrics": []}),
        400,
        "INVALID_PARAMETER_VALUE",
        "Missing value for required parameter 'run_id'",
    )
    assert_error(
        s.post(
            "runs/log-batch",
            {"run_id": "0123456789abcdef0123456789abcdef", "params": [{"key": "p", "value": "v"}]},
        ),
        404,
        "RESOURCE_DOES_NOT_EXIST",
    )
    # An invalid item anywhere rejects the whole batch.
    r = batch(params=[{"key": "good", "value": "1"}], metrics=[{"key": "m", "value": 1}])
    assert r.status == 400
    assert "params" not in s.ok_get("runs/get", {"run_id": run_id})["run"]["data"]
    assert batch().status == 200  # an empty batch is fine


def test_long_values_are_truncated(tracking_server: Server, exp_id: str) -> None:
    """The reference truncates long param (6000) and run tag (8000) values with a warning."""
    s = tracking_server
    run_id = s.ok_post("runs/create", {"experiment_id": exp_id})["run"]["info"]["run_id"]
    s.ok_post("runs/log-parameter", {"run_id": run_id, "key": "p1", "value": "p" * 6001})
    s.ok_post("runs/set-tag", {"run_id": run_id, "key": "t1", "value": "t" * 8001})
    s.ok_post(
        "runs/log-batch",
        {
            "run_id": run_id,
            "params": [{"key": "p2", "value": "q" * 7000}],
            "tags": [{"key": "t2", "value": "u" * 9000}],
        },
    )
    data = s.ok_get("runs/get", {"run_id": run_id})["run"]["data"]
    params = {p["key"]: p["value"] for p in data["params"]}
    tags = {t["key"]: t["value"] for t in data["tags"]}
    assert params["p1"] == "p" * 6000 and params["p2"] == "q" * 6000
    assert tags["t1"] == "t" * 8000 and tags["t2"] == "u" * 8000
    # Keys are never truncated.
    assert_error(
        s.post("runs/log-parameter", {"run_id": run_id, "key": "k" * 251, "value": "v"}),
        400,
        "INVALID_PARAMETER_VALUE",
    )


def test_single_metric_validation_raw(tracking_server: Server, exp_id: str) -> None:
    s = tracking_server
    run_id = s.ok_post("runs/create", {"experiment_id": exp_id})["run"]["info"]["run_id"]
    base = {"run_id": run_id, "key": "m", "value": 1.0, "timestamp": 1, "step": 0}
    assert_error(
        s.post("runs/log-metric", {**base, "timestamp": -5}), 400, "INVALID_PARAMETER_VALUE"
    )
    assert_error(
        s.post("runs/log-metric", {k: v for k, v in base.items() if k != "key"}),
        400,
        "INVALID_PARAMETER_VALUE",
        "Missing value for required parameter 'key'",
    )
    assert_error(
        s.post("runs/log-metric", {k: v for k, v in base.items() if k != "value"}),
        400,
        "INVALID_PARAMETER_VALUE",
        "Missing value for required parameter 'value'",
    )
    assert_error(
        s.post("runs/log-metric", {k: v for k, v in base.items() if k != "timestamp"}),
        400,
        "INVALID_PARAMETER_VALUE",
        "Missing value for required parameter 'timestamp'",
    )
    # run_uuid (legacy) works as well as run_id; step defaults to 0.
    body = {"run_uuid": run_id, "key": "legacy", "value": 2.5, "timestamp": 7}
    assert s.ok_post("runs/log-metric", body) == {}
    assert s.ok_get("metrics/get-history", {"run_uuid": run_id, "metric_key": "legacy"}) == {
        "metrics": [{"key": "legacy", "value": 2.5, "timestamp": 7, "step": 0}]
    }
    assert_error(
        s.post("runs/log-metric", {**base, "run_id": "0123456789abcdef0123456789abcdef"}),
        404,
        "RESOURCE_DOES_NOT_EXIST",
    )


# --------------------------------------------------------------------------------------------
# Metric history
# --------------------------------------------------------------------------------------------

HISTORY_POINTS = 26_000  # > 25000, the page size the client asks for


def test_metric_history_complete_and_ordered(
    client: MlflowClient, tracking_server: Server, exp_id: str
) -> None:
    """One big history: the client follows next_page_token (25000 per page); the order is the
    reference's (timestamp, step, value), not the insertion order."""
    run_id = client.create_run(exp_id).info.run_id
    n = HISTORY_POINTS
    # Timestamps are a permutation of the steps (pairs share a timestamp), so ordering by
    # insertion, by step and by (timestamp, step, value) all differ.
    points = [Metric("loss", float(i % 97), 1_000_000 + (i * 7919 % n) // 2, i) for i in range(n)]
    # Same timestamp and step, different values: ordered by value.
    points += [Metric("loss", v, 999_999, 3) for v in (5.0, -1.0, 2.0)]
    client.log_batch(run_id, metrics=points)

    history = client.get_metric_history(run_id, "loss")
    got = [(m.timestamp, m.step, m.value) for m in history]
    expected = sorted((m.timestamp, m.step, m.value) for m in points)
    assert len(got) == len(expected)
    assert got == expected
    assert all(m.key == "loss" for m in history[:10])

    # Raw paging with a smaller page size sees the same sequence.
    pages: list[dict[str, object]] = []
    token = None
    while True:
        params = {"run_id": run_id, "metric_key": "loss", "max_results": 10_000}
        if token:
            params["page_token"] = token
        body = tracking_server.ok_get("metrics/get-history", params)
        assert len(body["metrics"]) <= 10_000
        pages.append(body)
        token = body.get("next_page_token")
        if not token:
            break
        assert len(pages) < 10
    assert len(pages) == 3
    raw = [(m["timestamp"], m["step"], m["value"]) for p in pages for m in p["metrics"]]
    assert raw == expected


def test_metric_history_paging_raw(tracking_server: Server, exp_id: str) -> None:
    s = tracking_server
    run_id = s.ok_post("runs/create", {"experiment_id": exp_id})["run"]["info"]["run_id"]
    s.ok_post(
        "runs/log-batch",
        {
            "run_id": run_id,
            "metrics": [
                {"key": "acc", "value": i / 10, "timestamp": 100 - i, "step": i} for i in range(7)
            ],
        },
    )
    full = s.ok_get("metrics/get-history", {"run_id": run_id, "metric_key": "acc"})
    assert "next_page_token" not in full or not full["next_page_token"]
    # Ordered by timestamp: the reverse of the steps here.
    assert [m["step"] for m in full["metrics"]] == [6, 5, 4, 3, 2, 1, 0]
    assert full["metrics"][0] == {"key": "acc", "value": 0.6, "timestamp": 94, "step": 6}

    collected, token, calls = [], None, 0
    while True:
        params = {"run_id": run_id, "metric_key": "acc", "max_results": 3}
        if token:
            params["page_token"] = token
        body = s.ok_get("metrics/get-history", params)
        calls += 1
        collected += body.get("metrics", [])
        token = body.get("next_page_token")
        if not token:
            break
    assert collected == full["metrics"]
    assert calls == 3

    assert_error(
        s.get("metrics/get-history", {"run_id": run_id, "metric_key": "acc", "max_results": 0}),
        400,
        "INVALID_PARAMETER_VALUE",
    )
    assert_error(
        s.get("metrics/get-history", {"run_id": run_id, "metric_key": "acc", "page_token": "zzz"}),
        400,
        "INVALID_PARAMETER_VALUE",
    )
    assert_error(
        s.get("metrics/get-history", {"run_id": run_id}),
        400,
        "INVALID_PARAMETER_VALUE",
        "Missing value for required parameter 'metric_key'",
    )
    # Unknown key: an empty response.
    assert s.ok_get("metrics/get-history", {"run_id": run_id, "metric_key": "nope"}) == {}


def test_metric_history_bulk_interval(tracking_server: Server, exp_id: str) -> None:
    """Not reachable from the Python client (the UI charts use it): raw REST."""
    s = tracking_server
    runs = [
        s.ok_post("runs/create", {"experiment_id": exp_id, "start_time": 1000 + i})["run"]["info"][
            "run_id"
        ]
        for i in range(2)
    ]
    for n, run_id in zip((5, 10), runs, strict=True):
        s.ok_post(
            "runs/log-batch",
            {
                "run_id": run_id,
                "metrics": [
                    {"key": "acc", "value": i / 10, "timestamp": 100 - i, "step": i}
                    for i in range(n)
                ],
            },
        )

    def bulk(**params: object):  # type: ignore[no-untyped-def]
        return s.get("metrics/get-history-bulk-interval", {"metric_key": "acc", **params})

    body = bulk(run_ids=runs[0]).body
    assert body == {
        "metrics": [
            {"key": "acc", "value": i / 10, "timestamp": 100 - i, "step": i, "run_id": runs[0]}
            for i in range(5)
        ]
    }  # ordered by step
    # Runs come back in the order they were asked for (here: descending run id), then by step.
    asked = sorted(runs, reverse=True)
    body = bulk(run_ids=asked, max_results=3).body
    got = [(m["run_id"], m["step"]) for m in body["metrics"]]
    assert sorted(got, key=lambda x: (asked.index(x[0]), x[1])) == got, got
    # At most max_results per run; the first and last steps are kept.
    for rid, last in zip(runs, (4, 9), strict=True):
        steps = [st for r, st in got if r == rid]
        assert 2 <= len(steps) <= 3 and (steps[0], steps[-1]) == (0, last), steps
    body = bulk(run_ids=runs[1], start_step=2, end_step=4).body
    assert [m["step"] for m in body["metrics"]] == [2, 3, 4]

    assert_error(bulk(run_ids=runs[0], start_step=1), 400, "INVALID_PARAMETER_VALUE")
    assert_error(bulk(run_ids=runs[0], start_step=3, end_step=1), 400, "INVALID_PARAMETER_VALUE")
    assert_error(bulk(run_ids=runs[0], max_results=0), 400, "INVALID_PARAMETER_VALUE")
    assert_error(bulk(run_ids=runs[0], max_results=2501), 400, "INVALID_PARAMETER_VALUE")
    assert_error(
        bulk(), 400, "INVALID_PARAMETER_VALUE", "Missing value for required parameter 'run_ids'"
    )
    assert_error(bulk(run_ids=[runs[0]] * 101), 400, "INVALID_PARAMETER_VALUE")


def test_status_enum_round_trip(client: MlflowClient, exp_id: str) -> None:
    run_id = client.create_run(exp_id).info.run_id
    client.update_run(run_id, status=RunStatus.to_string(RunStatus.SCHEDULED))
    assert client.get_run(run_id).info.status == "SCHEDULED"

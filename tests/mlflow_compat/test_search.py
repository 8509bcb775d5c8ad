"""search_runs: filter grammar, order_by, pagination and the pandas DataFrame (compat doc §3).

Modelled on MLflow's test_rest_tracking.py test_search_pagination / test_search_validation and
the search_runs cases of the sqlalchemy store tests. Expected orders were recorded against the
reference server; they include the implicit tiebreakers (start_time DESC, then run_id ASC) and
"null / NaN last" ordering.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import mlflow
import pandas as pd
import pytest
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag, ViewType

from ._support import Server, raises_mlflow, unique, using

NAN = float("nan")

# name, start_time, metrics (one value per step), params, tags, final state
SEED = [
    (
        "alpha",
        1000,
        {"acc": [0.5, 0.9], "loss": [0.3], "val loss": [0.2]},
        {"model": "cnn", "lr": "0.01"},
        {"team": "vision", "env": "prod"},
        None,
    ),
    (
        "beta",
        2000,
        {"acc": [0.7], "val loss": [0.6]},
        {"model": "rnn", "lr": "0.1"},
        {"team": "nlp"},
        None,
    ),
    (
        "gamma",
        3000,
        {"loss": [0.1]},
        {"model": "CNN-large"},
        {"team": "vision", "my tag": "x y"},
        None,
    ),
    ("delta", 3000, {"acc": [0.7]}, {}, {}, "FINISHED"),  # same start_time as gamma
    ("epsilon", 1500, {"acc": [NAN]}, {"lr": "1"}, {"env": "dev"}, "FAILED"),
    ("zeta", 6000, {"acc": [1.0]}, {}, {}, "deleted"),
]


@dataclass
class Seeded:
    exp_name: str
    exp_id: str
    ids: dict[str, str]  # run name -> run id

    def names(self, runs) -> list[str]:  # type: ignore[no-untyped-def]
        inv = {v: k for k, v in self.ids.items()}
        return [inv[r.info.run_id] for r in runs]

    def by_run_id(self, *names: str) -> list[str]:
        """Names ordered by run id (the last implicit tiebreaker)."""
        return sorted(names, key=lambda n: self.ids[n])


def seed_runs(client: MlflowClient, exp_name: str | None = None) -> Seeded:
    exp_name = exp_name or unique("search")
    exp_id = client.create_experiment(exp_name)
    ids = {}
    for name, start, metrics, params, tags, state in SEED:
        run_id = client.create_run(exp_id, start_time=start, run_name=name).info.run_id
        ids[name] = run_id
        client.log_batch(
            run_id,
            metrics=[
                Metric(k, v, 10 + i, i) for k, vs in metrics.items() for i, v in enumerate(vs)
            ],
            params=[Param(k, v) for k, v in params.items()],
            tags=[RunTag(k, v) for k, v in tags.items()],
        )
        if state == "deleted":
            client.delete_run(run_id)
        elif state:
            client.set_terminated(run_id, status=state, end_time=start + 500)
    return Seeded(exp_name, exp_id, ids)


@pytest.fixture
def seeded(client: MlflowClient) -> Seeded:
    return seed_runs(client)


def test_default_order_and_view_types(client: MlflowClient, seeded: Seeded) -> None:
    def names(view: int) -> list[str]:
        return seeded.names(client.search_runs([seeded.exp_id], run_view_type=view))

    # start_time DESC, then run_id ASC for the tie between gamma and delta.
    expected = [*seeded.by_run_id("gamma", "delta"), "beta", "epsilon", "alpha"]
    assert names(ViewType.ACTIVE_ONLY) == expected
    assert names(ViewType.DELETED_ONLY) == ["zeta"]
    assert names(ViewType.ALL) == ["zeta", *expected]


FILTERS = [
    ("metrics.acc > 0.8", {"alpha"}),
    ("metrics.acc >= 0.7", {"alpha", "beta", "delta"}),
    ("metrics.acc = 0.7", {"beta", "delta"}),
    ("metrics.acc != 0.7", {"alpha", "epsilon"}),  # NaN != 0.7; runs without acc never match
    ("metrics.acc < 0.8", {"beta", "delta"}),  # the latest value (0.9), not an older one (0.5)
    ("metrics.acc <= 1e308", {"alpha", "beta", "delta"}),
    ("metrics.`val loss` < 0.5", {"alpha"}),
    ('metrics."val loss" < 0.5', {"alpha"}),
    ("metric.acc > 0.8", {"alpha"}),
    ("params.model = 'cnn'", {"alpha"}),
    ('params.model = "cnn"', {"alpha"}),
    ("params.model != 'cnn'", {"beta", "gamma"}),  # runs without the param never match
    ("params.model LIKE 'c%'", {"alpha"}),  # LIKE is case-sensitive
    ("params.model LIKE '%N%'", {"gamma"}),
    ("params.model LIKE 'r_n'", {"beta"}),
    ("params.model ILIKE 'c%'", {"alpha", "gamma"}),
    ("params.model IS NULL", {"delta", "epsilon"}),
    ("params.model IS NOT NULL", {"alpha", "beta", "gamma"}),
    ("params.lr = '0.01'", {"alpha"}),
    ("param.model = 'cnn'", {"alpha"}),
    ("parameter.model = 'cnn'", {"alpha"}),
    ("parameters.model = 'cnn'", {"alpha"}),
    ("tags.team = 'vision'", {"alpha", "gamma"}),
    ("tags.team != 'vision'", {"beta"}),
    ("tags.team IS NULL", {"delta", "epsilon"}),
    ("tags.`my tag` = 'x y'", {"gamma"}),
    ("tags.mlflow.runName = 'alpha'", {"alpha"}),
    ("tag.team = 'nlp'", {"beta"}),
    ("tags.env = 'prod' AND tags.team = 'vision' AND metrics.loss < 1", {"alpha"}),
    ("metrics.acc > 0.5 and params.model = 'rnn'", {"beta"}),
    ("attributes.run_name = 'beta'", {"beta"}),
    ("attr.run_name = 'beta'", {"beta"}),
    ("run.run_name = 'beta'", {"beta"}),
    ("attributes.`Run name` = 'alpha'", {"alpha"}),
    ("`run name` = 'alpha'", {"alpha"}),
    ("run_name LIKE '%a'", {"alpha", "beta", "gamma", "delta"}),
    ("run_name ILIKE 'ALPHA'", {"alpha"}),
    ("run_name = 'ALPHA'", set()),
    ("attributes.status = 'FINISHED'", {"delta"}),
    ("status != 'RUNNING'", {"delta", "epsilon"}),
    ("attributes.start_time >= 3000", {"gamma", "delta"}),
    ("created < 1600", {"alpha", "epsilon"}),
    ("attributes.end_time > 0", {"delta", "epsilon"}),
    ("attributes.user_id = 'unknown'", {"alpha", "beta", "gamma", "delta", "epsilon"}),
]


def test_filters(client: MlflowClient, seeded: Seeded) -> None:
    """All FILTERS against one seed (one seed per test keeps evtrack's fresh-DB-per-test cheap);
    every mismatch is reported."""
    failures = []
    for filter_string, expected in FILTERS:
        try:
            got = set(seeded.names(client.search_runs([seeded.exp_id], filter_string)))
        except Exception as e:  # report and go on
            failures.append(f"{filter_string!r}: raised {e!r}"[:300])
            continue
        if got != expected:
            failures.append(f"{filter_string!r}: expected {sorted(expected)}, got {sorted(got)}")
    assert not failures, "\n".join(failures)


def test_filters_on_ids(client: MlflowClient, seeded: Seeded) -> None:
    ids = seeded.ids

    def names(f: str) -> set[str]:
        return set(seeded.names(client.search_runs([seeded.exp_id], f, run_view_type=ViewType.ALL)))

    assert names(f"attributes.run_id IN ('{ids['alpha']}', '{ids['beta']}')") == {"alpha", "beta"}
    assert names(f"run_id IN ('{ids['zeta']}')") == {"zeta"}
    assert names(f"run_id NOT IN ('{ids['alpha']}')") == set(ids) - {"alpha"}
    assert names(f"attributes.run_id = '{ids['gamma']}'") == {"gamma"}
    assert names(f"attributes.artifact_uri LIKE '%{ids['beta']}%'") == {"beta"}


def test_search_across_experiments(client: MlflowClient, seeded: Seeded) -> None:
    other = client.create_experiment(unique("other"))
    extra = client.create_run(other, start_time=10_000, run_name="extra").info.run_id
    client.log_metric(extra, "acc", 0.95)
    runs = client.search_runs([seeded.exp_id, other], "metrics.acc > 0.8")
    assert [r.info.run_id for r in runs] == [extra, seeded.ids["alpha"]]


ORDERS = [
    (["metrics.acc DESC"], lambda s: ["alpha", "delta", "beta", "epsilon", "gamma"]),
    # Ties by start_time DESC; NaN after values, missing after NaN, in both directions.
    (["metrics.acc ASC"], lambda s: ["delta", "beta", "alpha", "epsilon", "gamma"]),
    (["metrics.acc"], lambda s: ["delta", "beta", "alpha", "epsilon", "gamma"]),
    (
        ["metrics.`val loss` ASC"],
        lambda s: ["alpha", "beta", *s.by_run_id("gamma", "delta"), "epsilon"],
    ),
    (["metrics.loss DESC"], lambda s: ["alpha", "gamma", "delta", "beta", "epsilon"]),
    # Byte order: upper case sorts before lower case.
    (["params.model ASC"], lambda s: ["gamma", "alpha", "beta", "delta", "epsilon"]),
    (["params.model DESC"], lambda s: ["beta", "alpha", "gamma", "delta", "epsilon"]),
    (
        ["params.lr DESC", "metrics.acc DESC"],
        lambda s: ["epsilon", "beta", "alpha", "delta", "gamma"],
    ),
    (
        ["tags.team DESC", "attributes.run_name ASC"],
        lambda s: ["alpha", "gamma", "beta", "delta", "epsilon"],
    ),
    (
        ["attributes.start_time ASC"],
        lambda s: ["alpha", "epsilon", "beta", *s.by_run_id("gamma", "delta")],
    ),
    (["start_time DESC"], lambda s: [*s.by_run_id("gamma", "delta"), "beta", "epsilon", "alpha"]),
    (["created ASC"], lambda s: ["alpha", "epsilon", "beta", *s.by_run_id("gamma", "delta")]),
    (["run_name"], lambda s: ["alpha", "beta", "delta", "epsilon", "gamma"]),
    (["attributes.run_name DESC"], lambda s: ["gamma", "epsilon", "delta", "beta", "alpha"]),
    (["status ASC"], lambda s: ["epsilon", "delta", "gamma", "beta", "alpha"]),
    (["attributes.end_time DESC"], lambda s: ["delta", "epsilon", "gamma", "beta", "alpha"]),
    (
        ["attributes.user_id ASC"],
        lambda s: [*s.by_run_id("gamma", "delta"), "beta", "epsilon", "alpha"],
    ),
]


def test_order_by(client: MlflowClient, seeded: Seeded) -> None:
    failures = []
    for order_by, expected in ORDERS:
        try:
            got = seeded.names(client.search_runs([seeded.exp_id], order_by=order_by))
        except Exception as e:  # report and go on
            failures.append(f"{order_by}: raised {e!r}"[:300])
            continue
        if got != expected(seeded):
            failures.append(f"{order_by}: expected {expected(seeded)}, got {got}")
    assert not failures, "\n".join(failures)


def test_pagination(client: MlflowClient, seeded: Seeded) -> None:
    for order_by in (None, ["metrics.acc DESC"], ["params.model ASC", "run_name DESC"]):
        full = seeded.names(
            client.search_runs([seeded.exp_id], order_by=order_by, run_view_type=ViewType.ALL)
        )
        assert len(full) == 6
        for page_size in (1, 2, 4):
            collected: list[str] = []
            token = None
            for _ in range(10):
                page = client.search_runs(
                    [seeded.exp_id],
                    order_by=order_by,
                    run_view_type=ViewType.ALL,
                    max_results=page_size,
                    page_token=token,
                )
                assert len(page) <= page_size
                collected += seeded.names(page)
                token = page.token
                if not token:
                    break
            assert collected == full, (order_by, page_size)


def test_pagination_raw(tracking_server: Server, seeded: Seeded) -> None:
    s = tracking_server
    body = s.ok_post("runs/search", {"experiment_ids": [seeded.exp_id], "max_results": 2})
    assert len(body["runs"]) == 2 and body["next_page_token"]
    body2 = s.ok_post(
        "runs/search",
        {
            "experiment_ids": [seeded.exp_id],
            "max_results": 2,
            "page_token": body["next_page_token"],
        },
    )
    assert len(body2["runs"]) == 2
    ids1 = {r["info"]["run_id"] for r in body["runs"]}
    assert not ids1 & {r["info"]["run_id"] for r in body2["runs"]}
    # The whole result in one page: no token.
    body = s.ok_post("runs/search", {"experiment_ids": [seeded.exp_id], "max_results": 100})
    assert len(body["runs"]) == 5 and not body.get("next_page_token")
    # Nothing matches: an empty object.
    assert (
        s.ok_post("runs/search", {"experiment_ids": [seeded.exp_id], "filter": "metrics.acc > 100"})
        == {}
    )


INVALID = [
    ("metrics.acc > 0.5 OR metrics.acc < 0.2", "Invalid clause(s) in filter string"),
    ("(metrics.acc > 0.5)", None),
    ("attributes.status IN ('FINISHED')", "Only ['run_id'] attributes support"),
    ("params.model > 'a'", "Invalid comparator '>'"),
    ("metrics.acc > 'x'", "Expected numeric value type for metric"),
    ("metrics.acc >", None),
    ("params.model = cnn", None),
    ("foo.bar = 'x'", "Invalid entity type 'foo'"),
    ("metrics.acc IS NULL", "IS NULL / IS NOT NULL is only supported for tags and params"),
    ("attributes.nope = 'x'", None),
    ("attributes.start_time = 'x'", None),
    ("run_id IN (1, 2)", None),
]


def test_invalid_filters(client: MlflowClient, seeded: Seeded) -> None:
    from mlflow.exceptions import MlflowException

    failures = []
    for filter_string, message in INVALID:
        try:
            client.search_runs([seeded.exp_id], filter_string)
            failures.append(f"{filter_string!r}: accepted")
        except MlflowException as e:
            if e.error_code != "INVALID_PARAMETER_VALUE" or (message and message not in str(e)):
                failures.append(f"{filter_string!r}: {e.error_code} {str(e)[:200]}")
    assert not failures, "\n".join(failures)


def test_invalid_search_arguments(client: MlflowClient, seeded: Seeded) -> None:
    for order_by in (["metrics.acc sideways"], ["foo.bar ASC"], ["attributes.nope"]):
        with raises_mlflow("INVALID_PARAMETER_VALUE"):
            client.search_runs([seeded.exp_id], order_by=order_by)
    with raises_mlflow("INVALID_PARAMETER_VALUE", match="max_results"):
        client.search_runs([seeded.exp_id], max_results=0)
    with raises_mlflow("INVALID_PARAMETER_VALUE"):
        client.search_runs([seeded.exp_id], page_token="garbage")
    with raises_mlflow("INVALID_PARAMETER_VALUE", match="max_results"):
        client.search_runs([seeded.exp_id], max_results=50001)
    assert client.search_runs([seeded.exp_id], max_results=50000) is not None


def test_duplicate_order_by_field(tracking_server: Server) -> None:
    r = tracking_server.post(
        "runs/search",
        {"experiment_ids": ["0"], "order_by": ["metrics.acc ASC", "metrics.acc DESC"]},
    )
    if tracking_server.kind == "reference":
        # Reference quirk: a plain MlflowException, i.e. 500 INTERNAL_ERROR ("`order_by`
        # contains duplicate fields: [...]"). A bad request must be a 4xx on evtrack.
        assert (r.status, r.error_code) == (500, "INTERNAL_ERROR"), r.body
        assert "duplicate fields" in r.body["message"]
    else:
        assert (r.status, r.error_code) == (400, "INVALID_PARAMETER_VALUE"), r.body


def test_search_runs_unknown_experiments(tracking_server: Server) -> None:
    for body in ({"experiment_ids": ["987654321"]}, {"experiment_ids": []}, {}):
        assert tracking_server.ok_post("runs/search", body) == {}


# --------------------------------------------------------------------------------------------
# mlflow.search_runs -> pandas
# --------------------------------------------------------------------------------------------

BASE_COLUMNS = ["run_id", "experiment_id", "status", "artifact_uri", "start_time", "end_time"]


def test_search_runs_dataframe(tracking_server: Server, seeded: Seeded) -> None:
    df = mlflow.search_runs(
        experiment_names=[seeded.exp_name, unique("does-not-exist")],
        filter_string="params.model != 'nope'",
        order_by=["params.model DESC"],
    )
    assert list(df.columns[:6]) == BASE_COLUMNS
    assert set(df.columns[6:]) == {
        "metrics.acc",
        "metrics.loss",
        "metrics.val loss",
        "params.model",
        "params.lr",
        "tags.team",
        "tags.env",
        "tags.mlflow.runName",
        "tags.my tag",
    }
    assert list(df["tags.mlflow.runName"]) == ["beta", "alpha", "gamma"]
    assert list(df["run_id"]) == [seeded.ids[n] for n in ("beta", "alpha", "gamma")]
    assert set(df["experiment_id"]) == {seeded.exp_id}
    assert str(df["start_time"].dtype).startswith("datetime64") and "UTC" in str(
        df["start_time"].dtype
    )
    assert df["start_time"].iloc[0] == pd.Timestamp(2000, unit="ms", tz="UTC")
    assert df["end_time"].isna().all()
    assert df["metrics.acc"].dtype == "float64"
    assert list(df["metrics.acc"].fillna(-1)) == [0.7, 0.9, -1]
    assert df["params.lr"].iloc[2] is None or pd.isna(df["params.lr"].iloc[2])

    empty = mlflow.search_runs(experiment_ids=[seeded.exp_id], filter_string="metrics.acc > 9")
    assert list(empty.columns) == BASE_COLUMNS and len(empty) == 0

    as_list = mlflow.search_runs(
        experiment_ids=[seeded.exp_id], output_format="list", order_by=["run_name ASC"]
    )
    assert [r.info.run_name for r in as_list] == ["alpha", "beta", "delta", "epsilon", "gamma"]


def _normalised_frame(df: pd.DataFrame, seeded: Seeded) -> pd.DataFrame:
    inv = {v: k for k, v in seeded.ids.items()}
    out = df.copy()
    out["run_id"] = out["run_id"].map(inv)
    out["experiment_id"] = "<exp>"
    out["artifact_uri"] = [
        re.sub(
            rf"^mlflow-artifacts:/{seeded.exp_id}/",
            "mlflow-artifacts:/<exp>/",
            uri.replace(rid, inv[rid]),
        )
        for uri, rid in zip(df["artifact_uri"], df["run_id"], strict=True)
    ]
    rest = sorted(out.columns[6:])  # column order beyond the base columns is not demanded
    return out[BASE_COLUMNS + rest].reset_index(drop=True)


DATAFRAME_QUERIES = [
    {"order_by": ["metrics.acc DESC"]},
    {"filter_string": "tags.team = 'vision'", "order_by": ["attributes.run_name ASC"]},
    {"filter_string": "metrics.acc >= 0.7 and params.lr != 'x'"},
    {"filter_string": "metrics.acc > 9"},
    {"run_view_type": ViewType.ALL, "order_by": ["params.model ASC"]},
]


def test_search_runs_dataframe_differential(server_pair: tuple[Server, Server]) -> None:
    """The same seed on both servers gives the same DataFrames (ids masked; the order of the
    metrics./params./tags. columns is not compared)."""
    frames: list[list[pd.DataFrame]] = []
    for server in server_pair:
        with using(server):
            seeded = seed_runs(MlflowClient(server.url))
            frames.append(
                [
                    _normalised_frame(
                        mlflow.search_runs(experiment_names=[seeded.exp_name], **kw), seeded
                    )
                    for kw in DATAFRAME_QUERIES
                ]
            )
    for kw, baseline, candidate in zip(DATAFRAME_QUERIES, *frames, strict=True):
        try:
            pd.testing.assert_frame_equal(baseline, candidate)
        except AssertionError as e:
            raise AssertionError(f"search_runs(**{kw}) differs: {e}") from None

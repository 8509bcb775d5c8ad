"""Unit tests of order_by parsing, page tokens, argument validation and the SQL's shape (no
database here; ``test_search_postgres.py`` executes the SQL)."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from evtrack.errors import ErrorCode, EvtrackError
from evtrack.search import (
    OrderKey,
    SqlQuery,
    compile_experiment_search,
    compile_run_search,
    decode_page_token,
    encode_page_token,
    next_page_token,
    parse_experiment_order_by,
    parse_run_order_by,
)


def _error(fn: Any, *args: Any) -> str:
    with pytest.raises(EvtrackError) as info:
        fn(*args)
    assert info.value.code is ErrorCode.INVALID_PARAMETER_VALUE
    return info.value.message


_TIEBREAK = [OrderKey("attribute", "start_time", False), OrderKey("attribute", "run_id", True)]

# --------------------------------------------------------------------------- runs order_by


@pytest.mark.parametrize(
    ("order_by", "expected"),
    [
        ([], _TIEBREAK),
        (["metrics.acc"], [OrderKey("metric", "acc", True), *_TIEBREAK]),
        (["metrics.acc DESC"], [OrderKey("metric", "acc", False), *_TIEBREAK]),
        (["metric.`a b` desc"], [OrderKey("metric", "a b", False), *_TIEBREAK]),
        (['params."a.b" asc'], [OrderKey("parameter", "a.b", True), *_TIEBREAK]),
        (["tags.mlflow.runName"], [OrderKey("tag", "mlflow.runName", True), *_TIEBREAK]),
        (["tags.'x y' DESC"], [OrderKey("tag", "x y", False), *_TIEBREAK]),
        (["attributes.run_name"], [OrderKey("attribute", "run_name", True), *_TIEBREAK]),
        (["  status   DESC  "], [OrderKey("attribute", "status", False), *_TIEBREAK]),
        # Ordering by start time (under any name) drops the implicit start_time tiebreaker.
        (
            ["start_time"],
            [OrderKey("attribute", "start_time", True), OrderKey("attribute", "run_id", True)],
        ),
        (
            ["created DESC"],
            [OrderKey("attribute", "start_time", False), OrderKey("attribute", "run_id", True)],
        ),
        (
            ["run_id DESC"],
            [OrderKey("attribute", "run_id", False), *_TIEBREAK],
        ),
        (
            ["metrics.a", "params.a"],
            [OrderKey("metric", "a", True), OrderKey("parameter", "a", True), *_TIEBREAK],
        ),
    ],
)
def test_run_order_by(order_by: list[str], expected: list[OrderKey]) -> None:
    assert parse_run_order_by(order_by) == expected


_ORDER_ATTRS = (
    "'{'Created', 'artifact_uri', 'created', 'end_time', 'run_id', 'run_name', 'start_time', "
    "'status', 'user_id'}'"
)


@pytest.mark.parametrize(
    ("order_by", "message"),
    [
        ([""], "Invalid order_by clause ''. Could not be parsed."),
        (
            ["metrics.m,params.p"],
            "Invalid order_by clause 'metrics.m,params.p'. Could not be parsed.",
        ),
        (
            ["metrics.m DESC NULLS"],
            "Invalid order_by clause 'metrics.m DESC NULLS'. Could not be parsed.",
        ),
        (["metrics.m ASCENDING"], "Invalid ordering key in order_by clause 'metrics.m ASCENDING'."),
        (["run name"], "Invalid ordering key in order_by clause 'run name'."),
        (
            ["`run name`"],
            f"Invalid attribute key 'run name' specified. Valid keys are {_ORDER_ATTRS}",
        ),
        (
            ["experiment_id"],
            f"Invalid attribute key 'experiment_id' specified. Valid keys are {_ORDER_ATTRS}",
        ),
        (["datasets.name"], "Invalid identifier type 'dataset'"),
        (
            ["foo.bar"],
            "Invalid entity type 'foo'. Valid values are "
            "['metric', 'parameter', 'tag', 'attribute', 'dataset']",
        ),
        (
            ["metrics.m", "metrics.m DESC"],
            "`order_by` contains duplicate fields: ['metrics.m', 'metrics.m DESC']",
        ),
        (
            ["created", "start_time"],
            "`order_by` contains duplicate fields: ['created', 'start_time']",
        ),
    ],
)
def test_run_order_by_errors(order_by: list[str], message: str) -> None:
    assert _error(parse_run_order_by, order_by) == message


def test_run_order_by_agrees_with_mlflow_parser() -> None:
    from mlflow.utils.search_utils import SearchUtils

    for item in [
        "metrics.acc",
        "metrics.acc DESC",
        "metrics.`a b` desc",
        'params."a.b" asc',
        "tags.mlflow.runName",
        "attributes.run_name DESC",
        "created",
        "attr.end_time ASC",
    ]:
        kind, key, ascending = SearchUtils.parse_order_by_for_search_runs(item)
        key = SearchUtils.translate_key_alias(key)
        assert parse_run_order_by([item])[0] == OrderKey(kind, key, ascending), item


# --------------------------------------------------------------------------- experiments order_by


def test_experiment_order_by_default_and_tiebreak() -> None:
    assert parse_experiment_order_by([]) == [
        OrderKey("attribute", "creation_time", False),
        OrderKey("attribute", "experiment_id", True),
    ]
    # MLflow's tiebreaker is experiment_id DESCENDING.
    assert parse_experiment_order_by(["name"]) == [
        OrderKey("attribute", "name", True),
        OrderKey("attribute", "experiment_id", False),
    ]
    assert parse_experiment_order_by(["attribute.last_update_time DESC", "experiment_id"]) == [
        OrderKey("attribute", "last_update_time", False),
        OrderKey("attribute", "experiment_id", True),
    ]


@pytest.mark.parametrize(
    ("order_by", "message"),
    [
        (["tags.k"], "Invalid order_by entity: tag"),
        (
            ["attributes.name"],
            "Invalid entity type 'attributes'. Valid entity types are ('attribute', 'tag', 'tags')",
        ),
        (
            ["metrics.k"],
            "Invalid entity type 'metrics'. Valid entity types are ('attribute', 'tag', 'tags')",
        ),
        (
            ["artifact_location"],
            "Invalid attribute key 'artifact_location' specified. Valid keys are "
            "'{'creation_time', 'experiment_id', 'last_update_time', 'name'}'",
        ),
        (["name sideways"], "Invalid ordering key in order_by clause 'name sideways'."),
    ],
)
def test_experiment_order_by_errors(order_by: list[str], message: str) -> None:
    assert _error(parse_experiment_order_by, order_by) == message


# --------------------------------------------------------------------------- page tokens


def test_page_token_round_trip_and_reference_format() -> None:
    assert encode_page_token(1) == "eyJvZmZzZXQiOiAxfQ=="  # byte-identical to MLflow's
    for offset in (1, 7, 50000, 2**40):
        assert decode_page_token(encode_page_token(offset)) == offset
    assert decode_page_token(None) == 0
    assert decode_page_token("") == 0
    # MLflow accepts a numeric string offset.
    assert decode_page_token(base64.b64encode(b'{"offset": "3"}').decode()) == 3


def test_page_token_from_mlflow_decodes() -> None:
    from mlflow.utils.search_utils import SearchUtils

    assert decode_page_token(SearchUtils.create_page_token(42).decode()) == 42
    assert SearchUtils.parse_start_offset_from_page_token(encode_page_token(42)) == 42


def _token(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


@pytest.mark.parametrize(
    ("token", "message"),
    [
        ("abc", "Invalid page token, could not base64-decode"),
        ("é", "Invalid page token, could not base64-decode"),
        (_token(b"not json"), "Invalid page token, decoded value=b'not json'"),
        (_token(b"{}"), "Invalid page token, parsed value={}"),
        (_token(b"[]"), "Invalid page token, parsed value=[]"),
        (_token(b'{"offset": 0}'), "Invalid page token, parsed value={'offset': 0}"),
        (_token(b'{"offset": -1}'), "Invalid page token, parsed value={'offset': -1}"),
        (_token(b'{"offset": 1.5}'), "Invalid page token, parsed value={'offset': 1.5}"),
        (_token(b'{"offset": true}'), "Invalid page token, parsed value={'offset': True}"),
        (_token(b'{"offset": "x"}'), "Invalid page token, not stringable x"),
        (
            _token(b'{"offset": 99999999999999999999}'),
            "Invalid page token, parsed value={'offset': 99999999999999999999}",
        ),
    ],
)
def test_invalid_page_tokens(token: str, message: str) -> None:
    assert _error(decode_page_token, token) == message


def test_next_page_token() -> None:
    query = SqlQuery("SELECT 1", (), offset=10, limit=5)
    assert next_page_token(query, 6) == encode_page_token(15)
    assert next_page_token(query, 5) is None
    assert next_page_token(query, 0) is None


# --------------------------------------------------------------------------- argument checks


def _runs(**kwargs: Any) -> SqlQuery:
    args: dict[str, Any] = {
        "experiment_ids": [1],
        "view_type": "ACTIVE_ONLY",
        "filter_string": None,
        "order_by": [],
        "max_results": 1000,
        "page_token": None,
    }
    args.update(kwargs)
    return compile_run_search(**args)


def _experiments(**kwargs: Any) -> SqlQuery:
    args: dict[str, Any] = {
        "view_type": "ACTIVE_ONLY",
        "filter_string": None,
        "order_by": [],
        "max_results": 1000,
        "page_token": None,
    }
    args.update(kwargs)
    return compile_experiment_search(**args)


def _message(fn: Any, **kwargs: Any) -> str:
    with pytest.raises(EvtrackError) as info:
        fn(**kwargs)
    assert info.value.code is ErrorCode.INVALID_PARAMETER_VALUE
    return info.value.message


def test_max_results_limits() -> None:
    # runs: the REST handler's wording above 50000, the store's below 1 (both captured).
    assert _message(_runs, max_results=123456789) == (
        "Invalid value 123456789 for parameter 'max_results' supplied:  Hint: Value was of "
        "type 'int'. See the API docs for more information about request parameters."
    )
    assert _message(_runs, max_results=0) == (
        "Invalid value 0 for parameter 'max_results' supplied. It must be a positive integer"
    )
    assert _message(_experiments, max_results=50001) == (
        "Invalid value 50001 for parameter 'max_results' supplied. It must be at most 50000"
    )
    assert _message(_experiments, max_results=-5) == (
        "Invalid value -5 for parameter 'max_results' supplied. It must be a positive integer"
    )
    assert _runs(max_results=50000).limit == 50000
    assert _experiments(max_results=1).limit == 1


def test_view_types() -> None:
    assert _runs(view_type="ALL").args[1:2] != ("active",)
    assert "deleted" in _runs(view_type="DELETED_ONLY").args
    assert "active" in _experiments(view_type="active_only").args
    assert "deleted" in _experiments(view_type="2").args
    assert _runs(view_type="3").args == _runs(view_type="ALL").args
    assert _message(_runs, view_type="BOGUS") == (
        "Invalid view_type 'BOGUS'. Valid values are ['ACTIVE_ONLY', 'DELETED_ONLY', 'ALL']"
    )


def test_query_shape_and_paging_fields() -> None:
    query = _runs(max_results=7, page_token=encode_page_token(14))
    assert (query.offset, query.limit) == (14, 7)
    assert query.args[-2:] == (8, 14)  # LIMIT limit+1 OFFSET offset
    assert query.sql.rstrip().endswith(
        f"LIMIT ${len(query.args) - 1}::bigint OFFSET ${len(query.args)}::bigint"
    )


@pytest.mark.parametrize(
    ("filter_string", "order_by", "head", "tail"),
    [
        # A metric first: the runs with a number come from the (key, value) index in order...
        (None, ["metrics.acc DESC"], True, True),
        # ...and a filter on that metric itself rules out NaN and missing: no tail at all.
        ("metrics.acc > 0.5", ["metrics.acc DESC"], True, False),
        ("metrics.acc = 0.5 AND params.p = 'x'", ["metrics.acc"], True, False),
        # != is true for NaN (MLflow), so NaN runs may still follow the numbers.
        ("metrics.acc != 0.5", ["metrics.acc DESC"], True, True),
        # A filter on another key does not help.
        ("metrics.loss > 0.5", ["metrics.acc DESC"], True, True),
        ("params.p IS NOT NULL", ["params.p"], True, False),
        ("tags.t LIKE 'a%'", ["tags.t DESC"], True, False),
        # IS NULL on the first key: only runs without it match, in the single-query shape.
        ("params.p IS NULL", ["params.p"], False, False),
        # Attributes first: the single-query shape.
        (None, [], False, False),
        ("metrics.acc > 0.5", ["start_time DESC", "metrics.acc"], False, False),
    ],
)
def test_run_query_shapes(
    filter_string: str | None, order_by: list[str], head: bool, tail: bool
) -> None:
    query = _runs(filter_string=filter_string, order_by=order_by)
    lines = query.sql.split("\n")
    # The head joins the first key (inner join); it is the whole query when there is no tail.
    assert lines[2].startswith("JOIN rm_runs.") == head
    assert lines[0].startswith("WITH head AS MATERIALIZED (") == tail
    assert ("UNION ALL" in lines) == tail
    lead_table = {"metrics": "latest_metrics", "params": "params", "tags": "tags"}.get(
        order_by[0].split(".")[0] if order_by else ""
    )
    if head and filter_string and filter_string.startswith(order_by[0].split()[0]):
        # The clause on the lead key is tested on its joined row, not by a second probe.
        assert f"FROM rm_runs.{lead_table} AS f" not in query.sql
    assert query.args[-2:] == (1001, 0)
    assert query.sql.rstrip().endswith(
        f"LIMIT ${len(query.args) - 1}::bigint OFFSET ${len(query.args)}::bigint"
    )


def test_run_query_exposes_its_order() -> None:
    """Callers select from the query (to render the runs) and re-apply its order by column."""
    query = _runs(order_by=["metrics.acc DESC", "params.p"])
    assert query.sql.startswith("WITH head")
    assert "AS s5" in query.sql and "AS s6" not in query.sql
    # metric rank (number / NaN / missing), its value, the param, then the tiebreakers
    assert query.order_by == (
        's1 ASC, s2 DESC, s3 COLLATE "C" ASC NULLS LAST, s4 DESC NULLS LAST, '
        's5 COLLATE "C" ASC NULLS LAST'
    )
    plain = _runs()
    assert plain.order_by == 's1 DESC NULLS LAST, s2 COLLATE "C" ASC NULLS LAST'
    assert plain.sql.startswith("SELECT r.run_id, r.start_time AS s1, r.run_id AS s2\n")


def test_one_experiment_is_an_equality() -> None:
    """``experiment_id = $1`` lets an index return one experiment's runs in order."""
    one = _runs(experiment_ids=[3])
    assert "r.experiment_id = $1::bigint" in one.sql
    assert one.args[0] == 3
    two = _runs(experiment_ids=[3, 4])
    assert "r.experiment_id = ANY($1::bigint[])" in two.sql
    assert two.args[0] == [3, 4]


def test_user_text_never_reaches_the_sql() -> None:
    marker = "zz_marker'; DROP TABLE rm_runs.runs; --"
    query = _runs(
        filter_string=(
            f'tags.`{marker}` = "{marker}" AND params."{marker}" LIKE "{marker}" '
            f'AND metrics.`{marker}` > 1 AND run_id IN ("{marker}") '
            f'AND datasets.name ILIKE "{marker}"'
        ),
        order_by=[f"tags.`{marker}` DESC", f"metrics.`{marker}`", f"params.`{marker}`"],
    )
    assert "zz_marker" not in query.sql
    assert marker in query.args
    exp_query = _experiments(filter_string=f'tags.`{marker}` = "{marker}" AND name != "{marker}"')
    assert "zz_marker" not in exp_query.sql


def test_validation_order_matches_mlflow() -> None:
    # max_results is checked before the filter, the filter before order_by and the token.
    assert _message(_runs, max_results=0, filter_string="bad").startswith("Invalid value 0")
    assert _message(_runs, filter_string="x.y = 1", order_by=["bad bad bad"]).startswith(
        "Invalid entity type 'x'"
    )
    assert _message(_runs, order_by=["foo"], page_token="abc").startswith(
        "Invalid attribute key 'foo'"
    )

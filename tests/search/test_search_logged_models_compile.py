"""Unit tests of the logged-model search: filter, datasets and ``order_by`` parsing, page tokens,
MLflow's error messages and the SQL's shape; plus a differential check of accepted/rejected
inputs against MLflow's SQL tracking store (SQLite, no Postgres needed)."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from _registry_support import RegistryReference

from evtrack.errors import ErrorCode, EvtrackError
from evtrack.search import (
    SEARCH_LOGGED_MODEL_MAX_PAGE_SIZE,
    Comparison,
    DatasetFilter,
    LoggedModelOrder,
    LoggedModelTokenScope,
    SqlQuery,
    compile_logged_model_search,
    decode_logged_model_page_token,
    encode_logged_model_page_token,
    next_page_token,
    parse_datasets,
    parse_logged_model_filter,
    parse_logged_model_order_by,
)


def _error(fn: Any, *args: Any) -> str:
    with pytest.raises(EvtrackError) as info:
        fn(*args)
    assert info.value.code is ErrorCode.INVALID_PARAMETER_VALUE
    assert info.value.http_status == 400
    return info.value.message


# --------------------------------------------------------------------------- filter


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("name = 'm'", [Comparison("attribute", "name", "=", "m")]),
        ('name = "m"', [Comparison("attribute", "name", "=", "m")]),
        ("name = m", [Comparison("attribute", "name", "=", "m")]),
        ("name = 5", [Comparison("attribute", "name", "=", "5")]),
        ("`name` != 'm'", [Comparison("attribute", "name", "!=", "m")]),
        ("attributes.name LIKE 'm%'", [Comparison("attribute", "name", "LIKE", "m%")]),
        (
            "attributes.model_id IN ('m-1', 'm-2')",
            [Comparison("attribute", "model_id", "IN", ("m-1", "m-2"))],
        ),
        ("model_id in ('m-1')", [Comparison("attribute", "model_id", "IN", ("m-1",))]),
        ("status NOT IN ('x')", [Comparison("attribute", "status", "NOT IN", ("x",))]),
        ("model_type ilike 'SK%'", [Comparison("attribute", "model_type", "ILIKE", "SK%")]),
        ("source_run_id = 'r'", [Comparison("attribute", "source_run_id", "=", "r")]),
        ("creation_time > 5", [Comparison("attribute", "creation_timestamp", ">", 5)]),
        ("creation_timestamp <= 5.5", [Comparison("attribute", "creation_timestamp", "<=", 5.5)]),
        ("last_updated_time != 1", [Comparison("attribute", "last_updated_timestamp", "!=", 1)]),
        (
            "last_updated_timestamp >= 1e3",
            [Comparison("attribute", "last_updated_timestamp", ">=", 1000.0)],
        ),
        ("metrics.acc > 0.5", [Comparison("metric", "acc", ">", 0.5)]),
        ("metrics.`a b` = -1", [Comparison("metric", "a b", "=", -1)]),
        ("metrics.a.b != 2", [Comparison("metric", "a.b", "!=", 2)]),
        ("params.lr = '0.1'", [Comparison("parameter", "lr", "=", "0.1")]),
        ("params.lr IN ('a', 'b')", [Comparison("parameter", "lr", "IN", ("a", "b"))]),
        ("tags.t NOT IN ('a')", [Comparison("tag", "t", "NOT IN", ("a",))]),
        ("tags.mlflow.user = 'u'", [Comparison("tag", "mlflow.user", "=", "u")]),
        ("tags.t LIKE 'x%'", [Comparison("tag", "t", "LIKE", "x%")]),
        (
            "name = 'a' and metrics.x < 0 AND AND",
            [Comparison("attribute", "name", "=", "a"), Comparison("metric", "x", "<", 0)],
        ),
        ("name = 'it''s'", [Comparison("attribute", "name", "=", "it''s")]),
        ("", []),
        (None, []),
    ],
)
def test_filter_accepted(text: str | None, expected: list[Comparison]) -> None:
    assert parse_logged_model_filter(text) == expected


_SHAPE = (
    "Expected a list of comparisons separated by 'AND' "
    "(e.g. 'metrics.loss > 0.1 AND params.lr = 0.01')."
)
_ATTRS = (
    "'{'creation_time', 'creation_timestamp', 'last_updated_time', 'last_updated_timestamp', "
    "'model_id', 'model_type', 'name', 'source_run_id', 'status'}'"
)
_NUMERIC_OPS = "('<', '<=', '>', '>=', '=', '!=')"
_STRING_OPS = "('=', '!=', 'LIKE', 'ILIKE', 'IN', 'NOT IN')"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "name = 'a' OR name = 'b'",
            f"Invalid filter string: \"name = 'a' OR name = 'b'\". {_SHAPE}",
        ),
        ("(name = 'a')", f"Invalid filter string: \"(name = 'a')\". {_SHAPE}"),
        ("name IN 'a'", f"Invalid filter string: \"name IN 'a'\". {_SHAPE}"),
        (" ", "Invalid filter string: ' '. Expected a single SQL expression."),
        (
            "tags.t IS NULL",
            "Invalid comparison: tags.tIS NULL. Expected a comparison with 3 tokens.",
        ),
        (
            "tags.t is not null",
            "Invalid comparison: tags.tIS NOT NULL. Expected a comparison with 3 tokens.",
        ),
        (
            "attribute.name = 'a'",
            "Invalid entity type: 'attribute'. Expected one of "
            "['attributes', 'metrics', 'params', 'tags'].",
        ),
        (
            "metric.acc > 1",
            "Invalid entity type: 'metric'. Expected one of "
            "['attributes', 'metrics', 'params', 'tags'].",
        ),
        ("foo = 'x'", f"Invalid attribute key 'foo' specified. Valid keys are {_ATTRS}"),
        (
            "experiment_id = '1'",
            f"Invalid attribute key 'experiment_id' specified. Valid keys are {_ATTRS}",
        ),
        (
            "metrics.acc LIKE 'a'",
            f"Invalid comparison operator for metrics.acc: 'LIKE'. Expected one of {_NUMERIC_OPS}.",
        ),
        (
            "creation_time LIKE '5'",
            "Invalid comparison operator for attributes.creation_timestamp_ms: 'LIKE'. "
            f"Expected one of {_NUMERIC_OPS}.",
        ),
        (
            "name == 'a'",
            "Invalid comparison operator for attributes.name: '=='. "
            f"Expected one of {_STRING_OPS}.",
        ),
        (
            "params.p > 'a'",
            f"Invalid comparison operator for params.p: '>'. Expected one of {_STRING_OPS}.",
        ),
        (
            "tags.t NOT LIKE 'a'",
            f"Invalid comparison operator for tags.t: 'NOT LIKE'. Expected one of {_STRING_OPS}.",
        ),
        ("metrics.acc > '1'", "Expected numeric value type for metric. Found '1'"),
        ("metrics.acc != nan", "Expected numeric value type for metric. Found nan"),
        (
            "creation_time = '5'",
            "Expected numeric value type for numeric attribute: creation_timestamp. Found '5'",
        ),
        (
            "name IN ()",
            "While parsing a list in the query, expected a non-empty list of string values, "
            "but got empty list",
        ),
        (
            "name IN (1, 2)",
            "While parsing a list in the query, expected string value, punctuation, or "
            "whitespace, but got different type in list: (1, 2)",
        ),
        ("name = ('a', 'b')", "Invalid comparator '=' for a list of values. Use 'IN' or 'NOT IN'."),
    ],
)
def test_filter_errors(text: str, message: str) -> None:
    assert _error(parse_logged_model_filter, text) == message


# --------------------------------------------------------------------------- datasets, order_by


def test_datasets() -> None:
    assert parse_datasets(None) == []
    assert parse_datasets(
        [
            {"dataset_name": "a"},
            {"dataset_name": "b", "dataset_digest": None},
            {"dataset_name": "c", "dataset_digest": ""},
            {"dataset_name": "d", "dataset_digest": "x"},
        ]
    ) == [
        DatasetFilter("a", None),
        DatasetFilter("b", None),
        DatasetFilter("c", None),
        DatasetFilter("d", "x"),
    ]
    for bad in ([{"dataset_digest": "x"}], [{"dataset_name": ""}], [{"dataset_name": None}]):
        assert _error(parse_datasets, bad) == (
            "`dataset_name` in the `datasets` clause must be specified."
        )
    assert _error(parse_datasets, ["train"]) == "`datasets` must be a list of dictionaries."


_TIEBREAK = [
    LoggedModelOrder("attribute", "creation_timestamp", False),
    LoggedModelOrder("attribute", "model_id", True),
]


@pytest.mark.parametrize(
    ("order_by", "expected"),
    [
        (None, _TIEBREAK),
        ([], _TIEBREAK),
        ([{"field_name": "name"}], [LoggedModelOrder("attribute", "name", True), *_TIEBREAK]),
        (
            [{"field_name": "creation_time", "ascending": False}],
            [_TIEBREAK[0], _TIEBREAK[1]],
        ),
        (
            [{"field_name": "creation_timestamp", "ascending": True, "dataset_name": None}],
            [LoggedModelOrder("attribute", "creation_timestamp", True), _TIEBREAK[1]],
        ),
        (
            [{"field_name": "last_updated_time", "ascending": None}],
            [LoggedModelOrder("attribute", "last_updated_timestamp", True), *_TIEBREAK],
        ),
        (
            [{"field_name": "model_id", "ascending": False}],
            [LoggedModelOrder("attribute", "model_id", False), _TIEBREAK[0]],
        ),
        (
            [{"field_name": "metrics.acc", "ascending": False, "dataset_name": "d"}],
            [LoggedModelOrder("metric", "acc", False, "d", None), *_TIEBREAK],
        ),
        (
            [
                {
                    "field_name": "metrics.a.b",
                    "dataset_name": "d",
                    "dataset_digest": "x",
                }
            ],
            [LoggedModelOrder("metric", "a.b", True, "d", "x"), *_TIEBREAK],
        ),
        (  # dataset fields only matter for metrics
            [{"field_name": "status", "dataset_name": "d"}],
            [LoggedModelOrder("attribute", "status", True), *_TIEBREAK],
        ),
    ],
)
def test_order_by(order_by: list[dict[str, Any]] | None, expected: list[LoggedModelOrder]) -> None:
    assert parse_logged_model_order_by(order_by) == expected


@pytest.mark.parametrize(
    ("order_by", "message"),
    [
        ([{"field_name": "foo"}], "Invalid order by field name: foo"),
        ([{"field_name": ""}], "Invalid order by field name: "),
        ([{"field_name": " name"}], "Invalid order by field name:  name"),
        (
            [{"field_name": "params.lr"}],
            "Invalid order by field name: params.lr. Only metrics are supported.",
        ),
        ([{"ascending": True}], "`field_name` in the `order_by` clause must be specified."),
        (["name"], "`order_by` must be a list of dictionaries."),
        (
            [{"field_name": "name", "ascending": "yes"}],
            "Value of `ascending` in the `order_by` clause must be a boolean, got "
            "<class 'str'> for field name.",
        ),
        (
            [{"field_name": "metrics.a", "dataset_digest": "x"}],
            "`dataset_digest` can only be specified if `dataset_name` is also specified.",
        ),
    ],
)
def test_order_by_errors(order_by: list[Any], message: str) -> None:
    assert _error(parse_logged_model_order_by, order_by) == message


# --------------------------------------------------------------------------- page tokens

_SCOPE = LoggedModelTokenScope(("1", "2"), "name = 'x'", None)


def test_token_format_is_mlflows() -> None:
    from mlflow.utils.search_utils import SearchLoggedModelsPaginationToken

    order = (
        {"field_name": "name", "ascending": True, "dataset_name": None, "dataset_digest": None},
    )
    scope = LoggedModelTokenScope(("1",), None, order)
    theirs = SearchLoggedModelsPaginationToken(
        experiment_ids=["1"], filter_string=None, order_by=[dict(order[0])], offset=7
    ).encode()
    assert encode_logged_model_page_token(scope, 7) == theirs
    assert decode_logged_model_page_token(theirs, scope) == 7
    decoded = SearchLoggedModelsPaginationToken.decode(encode_logged_model_page_token(_SCOPE, 3))
    decoded.validate(["1", "2"], "name = 'x'", None)
    assert decoded.offset == 3


def _token(payload: object) -> str:
    return base64.b64encode(json.dumps(payload).encode()).decode()


_GOOD = {"experiment_ids": ["1", "2"], "filter_string": "name = 'x'", "order_by": None}


@pytest.mark.parametrize(
    ("token", "message"),
    [
        ("abc", "Invalid page token: abc. Incorrect padding"),
        ("eHg=", "Invalid page token: eHg=. Expecting value: line 1 column 1 (char 0)"),
        (
            "/w==",
            "Invalid page token: /w==. 'utf-8' codec can't decode byte 0xff in position 0: "
            "invalid start byte",
        ),
        (_token([1]), f"Invalid page token: {_token([1])}. Expected a JSON object."),
        (
            _token({**_GOOD, "experiment_ids": ["1"]}),
            "Experiment IDs in the page token do not match the requested experiment IDs. "
            "Expected: ['1', '2']. Found: ['1']",
        ),
        (
            _token({"offset": 1}),
            "Experiment IDs in the page token do not match the requested experiment IDs. "
            "Expected: ['1', '2']. Found: None",
        ),
        (
            _token({**_GOOD, "filter_string": ""}),
            "Filter string in the page token does not match the requested filter string. "
            "Expected: name = 'x'. Found: None",
        ),
        (
            _token({**_GOOD, "order_by": [{"field_name": "name"}]}),
            "Order by in the page token does not match the requested order by. "
            "Expected: None. Found: [{'field_name': 'name'}]",
        ),
        (
            _token({**_GOOD, "offset": -1}),
            f"Invalid page token: {_token({**_GOOD, 'offset': -1})}. Invalid offset -1.",
        ),
        (
            _token({**_GOOD, "offset": "3"}),
            f"Invalid page token: {_token({**_GOOD, 'offset': '3'})}. Invalid offset '3'.",
        ),
        (
            _token({**_GOOD, "offset": True}),
            f"Invalid page token: {_token({**_GOOD, 'offset': True})}. Invalid offset True.",
        ),
    ],
)
def test_invalid_page_tokens(token: str, message: str) -> None:
    assert _error(decode_logged_model_page_token, token, _SCOPE) == message


def test_page_token_round_trip() -> None:
    assert decode_logged_model_page_token(None, _SCOPE) == 0
    assert decode_logged_model_page_token("", _SCOPE) == 0
    for offset in (0, 1, 50, 2**40):
        token = encode_logged_model_page_token(_SCOPE, offset)
        assert decode_logged_model_page_token(token, _SCOPE) == offset
    # A missing offset is the first page, as in MLflow.
    assert decode_logged_model_page_token(_token(_GOOD), _SCOPE) == 0


# --------------------------------------------------------------------------- compile


def _lm(**kwargs: Any) -> SqlQuery:
    args: dict[str, Any] = {
        "experiment_ids": ["1"],
        "filter_string": None,
        "datasets": None,
        "order_by": None,
        "max_results": None,
        "page_token": None,
    }
    args.update(kwargs)
    return compile_logged_model_search(**args)


def _message(**kwargs: Any) -> str:
    with pytest.raises(EvtrackError) as info:
        _lm(**kwargs)
    assert info.value.code is ErrorCode.INVALID_PARAMETER_VALUE
    return info.value.message


def test_max_results() -> None:
    assert _lm().limit == 50
    assert _lm(max_results=7).limit == 7
    assert _lm(max_results=SEARCH_LOGGED_MODEL_MAX_PAGE_SIZE + 1).limit == (
        SEARCH_LOGGED_MODEL_MAX_PAGE_SIZE
    )
    assert _message(max_results=0) == (
        "Invalid value for max_results. It must be a positive integer, but got 0"
    )


def test_experiment_ids() -> None:
    assert _lm(experiment_ids=["1", 2]).args[0] == [1, 2]
    assert _lm(experiment_ids=[]).args[0] == []
    for bad in ("x", "1.5", "99999999999999999999"):
        assert _message(experiment_ids=[bad]) == (
            f"Invalid experiment ID '{bad}'. Experiment ID must be a valid integer."
        )


def test_next_page_token_carries_the_scope() -> None:
    order = [{"field_name": "metrics.acc", "ascending": False, "dataset_name": ""}]
    query = _lm(experiment_ids=[1], filter_string="", order_by=order, max_results=2)
    token = next_page_token(query, 3)
    assert token is not None
    assert json.loads(base64.b64decode(token)) == {
        "experiment_ids": ["1"],
        "filter_string": None,
        "order_by": [
            {
                "field_name": "metrics.acc",
                "ascending": False,
                "dataset_name": None,
                "dataset_digest": None,
            }
        ],
        "offset": 2,
    }
    assert next_page_token(query, 2) is None
    following = _lm(experiment_ids=["1"], order_by=order, max_results=2, page_token=token)
    assert (following.offset, following.limit) == (2, 2)


def test_validation_order_matches_mlflow() -> None:
    # datasets, then the token, then the filter, then experiment ids, then order_by.
    token = encode_logged_model_page_token(LoggedModelTokenScope(("9",), None, None), 1)
    assert _message(datasets=[{}], page_token=token).startswith("`dataset_name`")
    assert _message(page_token=token, filter_string="bad").startswith("Experiment IDs")
    assert _message(filter_string="foo = 'x'", experiment_ids=["x"]).startswith(
        "Invalid attribute key"
    )
    assert _message(experiment_ids=["x"], order_by=[{"field_name": "foo"}]).startswith(
        "Invalid experiment ID"
    )


def test_user_text_never_reaches_the_sql() -> None:
    marker = "zz_marker'; DROP TABLE x; --"
    query = _lm(
        filter_string=(
            f'tags.`{marker}` = "{marker}" AND params.`{marker}` IN ("{marker}") '
            f'AND metrics.`{marker}` > 1 AND name LIKE "{marker}"'
        ),
        datasets=[{"dataset_name": marker, "dataset_digest": marker}],
        order_by=[{"field_name": f"metrics.{marker}", "dataset_name": marker}],
    )
    assert "zz_marker" not in query.sql
    assert marker in query.args


# --------------------------------------------------------------------------- vs MLflow's store

# Inputs where evtrack deliberately differs from MLflow's SQL store. That store filters on any
# column of its table (``getattr``), so it also takes experiment_id, artifact_location, ...;
# evtrack takes the documented attributes (``SearchLoggedModelsUtils``).
_ONLY_MLFLOW_ACCEPTS = {
    "name IN ()",
    "name IN (1, 2)",
    "metrics.acc != nan",
    "experiment_id = '1'",
}
_ONLY_EVTRACK_ACCEPTS = {"last_updated_time < 5"}  # an alias MLflow's file store knows

_CORPUS = [
    "name = 'a'",
    'name = "a"',
    "name = a",
    "name = 5",
    "name IN ('a', 'b')",
    "name in ('a')",
    "name NOT IN ('a')",
    "name IN 'a'",
    "name = ('a', 'b')",
    "name IN (1, 2)",
    "name IN ()",
    "model_id IN ('m-1')",
    "attributes.model_id IN ('m-1')",
    "attribute.name = 'a'",
    "metric.acc > 1",
    "metrics.acc > 1",
    "metrics.acc > '1'",
    "metrics.acc LIKE 'a'",
    "metrics.`a b` > 1",
    "metrics.a.b > 1",
    "params.lr = 'x'",
    "params.lr LIKE 'x%'",
    "params.lr IN ('a')",
    "params.lr > 'a'",
    "tags.t != 'x'",
    "tags.t IS NULL",
    "tags.t IS NOT NULL",
    "creation_time > 5",
    "creation_timestamp >= 5.5",
    "last_updated_timestamp < 1e3",
    "last_updated_time < 5",
    "creation_time LIKE '5'",
    "creation_time = '5'",
    "status = 'READY'",
    "source_run_id = 'abc'",
    "model_type = 'agent'",
    "foo = 'x'",
    "experiment_id = '1'",
    "name = 'a' OR name = 'b'",
    "(name = 'a')",
    "name = 'a' AND",
    "AND name = 'a'",
    "name = 'a' name = 'b'",
    " ",
    "name == 'a'",
    "name <> 'a'",
    "name RLIKE 'a'",
    "name NOT LIKE 'a'",
    "`name` = 'a'",
    "metrics.acc != nan",
    "metrics.acc > -1",
    "name LIKE 'a%' and metrics.x < 0",
]


def _reference_error(fn: Any, *args: Any) -> str | None:
    """MLflow's INVALID_PARAMETER_VALUE message, "" for any other failure, None on success."""
    from mlflow.exceptions import MlflowException

    try:
        fn(*args)
    except MlflowException as e:
        return e.message if e.error_code == "INVALID_PARAMETER_VALUE" else ""
    except Exception:
        return ""
    return None


@pytest.mark.parametrize("text", _CORPUS)
def test_filter_agrees_with_mlflow(registry_reference: RegistryReference, text: str) -> None:
    reference = _reference_error(registry_reference.tracking.search_logged_models, ["1"], text)
    if text in _ONLY_MLFLOW_ACCEPTS:
        assert reference is None
        _message(filter_string=text)
        return
    if text in _ONLY_EVTRACK_ACCEPTS:
        assert reference
        _lm(filter_string=text)
        return
    if reference is None:
        _lm(filter_string=text)
        return
    message = _message(filter_string=text)
    if reference:  # MLflow's internal errors are 400s here, with evtrack's own wording
        assert message == reference


@pytest.mark.parametrize(
    "order_by",
    [
        [{"field_name": "name"}],
        [{"field_name": "creation_time", "ascending": False}],
        [{"field_name": "creation_timestamp"}],
        [{"field_name": "last_updated_timestamp"}],
        [{"field_name": "model_id"}],
        [{"field_name": "status"}],
        [{"field_name": "metrics.acc", "dataset_name": "d"}],
        [{"field_name": "foo"}],
        [{"field_name": ""}],
        [{"field_name": "params.lr"}],
        [{"field_name": "tags.t"}],
    ],
)
def test_order_by_agrees_with_mlflow(
    registry_reference: RegistryReference, order_by: list[dict[str, Any]]
) -> None:
    search = registry_reference.tracking.search_logged_models
    reference = _reference_error(search, ["1"], None, None, 10, order_by)
    if reference is None:
        _lm(order_by=order_by)
    else:
        assert _message(order_by=order_by) == reference

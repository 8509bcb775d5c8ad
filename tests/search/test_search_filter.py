"""Unit tests of the filter parser: accepted shapes, MLflow's error messages, and a differential
check against MLflow's own parser on a corpus of good and bad strings."""

from __future__ import annotations

from typing import Any

import pytest

from evtrack.errors import ErrorCode, EvtrackError
from evtrack.search import Comparison, parse_experiment_filter, parse_run_filter


def _error(fn: Any, *args: Any) -> str:
    with pytest.raises(EvtrackError) as info:
        fn(*args)
    assert info.value.code is ErrorCode.INVALID_PARAMETER_VALUE
    assert info.value.http_status == 400
    return info.value.message


# --------------------------------------------------------------------------- runs: accepted


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("metrics.acc > 0.5", [Comparison("metric", "acc", ">", 0.5)]),
        ("metric.acc>=-1", [Comparison("metric", "acc", ">=", -1.0)]),
        ("metrics.a > 1e5", [Comparison("metric", "a", ">", 100000.0)]),
        ("metrics.a < .5", [Comparison("metric", "a", "<", 0.5)]),
        ("metrics.a != 5.", [Comparison("metric", "a", "!=", 5.0)]),
        ("metrics.`my metric` <= 2", [Comparison("metric", "my metric", "<=", 2.0)]),
        ('metrics."a.b" = 1', [Comparison("metric", "a.b", "=", 1.0)]),
        ("params.lr = '0.1'", [Comparison("parameter", "lr", "=", "0.1")]),
        ('param.lr != "x"', [Comparison("parameter", "lr", "!=", "x")]),
        ("parameters.lr like 'a%'", [Comparison("parameter", "lr", "LIKE", "a%")]),
        ("parameter.lr ILIKE '%A'", [Comparison("parameter", "lr", "ILIKE", "%A")]),
        ("params.lr IS NULL", [Comparison("parameter", "lr", "IS NULL", None)]),
        ("tags.t is not null", [Comparison("tag", "t", "IS NOT NULL", None)]),
        ("tags.mlflow.runName = 'r'", [Comparison("tag", "mlflow.runName", "=", "r")]),
        ("tag.`mlflow.runName` = 'r'", [Comparison("tag", "mlflow.runName", "=", "r")]),
        ("tags.'a b' = 'r'", [Comparison("tag", "a b", "=", "r")]),
        ("`tags`.a = ''", [Comparison("tag", "a", "=", "")]),
        ('tags.a = "it\'s"', [Comparison("tag", "a", "=", "it's")]),
        # MLflow keeps escapes inside scalar strings verbatim.
        ("tags.a = 'it''s'", [Comparison("tag", "a", "=", "it''s")]),
        ("status = 'FINISHED'", [Comparison("attribute", "status", "=", "FINISHED")]),
        ("attributes.status = 'x'", [Comparison("attribute", "status", "=", "x")]),
        ("attribute.user_id LIKE 'a%'", [Comparison("attribute", "user_id", "LIKE", "a%")]),
        (
            "attr.artifact_uri ILIKE 's3%'",
            [Comparison("attribute", "artifact_uri", "ILIKE", "s3%")],
        ),
        ("run.run_name = 'a'", [Comparison("attribute", "run_name", "=", "a")]),
        ("`run name` = 'a'", [Comparison("attribute", "run_name", "=", "a")]),
        ("\"Run name\" = 'a'", [Comparison("attribute", "run_name", "=", "a")]),
        ("attributes.`Run Name` != 'a'", [Comparison("attribute", "run_name", "!=", "a")]),
        ("created > 5", [Comparison("attribute", "start_time", ">", 5)]),
        ("Created >= 5.5", [Comparison("attribute", "start_time", ">=", 5.5)]),
        ("end_time != 7", [Comparison("attribute", "end_time", "!=", 7)]),
        ("run_id IN ('a', 'b')", [Comparison("attribute", "run_id", "IN", ("a", "b"))]),
        ("run_id in ('a',)", [Comparison("attribute", "run_id", "IN", ("a",))]),
        ('run_id not in ("a")', [Comparison("attribute", "run_id", "NOT IN", ("a",))]),
        ("run_id IN ('it\\'s')", [Comparison("attribute", "run_id", "IN", ("it's",))]),
        ("datasets.name = 'd'", [Comparison("dataset", "name", "=", "d")]),
        ("dataset.digest IN ('x','y')", [Comparison("dataset", "digest", "IN", ("x", "y"))]),
        ("datasets.context NOT IN ('x')", [Comparison("dataset", "context", "NOT IN", ("x",))]),
        ("datasets.context ilike 'T%'", [Comparison("dataset", "context", "ILIKE", "T%")]),
        (
            "metrics.a > 1 and params.b = 'x' AnD tags.c != 'y'",
            [
                Comparison("metric", "a", ">", 1.0),
                Comparison("parameter", "b", "=", "x"),
                Comparison("tag", "c", "!=", "y"),
            ],
        ),
        # MLflow treats AND as an optional separator.
        ("AND metrics.a = 1 AND AND", [Comparison("metric", "a", "=", 1.0)]),
        (
            "metrics.a = 1 metrics.b = 2",
            [Comparison("metric", "a", "=", 1.0), Comparison("metric", "b", "=", 2.0)],
        ),
        ("params.in = 'x'", [Comparison("parameter", "in", "=", "x")]),
        ("", []),
        (None, []),
    ],
)
def test_run_filter_accepted(text: str | None, expected: list[Comparison]) -> None:
    assert parse_run_filter(text) == expected


def test_integer_and_float_values_keep_their_type() -> None:
    [start] = parse_run_filter("start_time > 5")
    assert isinstance(start.value, int)
    [metric] = parse_run_filter("metrics.m > 5")
    assert isinstance(metric.value, float)


# --------------------------------------------------------------------------- runs: errors

_RUN_ATTRS = (
    "'{'Created', 'Run Name', 'Run name', 'artifact_uri', 'created', 'end_time', 'run name', "
    "'run_id', 'run_name', 'start_time', 'status', 'user_id'}'"
)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("metrics.a > 1 OR metrics.b > 2", "Invalid clause(s) in filter string: 'OR'"),
        ("(metrics.a > 1)", "Invalid clause(s) in filter string: '(metrics.a > 1)'"),
        (
            "tags.a = 'x' AND (tags.b = 'y')",
            "Invalid clause(s) in filter string: '(tags.b = 'y')'",
        ),
        ("NOT tags.a = 'x'", "Invalid clause(s) in filter string: 'NOT'"),
        ("metrics.a", "Invalid clause(s) in filter string: 'metrics.a'"),
        ("metrics.a =", "Invalid clause(s) in filter string: 'metrics.a', '='"),
        ("metrics.a > - 1", "Invalid clause(s) in filter string: 'metrics.a', '>', '-', '1'"),
        ("metrics.a > 0x10", "Invalid clause(s) in filter string: 'metrics.a', '>', '0x10'"),
        ("metrics.a > 1.5.5", "Invalid clause(s) in filter string: '.5'"),
        ("metrics.a = 1;", "Invalid clause(s) in filter string: ';'"),
        (
            "tags.a = 'unterminated",
            "Invalid clause(s) in filter string: 'tags.a', '=', ''', 'unterminated'",
        ),
        (" ", "Invalid filter ' '. Could not be parsed."),
        (
            "bogus.a = 'x'",
            "Invalid entity type 'bogus'. Valid values are "
            "['metric', 'parameter', 'tag', 'attribute', 'dataset']",
        ),
        ("foo = 'x'", f"Invalid attribute key 'foo' specified. Valid keys are {_RUN_ATTRS}"),
        (
            "experiment_id = '1'",
            f"Invalid attribute key 'experiment_id' specified. Valid keys are {_RUN_ATTRS}",
        ),
        (
            "datasets.foo = 'x'",
            "Invalid dataset key 'foo' specified. Valid keys are '{'context', 'digest', 'name'}'",
        ),
        ("metrics.a > 'x'", "Expected numeric value type for metric. Found 'x'"),
        ("metrics.a = nan", "Expected numeric value type for metric. Found nan"),
        (
            "tags.a = x",
            "Parameter value is either not quoted or unidentified quote types used for string "
            "value x. Use either single or double quotes.",
        ),
        (
            "tags.a = 1",
            "Expected a quoted string value for tag (e.g. 'my-value'). Got value 1",
        ),
        (
            "params.a IN ('x')",
            "Expected a quoted string value for parameter (e.g. 'my-value'). Got value ('x')",
        ),
        (
            "start_time > '5'",
            "Expected numeric value type for numeric attribute: start_time. Found '5'",
        ),
        ("created = 'x'", "Expected numeric value type for numeric attribute: created. Found 'x'"),
        ("status = 1", "Expected a quoted string value for attributes. Got value 1"),
        (
            "datasets.name = 1",
            "Expected a quoted string value for dataset attributes. Got value 1",
        ),
        (
            "run_name IN ('a','b')",
            "Only ['run_id'] attributes support comparison with a list of quoted string values.",
        ),
        (
            "run_id IN ()",
            "While parsing a list in the query, expected a non-empty list of string values, "
            "but got empty list",
        ),
        (
            "run_id IN (1, 2)",
            "While parsing a list in the query, expected string value, punctuation, or "
            "whitespace, but got different type in list: (1, 2)",
        ),
        (
            "run_id IN (a)",
            "While parsing a list in the query, expected a non-empty list of string values, "
            "but got ill-formed list.",
        ),
        (
            "metrics.a IS NULL",
            "IS NULL / IS NOT NULL is only supported for tags and params, not for 'metric' 'a'",
        ),
        (
            "end_time IS NOT NULL",
            "IS NULL / IS NOT NULL is only supported for tags and params, "
            "not for 'attribute' 'end_time'",
        ),
        (
            "datasets.name IS NULL",
            "IS NULL / IS NOT NULL is only supported for tags and params, not for 'dataset' 'name'",
        ),
        (
            "metrics.a LIKE 1",
            "Invalid comparator 'LIKE' not one of '{'>', '>=', '<', '<=', '=', '!='}'",
        ),
        (
            "metrics.a <> 1",
            "Invalid comparator '<>' not one of '{'>', '>=', '<', '<=', '=', '!='}'",
        ),
        (
            "tags.a == 'x'",
            "Invalid comparator '==' not one of "
            "'{'=', '!=', 'LIKE', 'ILIKE', 'IS NULL', 'IS NOT NULL'}'",
        ),
        (
            "params.a > 'x'",
            "Invalid comparator '>' not one of "
            "'{'=', '!=', 'LIKE', 'ILIKE', 'IS NULL', 'IS NOT NULL'}'",
        ),
        (
            "tags.a NOT LIKE 'x'",
            "Invalid comparator 'NOT LIKE' not one of "
            "'{'=', '!=', 'LIKE', 'ILIKE', 'IS NULL', 'IS NOT NULL'}'",
        ),
        (
            "status > 'x'",
            "Invalid comparator '>' not one of '{'=', '!=', 'LIKE', 'ILIKE', 'IN', 'NOT IN'}'",
        ),
        (
            "start_time LIKE 5",
            "Invalid comparator 'LIKE' not one of '{'>', '>=', '<', '<=', '=', '!='}'",
        ),
        (
            "datasets.name > 'x'",
            "Invalid comparator '>' not one of '{'=', '!=', 'LIKE', 'ILIKE', 'IN', 'NOT IN'}'",
        ),
        (
            "run_id = ('a', 'b')",
            "Invalid comparator '=' for a list of values. Use 'IN' or 'NOT IN'.",
        ),
    ],
)
def test_run_filter_errors(text: str, message: str) -> None:
    assert _error(parse_run_filter, text) == message


# --------------------------------------------------------------------------- experiments

_EXP_ATTRS = "'{'creation_time', 'experiment_id', 'last_update_time', 'name'}'"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("name = 'a'", [Comparison("attribute", "name", "=", "a")]),
        ("attribute.name like 'a%'", [Comparison("attribute", "name", "LIKE", "a%")]),
        ("name ILIKE '%A'", [Comparison("attribute", "name", "ILIKE", "%A")]),
        ("tags.k = 'v'", [Comparison("tag", "k", "=", "v")]),
        ("tag.k != 'v'", [Comparison("tag", "k", "!=", "v")]),
        ("tags.k like 'v'", [Comparison("tag", "k", "LIKE", "v")]),
        (
            "tags.`mlflow.experiment.isGateway` IS NULL",
            [Comparison("tag", "mlflow.experiment.isGateway", "IS NULL", None)],
        ),
        ("experiment_id = '1'", [Comparison("attribute", "experiment_id", "=", "1")]),
        (
            "experiment_id IN ('1', '2')",
            [Comparison("attribute", "experiment_id", "IN", ("1", "2"))],
        ),
        (
            "experiment_id not in ('1')",
            [Comparison("attribute", "experiment_id", "NOT IN", ("1",))],
        ),
        ("creation_time > 5", [Comparison("attribute", "creation_time", ">", 5)]),
        (
            "last_update_time <= 5 AND name != 'x'",
            [
                Comparison("attribute", "last_update_time", "<=", 5),
                Comparison("attribute", "name", "!=", "x"),
            ],
        ),
    ],
)
def test_experiment_filter_accepted(text: str, expected: list[Comparison]) -> None:
    assert parse_experiment_filter(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("tags.k = 'v' OR name = 'x'", "Invalid clause(s) in filter string: OR"),
        (
            "attributes.name = 'a'",
            "Invalid entity type 'attributes'. Valid entity types are ('attribute', 'tag', 'tags')",
        ),
        (
            "params.x = 'a'",
            "Invalid entity type 'params'. Valid entity types are ('attribute', 'tag', 'tags')",
        ),
        (
            "`tag`.k = 'v'",
            "Invalid entity type '`tag`'. Valid entity types are ('attribute', 'tag', 'tags')",
        ),
        ("run_id = 'a'", f"Invalid attribute key 'run_id' specified. Valid keys are {_EXP_ATTRS}"),
        (
            "name IS NULL",
            "IS NULL / IS NOT NULL is only supported for tags, not for attribute 'name'",
        ),
        (
            "tags.k IN ('v')",
            "Expected a quoted string value for tag (e.g. 'my-value'). Got value ('v')",
        ),
        ("tags.k > 'v'", "Invalid comparator for tag: >"),
        (
            "name IN ('a')",
            "Only ['experiment_id'] attributes support comparison with a list of quoted "
            "string values.",
        ),
        (
            "name > 'a'",
            "Invalid comparator '>' not one of '{'=', '!=', 'LIKE', 'ILIKE', 'IN', 'NOT IN'}'",
        ),
        ("experiment_id = 1", "Expected a quoted string value for attributes. Got value 1"),
        ("experiment_id > '1'", "Invalid comparator for experiment_id: >"),
        (
            "experiment_id = 'x'",
            "Invalid experiment ID 'x'. Experiment ID must be a valid integer.",
        ),
        (
            "experiment_id IN ('1', 'x')",
            "Invalid experiment ID 'x'. Experiment ID must be a valid integer.",
        ),
        (
            "experiment_id = '99999999999999999999'",
            "Invalid experiment ID '99999999999999999999'. Experiment ID must be a valid integer.",
        ),
        ("creation_time > 600.5", "Invalid value for numeric attribute 'creation_time': '600.5'"),
        (
            "creation_time = '1000'",
            "Expected numeric value type for numeric attribute: creation_time. Found '1000'",
        ),
        (
            "creation_time LIKE 1",
            "Invalid comparator 'LIKE' not one of '{'>', '>=', '<', '<=', '=', '!='}'",
        ),
        (" ", "Invalid filter ' '. Could not be parsed."),
    ],
)
def test_experiment_filter_errors(text: str, message: str) -> None:
    assert _error(parse_experiment_filter, text) == message


# --------------------------------------------------------------------------- vs MLflow's parser

# Strings MLflow's parser accepts and evtrack rejects up front, because MLflow's SQL store
# rejects them later (comparator checks) or fails on them in the database (list with "=").
_CORPUS = [
    "metrics.a > 1 OR metrics.b > 2",
    "(metrics.a > 1)",
    "metrics.a > 1 and params.b = 'x'",
    "metrics.a > -1",
    "metrics.a > - 1",
    "metrics.a>-1",
    "metrics.a > 1e5",
    "metrics.a > 1E-5",
    "metrics.a > .5",
    "metrics.a > 5.",
    "metrics.a > 0x10",
    "metrics.a > 'x'",
    "metrics.a > inf",
    "metrics.a LIKE 1",
    "metrics.a IS NULL",
    "tags.a = 'it''s'",
    "tags.a = 'it\\'s'",
    'tags.a = "it\'s"',
    'tags.a = "x"',
    "tags.a = x",
    "tags.a = 1",
    "tags.mlflow.runName = 'r'",
    "tags.`mlflow.runName` = 'r'",
    "tags.\"mlflow.runName\" = 'r'",
    "tags.'mlflow.runName' = 'r'",
    "`tags`.a = 'r'",
    "tags.`my tag` = 'r'",
    "tags.my-tag = 'r'",
    "tags.a IS NULL",
    "tags.a is not null",
    "params.a IS NOT NULL",
    "params.a != 'x'",
    "params.a like 'x%'",
    "params.a ilike 'x%'",
    "params.a IN ('x')",
    "params.a > 'x'",
    "run_id IN ('a', 'b')",
    "run_id IN ('a')",
    "run_id IN ('a',)",
    "run_id in ('a','b')",
    "run_id NOT IN ('a','b')",
    "run_id not in ('a','b')",
    "run_id IN ()",
    "run_id IN (1, 2)",
    'run_id IN ("a", "b")',
    "run_id = ('a','b')",
    "run_name IN ('a','b')",
    "status = 'FINISHED'",
    "attributes.status = 'FINISHED'",
    "attribute.status = 'FINISHED'",
    "attr.status = 'FINISHED'",
    "run.status = 'FINISHED'",
    "`run name` = 'x'",
    "\"run name\" = 'x'",
    "attributes.`Run Name` = 'x'",
    "created > 5",
    "Created >= 5.5",
    "start_time > 5",
    "start_time > '5'",
    "start_time LIKE 5",
    "end_time IS NULL",
    "start_time != 5",
    "user_id LIKE 'a%'",
    "artifact_uri = 'x'",
    "lifecycle_stage = 'active'",
    "foo = 'x'",
    "metric.a = 1",
    "metrics.a = 1 AND",
    "AND metrics.a = 1",
    "metrics.a = 1 AND AND metrics.b = 2",
    "metrics.a = 1 metrics.b = 2",
    "datasets.name = 'x'",
    "datasets.digest IN ('x','y')",
    "datasets.context NOT IN ('x')",
    "datasets.context LIKE 'x'",
    "datasets.foo = 'x'",
    "datasets.name > 'x'",
    "datasets.name IS NULL",
    "dataset.name = 'x'",
    "bogus.a = 'x'",
    "metrics.a",
    "metrics.a =",
    "= 1",
    "metrics.a = 1;",
    " ",
    "metrics.`a b` >= 0.5",
    'metrics."a b" >= 0.5',
    "params.a = 'x' AND tags.b = 'y' AND metrics.c < 3",
    "tags.a == 'x'",
    "tags.a <> 'x'",
    "tags.a = 'x' AND (tags.b = 'y')",
    "NOT tags.a = 'x'",
    "tags.a NOT LIKE 'x'",
    "tags.a = 'x'  and  tags.b='y'",
    " tags.a = ''",
    'tags.a = "a""b"',
    "tags.a = 'x' AnD tags.b = 'y'",
    "metrics.a123 > 1",
    "metrics.1a > 1",
    "metrics.a.b > 1",
    "metrics.a > 1.5.5",
    "run_id IN ('it\\'s', \"b\")",
]


def _reference_run_filter(text: str) -> list[dict[str, Any]] | None:
    """MLflow's parse plus the comparator checks its SQL store applies; None if rejected."""
    from mlflow.exceptions import MlflowException
    from mlflow.utils.search_utils import SearchUtils

    try:
        parsed = SearchUtils.parse_search_filter(text)
        for clause in parsed:
            kind, comparator = clause["type"], clause["comparator"].upper()
            key = SearchUtils.translate_key_alias(clause["key"])
            if not (
                SearchUtils.is_string_attribute(kind, key, comparator)
                or SearchUtils.is_numeric_attribute(kind, key, comparator)
                or SearchUtils.is_metric(kind, comparator)
                or SearchUtils.is_param(kind, comparator)
                or SearchUtils.is_tag(kind, comparator)
                or SearchUtils.is_dataset(kind, comparator)
            ):
                return None
            if isinstance(clause["value"], tuple) and comparator not in ("IN", "NOT IN"):
                return None  # MLflow fails in the database
    except MlflowException:
        return None
    return parsed


@pytest.mark.parametrize("text", _CORPUS)
def test_run_filter_agrees_with_mlflow(text: str) -> None:
    from mlflow.utils.search_utils import SearchUtils

    expected = _reference_run_filter(text)
    if expected is None:
        _error(parse_run_filter, text)
        return
    ours = parse_run_filter(text)
    assert [
        Comparison(
            c["type"],
            SearchUtils.translate_key_alias(c["key"]) if c["type"] == "attribute" else c["key"],
            c["comparator"].upper(),
            float(c["value"]) if c["type"] == "metric" else c["value"],
        )
        for c in expected
    ] == ours

"""``logged-models/search``: MLflow 3 logged models, compiled to SQL over ``rm_logged_models``.

MLflow's SQL store parses these filters with a parser of its own
(``mlflow/utils/search_logged_model_utils.py``), not the runs grammar, and its semantics are
those of ``SqlAlchemyStore.search_logged_models`` (``mlflow/store/tracking/sqlalchemy_store.py``):

* entities are exactly ``attributes`` (or a bare key), ``metrics``, ``params`` and ``tags``:
  no singular forms, no aliases;
* attributes ``name, model_id, model_type, status, source_run_id`` compare as strings and
  ``creation_timestamp`` (``creation_time``), ``last_updated_timestamp`` (``last_updated_time``)
  as numbers. String entities take ``= != LIKE ILIKE IN NOT IN`` (params and tags included),
  numeric ones ``< <= > >= = !=``; there is no ``IS NULL``;
* a metric clause matches when **any** logged point of that metric satisfies it (not only the
  latest); with ``datasets`` given, only points logged for one of those datasets count;
  ``datasets`` without any metric clause keeps the models that have a metric on one of them;
* a param/tag clause needs the key to exist (``!=`` does not match models without it);
* ``order_by`` items are objects ``{field_name, ascending=true, dataset_name, dataset_digest}``;
  ``field_name`` is an attribute or ``metrics.<key>``. A metric sorts by its latest point (by
  timestamp, then step, then run id), among the points of the item's own dataset if it names
  one; models without it come last either way. Then ``creation_timestamp DESC`` unless already
  sorted by it, then ``model_id ASC`` unless already sorted by it;
* page tokens carry the request they belong to (see ``_page_token``); a token reused with other
  experiment ids, filter or order is rejected.

Deliberate differences, each where MLflow's own behaviour is an accident:

* NaN metric values: MLflow stores them as 0, so they compare and sort as 0. The read model keeps
  ``is_nan``, and NaN behaves as in run searches: only ``!=`` matches it, and it sorts after
  every number and before models without the metric;
* a ``datasets`` entry without a digest matches any digest. MLflow's REST handler turns a missing
  digest into None and its store then matches only metrics *without* a digest;
* double-quoted values are strings (MLflow keeps the quotes in the value, so ``name = "x"``
  never matches); ``last_updated_time`` is an alias (MLflow's SQL store fails on it);
* ``status`` compares the stored text (MLflow stores an integer and never matches);
* unknown attribute keys, non-numeric values for numeric keys, undecodable page tokens and bad
  list literals are INVALID_PARAMETER_VALUE instead of internal errors;
* ``max_results`` must be positive and pages are capped at
  :data:`SEARCH_LOGGED_MODEL_MAX_PAGE_SIZE` rows (MLflow has no cap; clients follow
  ``next_page_token``, so a larger request is served over several pages).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Literal

from evtrack.errors import EvtrackError, invalid
from evtrack.search._filter import (
    INT64_MAX,
    INT64_MIN,
    Comparison,
    Entity,
    Value,
    _check_list_shape,
    _list_value,
    _number,
    _Operand,
    _RawClause,
    _scan_clauses,
    render_keys,
)
from evtrack.search._lexer import unquote_key
from evtrack.search._page_token import LoggedModelTokenScope, decode_logged_model_page_token
from evtrack.search._sql import (
    _SQL_OPERATORS,
    SqlQuery,
    _direction,
    _page,
    _Params,
    _scalar,
    _texts,
)

SEARCH_LOGGED_MODEL_MAX_RESULTS_DEFAULT: Final = 50  # the REST default (proto)
SEARCH_LOGGED_MODEL_MAX_PAGE_SIZE: Final = 1000

LOGGED_MODEL_ENTITIES: Final = ("attributes", "metrics", "params", "tags")
_ENTITY_NAMES: Final[dict[str, Entity]] = {
    "attributes": "attribute",
    "metrics": "metric",
    "params": "parameter",
    "tags": "tag",
}
LOGGED_MODEL_STRING_ATTRIBUTES: Final = (
    "model_id",
    "model_type",
    "name",
    "source_run_id",
    "status",
)
# Accepted spelling -> canonical key; the canonical keys are also the order_by attributes.
_NUMERIC_ALIASES: Final = {
    "creation_timestamp": "creation_timestamp",
    "creation_time": "creation_timestamp",
    "last_updated_timestamp": "last_updated_timestamp",
    "last_updated_time": "last_updated_timestamp",
}
LOGGED_MODEL_ATTRIBUTES: Final = LOGGED_MODEL_STRING_ATTRIBUTES + tuple(_NUMERIC_ALIASES)

_NUMERIC_OPS: Final = ("<", "<=", ">", ">=", "=", "!=")
_STRING_OPS: Final = ("=", "!=", "LIKE", "ILIKE", "IN", "NOT IN")

_TEXT_COLUMNS: Final = {
    "model_id": "m.model_id",
    "model_type": "m.model_type",
    "name": "m.name",
    "source_run_id": "m.source_run_id",
    "status": "m.status",
}
_NUMERIC_COLUMNS: Final = {
    "creation_timestamp": "m.creation_timestamp_ms",
    "last_updated_timestamp": "m.last_updated_timestamp_ms",
}
_KEY_VALUE_TABLES: Final = {
    "parameter": "rm_logged_models.logged_model_params",
    "tag": "rm_logged_models.logged_model_tags",
}
_METRICS: Final = "rm_logged_models.logged_model_metrics"


# --- filter -----------------------------------------------------------------------------------


def _filter_error(filter_string: str) -> EvtrackError:
    return invalid(
        f"Invalid filter string: {filter_string!r}. Expected a list of comparisons separated by "
        "'AND' (e.g. 'metrics.loss > 0.1 AND params.lr = 0.01')."
    )


def _resolve(clause: _RawClause) -> tuple[Entity, str, str]:
    """Entity, canonical key, and the name MLflow shows in operator errors."""
    raw = clause.ident
    key = unquote_key(raw.key)
    if raw.entity is not None and raw.entity not in LOGGED_MODEL_ENTITIES:
        raise invalid(
            f"Invalid entity type: {raw.entity!r}. Expected one of {list(LOGGED_MODEL_ENTITIES)}."
        )
    entity = _ENTITY_NAMES[raw.entity or "attributes"]
    if entity != "attribute":
        return entity, key, f"{raw.entity}.{key}"
    if key not in LOGGED_MODEL_ATTRIBUTES:
        raise invalid(
            f"Invalid attribute key '{key}' specified. "
            f"Valid keys are '{render_keys(LOGGED_MODEL_ATTRIBUTES)}'"
        )
    if key in _NUMERIC_ALIASES:
        key = _NUMERIC_ALIASES[key]
        return entity, key, f"attributes.{key}_ms"  # MLflow names the column
    return entity, key, f"attributes.{key}"


def _numeric_value(entity: Entity, key: str, operand: _Operand) -> float:
    if operand.kind == "number":
        return _number(operand.text)
    if entity == "metric":
        raise invalid(f"Expected numeric value type for metric. Found {operand.text}")
    raise invalid(f"Expected numeric value type for numeric attribute: {key}. Found {operand.text}")


def _text_value(operand: _Operand) -> str | tuple[str, ...]:
    """Quoted strings lose their quotes; numbers and bare words are taken as written (MLflow
    accepts ``name = model``); ``(...)`` is a list of strings."""
    if operand.kind == "list":
        return _list_value(operand)
    if operand.kind == "string":
        return operand.text[1:-1]
    return operand.text


def _resolve_clause(clause: _RawClause) -> Comparison:
    comparator = clause.comparator.upper()
    operand = clause.operand
    if operand is None:
        # MLflow's wording, which glues the identifier and ``IS [NOT] NULL`` together.
        ident = clause.ident
        written = f"{ident.entity}.{ident.key}" if ident.entity is not None else ident.key
        raise invalid(
            f"Invalid comparison: {written}{comparator}. Expected a comparison with 3 tokens."
        )
    entity, key, shown = _resolve(clause)
    numeric = entity == "metric" or key in _NUMERIC_COLUMNS
    ops = _NUMERIC_OPS if numeric else _STRING_OPS
    if comparator not in ops:
        raise invalid(
            f"Invalid comparison operator for {shown}: {comparator!r}. Expected one of {ops}."
        )
    value: Value = _numeric_value(entity, key, operand) if numeric else _text_value(operand)
    _check_list_shape(comparator, value)
    return Comparison(entity, key, comparator, value)


def parse_logged_model_filter(filter_string: str | None) -> list[Comparison]:
    """Parse and validate a ``logged-models/search`` filter; None or ``""`` means no filter.

    Keys come back canonical: entity ``attribute``/``metric``/``parameter``/``tag`` and the
    numeric attributes as ``creation_timestamp`` / ``last_updated_timestamp``.
    """
    if not filter_string:
        return []
    if not filter_string.strip():
        raise invalid(
            f"Invalid filter string: {filter_string!r}. Expected a single SQL expression."
        )
    clauses, invalids = _scan_clauses(filter_string)
    if invalids:
        raise _filter_error(filter_string)
    return [_resolve_clause(c) for c in clauses]


# --- datasets and order_by --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DatasetFilter:
    """Metrics logged for dataset ``name`` (and ``digest``, when given)."""

    name: str
    digest: str | None


@dataclass(frozen=True, slots=True)
class LoggedModelOrder:
    """One sort key: an attribute (canonical name) or a metric, with an optional dataset."""

    kind: Literal["attribute", "metric"]
    key: str
    ascending: bool
    dataset_name: str | None = None
    dataset_digest: str | None = None


def _optional_text(item: Mapping[str, object], field: str, where: str) -> str | None:
    value = item.get(field)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise invalid(f"`{field}` in the `{where}` clause must be a string, got {type(value)}.")
    return value


def parse_datasets(datasets: Sequence[Mapping[str, object]] | None) -> list[DatasetFilter]:
    """``[{dataset_name, dataset_digest?}]``; a missing, None or empty digest means any."""
    parsed: list[DatasetFilter] = []
    for item in datasets or ():
        if not isinstance(item, Mapping):
            raise invalid("`datasets` must be a list of dictionaries.")
        name = _optional_text(item, "dataset_name", "datasets")
        if name is None:
            raise invalid("`dataset_name` in the `datasets` clause must be specified.")
        parsed.append(DatasetFilter(name, _optional_text(item, "dataset_digest", "datasets")))
    return parsed


def _normalize_order_by(
    order_by: Sequence[Mapping[str, object]] | None,
) -> tuple[Mapping[str, object], ...] | None:
    """The items as MLflow's REST handler hands them to its store (that form goes into page
    tokens): all four keys, ``ascending`` defaulting to true, empty dataset fields as None."""
    if not order_by:
        return None
    items: list[Mapping[str, object]] = []
    for item in order_by:
        if not isinstance(item, Mapping):
            raise invalid("`order_by` must be a list of dictionaries.")
        field_name = item.get("field_name")
        if field_name is None:
            raise invalid("`field_name` in the `order_by` clause must be specified.")
        if not isinstance(field_name, str):
            raise invalid(f"Invalid order by field name: {field_name}")
        ascending = item.get("ascending")
        if ascending is None:
            ascending = True
        if not isinstance(ascending, bool):
            raise invalid(
                "Value of `ascending` in the `order_by` clause must be a boolean, got "
                f"{type(ascending)} for field {field_name}."
            )
        dataset_name = _optional_text(item, "dataset_name", "order_by")
        dataset_digest = _optional_text(item, "dataset_digest", "order_by")
        if dataset_digest is not None and dataset_name is None:
            raise invalid(
                "`dataset_digest` can only be specified if `dataset_name` is also specified."
            )
        items.append(
            {
                "field_name": field_name,
                "ascending": ascending,
                "dataset_name": dataset_name,
                "dataset_digest": dataset_digest,
            }
        )
    return tuple(items)


def _order_key(item: Mapping[str, object]) -> LoggedModelOrder:
    field_name = item["field_name"]
    ascending = item["ascending"]
    assert isinstance(field_name, str) and isinstance(ascending, bool)
    if "." in field_name:
        entity, key = field_name.split(".", 1)
        if entity != "metrics":
            raise invalid(f"Invalid order by field name: {field_name}. Only metrics are supported.")
        name, digest = item["dataset_name"], item["dataset_digest"]
        assert name is None or isinstance(name, str)
        assert digest is None or isinstance(digest, str)
        return LoggedModelOrder("metric", key, ascending, name, digest)
    if field_name in _NUMERIC_ALIASES:
        return LoggedModelOrder("attribute", _NUMERIC_ALIASES[field_name], ascending)
    if field_name in LOGGED_MODEL_STRING_ATTRIBUTES:
        return LoggedModelOrder("attribute", field_name, ascending)
    raise invalid(f"Invalid order by field name: {field_name}")


def parse_logged_model_order_by(
    order_by: Sequence[Mapping[str, object]] | None,
) -> list[LoggedModelOrder]:
    """Requested sort keys followed by the ``creation_timestamp DESC``, ``model_id ASC``
    tiebreakers (each dropped when the request already sorts by it)."""
    keys = [_order_key(item) for item in _normalize_order_by(order_by) or ()]
    attributes = {k.key for k in keys if k.kind == "attribute"}
    if "creation_timestamp" not in attributes:
        keys.append(LoggedModelOrder("attribute", "creation_timestamp", False))
    if "model_id" not in attributes:
        keys.append(LoggedModelOrder("attribute", "model_id", True))
    return keys


# --- compiler ---------------------------------------------------------------------------------


def _experiment_ids(experiment_ids: Sequence[str | int]) -> list[int]:
    ids: list[int] = []
    for raw in experiment_ids:
        try:
            number = int(raw)
        except (TypeError, ValueError):
            number = None
        if number is None or isinstance(raw, bool) or not INT64_MIN <= number <= INT64_MAX:
            raise invalid(f"Invalid experiment ID '{raw}'. Experiment ID must be a valid integer.")
        ids.append(number)
    return ids


def _check_max_results(max_results: int | None) -> int:
    if max_results is None:
        return SEARCH_LOGGED_MODEL_MAX_RESULTS_DEFAULT
    if max_results < 1:
        raise invalid(
            f"Invalid value for max_results. It must be a positive integer, but got {max_results}"
        )
    return min(max_results, SEARCH_LOGGED_MODEL_MAX_PAGE_SIZE)


def _datasets_condition(datasets: Sequence[DatasetFilter], params: _Params) -> str:
    """``(f.dataset_name = $a [AND f.dataset_digest = $b]) OR ...`` over metric rows ``f``."""
    terms: list[str] = []
    for dataset in datasets:
        term = f"f.dataset_name = {params.add(dataset.name, '::text')}"
        if dataset.digest is not None:
            term += f" AND f.dataset_digest = {params.add(dataset.digest, '::text')}"
        terms.append(f"({term})")
    return "(" + " OR ".join(terms) + ")"


def _condition(clause: Comparison, datasets: Sequence[DatasetFilter], params: _Params) -> str:
    comparator, value = clause.comparator, clause.value
    if clause.entity == "attribute":
        if clause.key in _NUMERIC_COLUMNS:
            assert isinstance(value, int | float)
            column = _NUMERIC_COLUMNS[clause.key]
            return f"{column} {_SQL_OPERATORS[comparator]} {params.number(value)}"
        return _scalar(_TEXT_COLUMNS[clause.key], comparator, _texts(value), params)
    key_ref = params.add(clause.key, "::text")
    if clause.entity == "metric":
        assert isinstance(value, int | float)
        compare = f"f.value {_SQL_OPERATORS[comparator]} {params.number(value)}"
        nan_rule = (
            f"({compare} OR f.is_nan)" if comparator == "!=" else f"{compare} AND NOT f.is_nan"
        )
        on_dataset = f" AND {_datasets_condition(datasets, params)}" if datasets else ""
        return (
            f"EXISTS (SELECT 1 FROM {_METRICS} AS f WHERE f.model_id = m.model_id "
            f"AND f.key = {key_ref} AND {nan_rule}{on_dataset})"
        )
    table = _KEY_VALUE_TABLES[clause.entity]
    compare = _scalar("f.value", comparator, _texts(value), params)
    return (
        f"EXISTS (SELECT 1 FROM {table} AS f WHERE f.model_id = m.model_id "
        f"AND f.key = {key_ref} AND {compare})"
    )


def _order(keys: Sequence[LoggedModelOrder], params: _Params) -> tuple[list[str], list[str]]:
    """ORDER BY terms plus the lateral joins that fetch each sort metric's latest point."""
    joins: list[str] = []
    terms: list[str] = []
    for key in keys:
        direction = _direction(key.ascending)
        if key.kind == "attribute":
            if key.key in _NUMERIC_COLUMNS:
                terms.append(f"{_NUMERIC_COLUMNS[key.key]} {direction} NULLS LAST")
            else:
                terms.append(f'{_TEXT_COLUMNS[key.key]} COLLATE "C" {direction} NULLS LAST')
            continue
        alias = f"o{len(joins) + 1}"
        where = ["f.model_id = m.model_id", f"f.key = {params.add(key.key, '::text')}"]
        if key.dataset_name is not None:
            where.append(f"f.dataset_name = {params.add(key.dataset_name, '::text')}")
        if key.dataset_digest is not None:
            where.append(f"f.dataset_digest = {params.add(key.dataset_digest, '::text')}")
        # Latest point as MLflow picks it; value and NaN only make exact ties deterministic.
        joins.append(
            f"LEFT JOIN LATERAL (SELECT f.value, f.is_nan FROM {_METRICS} AS f "
            f"WHERE {' AND '.join(where)} "
            'ORDER BY f.timestamp DESC, f.step DESC, f.run_id COLLATE "C" ASC, '
            f"f.is_nan ASC, f.value DESC LIMIT 1) AS {alias} ON true"
        )
        # Numbers first, then NaN, then models without the metric, whatever the direction.
        terms.append(
            f"CASE WHEN {alias}.is_nan THEN 1 WHEN {alias}.is_nan IS NULL THEN 2 ELSE 0 END ASC"
        )
        terms.append(f"{alias}.value {direction}")
    return joins, terms


def compile_logged_model_search(
    experiment_ids: Sequence[str | int],
    filter_string: str | None,
    datasets: Sequence[Mapping[str, object]] | None,
    order_by: Sequence[Mapping[str, object]] | None,
    max_results: int | None,
    page_token: str | None,
) -> SqlQuery:
    """Compile ``logged-models/search`` to a query selecting ``model_id`` in MLflow's order.

    ``experiment_ids`` are decimal strings (as on the wire) or ints; ``max_results`` None means
    the REST default (50). Deleted models are never returned. Checks run in MLflow's order:
    datasets, page token (against this request), filter, experiment ids, ``order_by``.
    """
    limit = _check_max_results(max_results)
    dataset_filters = parse_datasets(datasets)
    normalized = _normalize_order_by(order_by)
    scope = LoggedModelTokenScope(
        experiment_ids=tuple(str(e) for e in experiment_ids),
        filter_string=filter_string or None,
        order_by=normalized,
    )
    offset = decode_logged_model_page_token(page_token, scope)
    clauses = parse_logged_model_filter(filter_string)
    ids = _experiment_ids(experiment_ids)
    order = parse_logged_model_order_by(normalized)

    params = _Params()
    where = [
        f"m.experiment_id = ANY({params.add(ids, '::bigint[]')})",
        "NOT m.deleted",
    ]
    where.extend(_condition(clause, dataset_filters, params) for clause in clauses)
    if dataset_filters and not any(c.entity == "metric" for c in clauses):
        where.append(
            f"EXISTS (SELECT 1 FROM {_METRICS} AS f WHERE f.model_id = m.model_id "
            f"AND {_datasets_condition(dataset_filters, params)})"
        )
    joins, terms = _order(order, params)
    sql = "\n".join(
        [
            "SELECT m.model_id",
            "FROM rm_logged_models.logged_models AS m",
            *joins,
            "WHERE " + "\n  AND ".join(where),
            "ORDER BY " + ", ".join(terms),
        ]
    )
    return _page(sql, params, offset, limit, scope)

"""Model registry searches: ``registered-models/search`` and ``model-versions/search``.

Grammar and semantics follow MLflow 3.17.2's SQL registry store
(``mlflow/store/model_registry/sqlalchemy_store.py``) and its parsers
(``SearchModelUtils``, ``SearchModelVersionUtils`` in ``mlflow/utils/search_utils.py``):

* entities are ``attribute`` (or a bare key), ``tag`` and ``tags``, unaliased and case-sensitive;
  attribute names are checked *before* quotes are removed (```name``` is not ``name``);
* registered models filter on ``name`` (``= != LIKE ILIKE IN NOT IN``) and tags
  (``= != LIKE ILIKE``); model versions also on ``run_id`` (``IN`` too), ``source_path`` (the
  ``source`` column) and ``version_number`` (``= != < <= > >=``, an integer, also written as a
  quoted integer: ``version_number = '3'``);
* a tag clause matches when the row has that tag with a satisfying value, so ``tags.k != 'v'``
  does **not** match rows without the tag; there is no ``IS NULL`` here;
* prompts (MLflow 3 GenAI prompts are registered models tagged ``mlflow.prompt.is_prompt =
  'true'``) are excluded unless the filter asks for them: the *first* clause on that tag decides.
  If it is ``= 'true'`` or ``!= 'false'`` (value compared case-insensitively) all clauses on the
  tag are ordinary tag clauses. Otherwise every clause on the tag is dropped and rows whose model
  carries the tag with exactly ``'true'`` are removed by an anti-join. That is why the clause the
  client always appends, ``tag.`mlflow.prompt.is_prompt` != 'true'``, keeps models that do not
  have the tag at all. For model versions the anti-join looks at the *version* tags of every
  version of the model, as MLflow does;
* deleted model versions are never returned.

Errors come in MLflow's order: the parser's (value types, lists, attribute names), then for
registered models ``order_by`` and the page token before the comparator checks, for model
versions the comparator checks before ``order_by`` and the page token. Where MLflow raises an
internal error (``IS NULL`` in a registry filter, a duplicate ``order_by`` key, ``name =
('a', 'b')``) evtrack answers INVALID_PARAMETER_VALUE.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from evtrack.errors import EvtrackError, invalid
from evtrack.permissions import Visibility
from evtrack.search._filter import (
    NUMERIC_COMPARATORS,
    STRING_COMPARATORS,
    Comparison,
    Entity,
    Value,
    _check_list_shape,
    _check_parseable,
    _key_value,
    _list_value,
    _number,
    _Operand,
    _split_clauses,
    _string_value,
    render_keys,
    render_set,
    resolve_experiment_identifier,
)
from evtrack.search._lexer import RawIdentifier, unquote_key
from evtrack.search._order import OrderKey, _split_item
from evtrack.search._page_token import decode_page_token
from evtrack.search._sql import (
    _SQL_OPERATORS,
    SqlQuery,
    _direction,
    _page,
    _Params,
    _scalar,
    _texts,
    visibility_condition,
)

IS_PROMPT_TAG_KEY: Final = "mlflow.prompt.is_prompt"

REGISTRY_ENTITIES: Final = ("attribute", "tag", "tags")
TAG_COMPARATORS: Final = ("=", "!=", "LIKE", "ILIKE")

REGISTERED_MODEL_ATTRIBUTES: Final = ("name",)
REGISTERED_MODEL_ORDER_KEYS: Final = ("name", "timestamp", "last_updated_timestamp")
# What MLflow's error message recommends (``timestamp`` and ``last_updated_timestamp`` are one).
_REGISTERED_MODEL_ORDER_SHOWN: Final = ("name", "timestamp")

MODEL_VERSION_ATTRIBUTES: Final = ("name", "run_id", "source_path", "version_number")
# Attributes MLflow's parser lets compare with a number (only version_number is searchable).
MODEL_VERSION_NUMERIC_ATTRIBUTES: Final = (
    "creation_timestamp",
    "last_updated_timestamp",
    "version_number",
)
MODEL_VERSION_ORDER_KEYS: Final = (
    "creation_timestamp",
    "last_updated_timestamp",
    "name",
    "version_number",
)
_MODEL_VERSION_DEFAULT_ORDER: Final = (
    "last_updated_timestamp DESC",
    "name ASC",
    "version_number DESC",
)

SEARCH_REGISTERED_MODEL_MAX_RESULTS_DEFAULT: Final = 100
SEARCH_REGISTERED_MODEL_MAX_RESULTS_THRESHOLD: Final = 1000
# The REST default (proto) when max_results is absent; MlflowClient always sends 10000.
SEARCH_MODEL_VERSION_MAX_RESULTS_DEFAULT: Final = 200_000
SEARCH_MODEL_VERSION_MAX_RESULTS_THRESHOLD: Final = 200_000

_REGISTERED_MODEL_COLUMNS: Final = {"name": "m.name"}
_MODEL_VERSION_TEXT_COLUMNS: Final = {
    "name": "v.name",
    "run_id": "v.run_id",
    "source_path": "v.source",
}
_REGISTERED_MODEL_ORDER_COLUMNS: Final = {
    "name": 'm.name COLLATE "C"',
    "last_updated_timestamp": "m.last_updated_timestamp",
}
_MODEL_VERSION_ORDER_COLUMNS: Final = {
    "name": 'v.name COLLATE "C"',
    "version_number": "v.version",
    "creation_timestamp": "v.creation_timestamp",
    "last_updated_timestamp": "v.last_updated_timestamp",
}


# --- filters ----------------------------------------------------------------------------------


def _resolve_identifier(raw: RawIdentifier, valid_attributes: Sequence[str]) -> tuple[Entity, str]:
    """``SearchModelUtils._get_model_search_identifier``: the attribute check sees the raw key."""
    if raw.entity is None:
        entity: Entity = "attribute"
    else:
        if raw.entity not in REGISTRY_ENTITIES:
            raise invalid(
                f"Invalid entity type '{raw.entity}'. Valid entity types are {REGISTRY_ENTITIES}"
            )
        entity = "attribute" if raw.entity == "attribute" else "tag"
    if entity == "attribute" and raw.key not in valid_attributes:
        raise invalid(
            f"Invalid attribute key '{raw.key}' specified. "
            f"Valid keys are '{render_keys(valid_attributes)}'"
        )
    return entity, unquote_key(raw.key)


def _attribute_value(
    key: str,
    operand: _Operand,
    list_keys: Sequence[str],
    numeric_keys: Sequence[str] | None,
) -> Value:
    """Value of an attribute clause as MLflow's registry parsers read it."""
    text = _string_value(operand)
    if text is not None:
        return text
    if operand.kind == "list":
        if key not in list_keys:
            raise invalid(
                f"Only {sorted(list_keys)} attributes support comparison with a list of quoted "
                "string values."
            )
        return _list_value(operand)
    if operand.kind == "number" and numeric_keys is not None:
        if key not in numeric_keys:
            raise invalid(
                f"Only the '{render_keys(numeric_keys)}' attributes support comparison with "
                "numeric values."
            )
        return _number(operand.text)
    raise invalid(
        "Expected a quoted string value or a list of quoted string values for attributes. "
        f"Got value {operand.text}"
    )


def _parse_clauses(
    filter_string: str | None,
    valid_attributes: Sequence[str],
    list_keys: Sequence[str],
    numeric_keys: Sequence[str] | None,
) -> list[Comparison]:
    """The parser's half: clause shapes, entities, attribute names and value types."""
    if not filter_string:
        return []
    _check_parseable(filter_string)
    comparisons: list[Comparison] = []
    for clause in _split_clauses(filter_string, quote_invalid=False):
        entity, key = _resolve_identifier(clause.ident, valid_attributes)
        comparator = clause.comparator.upper()
        value: Value = None
        if clause.operand is not None:
            if entity == "tag":
                value = _key_value("tag", clause.operand)
            else:
                value = _attribute_value(key, clause.operand, list_keys, numeric_keys)
        comparisons.append(Comparison(entity, key, comparator, value))
    return comparisons


def _check_tag_comparator(clause: Comparison) -> None:
    if clause.comparator not in TAG_COMPARATORS:
        raise invalid(f"Invalid comparator for tag: {clause.comparator}")


def _check_registered_model_clauses(clauses: Sequence[Comparison]) -> None:
    """The store's half (``_get_search_registered_model_filter_query``): comparators."""
    for clause in clauses:
        if clause.entity == "tag":
            _check_tag_comparator(clause)
        elif clause.comparator not in STRING_COMPARATORS:
            raise invalid(f"Invalid comparator for attribute: {clause.comparator}")
        _check_list_shape(clause.comparator, clause.value)


def _version_number(value: Value) -> int:
    """``version_number`` must be an integer; MLflow also takes a quoted one (``'3'``)."""
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            pass
    raise invalid(f"Invalid value for numeric attribute 'version_number': {value!r}")


def _check_model_version_clauses(clauses: Sequence[Comparison]) -> list[Comparison]:
    """The store's half (``_get_search_model_versions_filter_clauses``); returns the clauses
    with ``version_number`` values converted to int."""
    checked: list[Comparison] = []
    for clause in clauses:
        comparator, value = clause.comparator, clause.value
        if clause.entity == "tag":
            _check_tag_comparator(clause)
        elif clause.key == "version_number":
            if comparator not in NUMERIC_COMPARATORS:
                raise invalid(f"Invalid comparator for attribute version_number: {comparator}")
            value = _version_number(value)
        elif comparator not in STRING_COMPARATORS or (
            comparator in ("IN", "NOT IN") and clause.key not in ("name", "run_id")
        ):
            raise invalid(f"Invalid comparator for attribute: {comparator}")
        _check_list_shape(comparator, value)
        checked.append(Comparison(clause.entity, clause.key, comparator, value))
    return checked


def parse_registered_model_filter(filter_string: str | None) -> list[Comparison]:
    """Parse and validate a ``registered-models/search`` filter; None or ``""``: no filter."""
    clauses = _parse_clauses(filter_string, REGISTERED_MODEL_ATTRIBUTES, ("name",), None)
    _check_registered_model_clauses(clauses)
    return clauses


def parse_model_version_filter(filter_string: str | None) -> list[Comparison]:
    """Parse and validate a ``model-versions/search`` filter; None or ``""``: no filter."""
    clauses = _parse_clauses(
        filter_string,
        MODEL_VERSION_ATTRIBUTES,
        ("name", "run_id"),
        MODEL_VERSION_NUMERIC_ATTRIBUTES,
    )
    return _check_model_version_clauses(clauses)


def _split_prompt_clauses(clauses: Sequence[Comparison]) -> tuple[list[Comparison], bool]:
    """The clauses to apply, and whether prompts must be excluded (MLflow's
    ``_is_querying_prompt`` / ``_update_query_to_exclude_prompts``)."""

    def on_prompt_tag(clause: Comparison) -> bool:
        return clause.entity == "tag" and clause.key == IS_PROMPT_TAG_KEY

    first = next((c for c in clauses if on_prompt_tag(c)), None)
    if first is not None:
        value = first.value
        assert isinstance(value, str)
        if (first.comparator == "=" and value.lower() == "true") or (
            first.comparator == "!=" and value.lower() == "false"
        ):
            return list(clauses), False
    return [c for c in clauses if not on_prompt_tag(c)], True


# --- order_by ---------------------------------------------------------------------------------


def _duplicate(order_by: Sequence[str]) -> EvtrackError:
    return invalid(f"`order_by` contains duplicate fields: {list(order_by)}")


def parse_registered_model_order_by(order_by: Sequence[str] | None) -> list[OrderKey]:
    """Sort keys for registered models: ``name`` and ``last_updated_timestamp`` (also spelled
    ``timestamp``), then ``name ASC`` unless already present.

    Like MLflow's SQL store, ``creation_timestamp`` is rejected (its parser lists it, its store
    does not) and keys take no entity prefix or quotes.
    """
    keys: list[OrderKey] = []
    for item in order_by or ():
        ident, ascending = _split_item(item)
        token = item[ident.start : ident.end]
        if token not in REGISTERED_MODEL_ORDER_KEYS:
            raise invalid(
                f"Invalid order by key '{token}' specified. "
                f"Valid keys are '{render_keys(_REGISTERED_MODEL_ORDER_SHOWN)}'"
            )
        key = "name" if token == "name" else "last_updated_timestamp"
        if any(k.key == key for k in keys):
            raise _duplicate(order_by or ())
        keys.append(OrderKey("attribute", key, ascending))
    if not any(k.key == "name" for k in keys):
        keys.append(OrderKey("attribute", "name", True))
    return keys


def parse_model_version_order_by(order_by: Sequence[str] | None) -> list[OrderKey]:
    """Sort keys for model versions; MLflow's default when none are given is
    ``last_updated_timestamp DESC, name ASC, version_number DESC``. Tiebreakers ``name ASC``
    and ``version_number DESC`` are appended unless present.

    As in MLflow, ``tags.<k>`` passes the parser and is then rejected by the store unless
    ``<k>`` happens to be a sortable attribute name (``tags.name`` sorts by name).
    """
    keys: list[OrderKey] = []
    for item in order_by or _MODEL_VERSION_DEFAULT_ORDER:
        ident, ascending = _split_item(item)
        _, key = resolve_experiment_identifier(ident, MODEL_VERSION_ORDER_KEYS)
        if key not in MODEL_VERSION_ORDER_KEYS:
            raise invalid(
                f"Invalid order by key '{key}' specified. "
                f"Valid keys are {render_set(MODEL_VERSION_ORDER_KEYS)}"
            )
        if any(k.key == key for k in keys):
            raise _duplicate(order_by or ())
        keys.append(OrderKey("attribute", key, ascending))
    if not any(k.key == "name" for k in keys):
        keys.append(OrderKey("attribute", "name", True))
    if not any(k.key == "version_number" for k in keys):
        keys.append(OrderKey("attribute", "version_number", False))
    return keys


def _order_terms(keys: Sequence[OrderKey], columns: dict[str, str]) -> str:
    return ", ".join(f"{columns[k.key]} {_direction(k.ascending)} NULLS LAST" for k in keys)


# --- max_results ------------------------------------------------------------------------------


def _check_max_results(max_results: int, threshold: int) -> None:
    """MLflow's store wording below 1; above the limit, what its REST handler answers to the
    client's ``GET`` (the value arrives as a query-string, hence ``"n"`` and type 'str')."""
    if max_results < 1:
        raise invalid(
            f"Invalid value for max_results. It must be a positive integer, but got {max_results}"
        )
    if max_results > threshold:
        raise invalid(
            f"Invalid value \"{max_results}\" for parameter 'max_results' supplied:  Hint: Value "
            "was of type 'str'. See the API docs for more information about request parameters."
        )


# --- compilers --------------------------------------------------------------------------------


def _tag_condition(clause: Comparison, table: str, correlation: str, params: _Params) -> str:
    """The row has the tag and its value satisfies the clause (no row: no match)."""
    key_ref = params.add(clause.key, "::text")
    compare = _scalar("f.value", clause.comparator, _texts(clause.value), params)
    return (
        f"EXISTS (SELECT 1 FROM {table} AS f "
        f"WHERE {correlation} AND f.key = {key_ref} AND {compare})"
    )


def _prompt_exclusion(table: str, correlation: str, params: _Params) -> str:
    key_ref = params.add(IS_PROMPT_TAG_KEY, "::text")
    value_ref = params.add("true", "::text")
    return (
        f"NOT EXISTS (SELECT 1 FROM {table} AS p WHERE {correlation} "
        f"AND p.key = {key_ref} AND p.value = {value_ref})"
    )


def compile_registered_model_search(
    filter_string: str | None,
    order_by: Sequence[str] | None,
    max_results: int | None,
    page_token: str | None,
    visible: Visibility | None = None,
) -> SqlQuery:
    """Compile ``registered-models/search`` to a query selecting ``model_key`` in MLflow's order.

    ``max_results`` None means the REST default (100); the limit is 1000.
    """
    if max_results is None:
        max_results = SEARCH_REGISTERED_MODEL_MAX_RESULTS_DEFAULT
    _check_max_results(max_results, SEARCH_REGISTERED_MODEL_MAX_RESULTS_THRESHOLD)
    clauses = _parse_clauses(filter_string, REGISTERED_MODEL_ATTRIBUTES, ("name",), None)
    order = parse_registered_model_order_by(order_by)
    offset = decode_page_token(page_token)
    _check_registered_model_clauses(clauses)
    applied, exclude_prompts = _split_prompt_clauses(clauses)

    params = _Params()
    tags = "rm_registry.registered_model_tags"
    where: list[str] = []
    for clause in applied:
        if clause.entity == "tag":
            where.append(_tag_condition(clause, tags, "f.model_key = m.model_key", params))
        else:
            column = _REGISTERED_MODEL_COLUMNS[clause.key]
            where.append(_scalar(column, clause.comparator, _texts(clause.value), params))
    if exclude_prompts:
        where.append(_prompt_exclusion(tags, "p.model_key = m.model_key", params))
    if (allowed := visibility_condition("m.name", visible, params)) is not None:
        where.append(allowed)
    sql = "\n".join(
        [
            "SELECT m.model_key",
            "FROM rm_registry.registered_models AS m",
            *(["WHERE " + "\n  AND ".join(where)] if where else []),
            "ORDER BY " + _order_terms(order, _REGISTERED_MODEL_ORDER_COLUMNS),
        ]
    )
    return _page(sql, params, offset, max_results)


def compile_model_version_search(
    filter_string: str | None,
    order_by: Sequence[str] | None,
    max_results: int | None,
    page_token: str | None,
    visible: Visibility | None = None,
) -> SqlQuery:
    """Compile ``model-versions/search`` to a query selecting ``(model_key, version)`` in
    MLflow's order. Deleted versions are never returned.

    ``max_results`` None means the REST default (200000, also the limit; MlflowClient sends
    10000).
    """
    if max_results is None:
        max_results = SEARCH_MODEL_VERSION_MAX_RESULTS_DEFAULT
    _check_max_results(max_results, SEARCH_MODEL_VERSION_MAX_RESULTS_THRESHOLD)
    clauses = parse_model_version_filter(filter_string)
    order = parse_model_version_order_by(order_by)
    offset = decode_page_token(page_token)
    applied, exclude_prompts = _split_prompt_clauses(clauses)

    params = _Params()
    tags = "rm_registry.model_version_tags"
    where = ["NOT v.deleted"]
    for clause in applied:
        if clause.entity == "tag":
            correlation = "f.model_key = v.model_key AND f.version = v.version"
            where.append(_tag_condition(clause, tags, correlation, params))
        elif clause.key == "version_number":
            assert isinstance(clause.value, int)
            operator = _SQL_OPERATORS[clause.comparator]
            where.append(f"v.version {operator} {params.number(clause.value)}")
        else:
            column = _MODEL_VERSION_TEXT_COLUMNS[clause.key]
            where.append(_scalar(column, clause.comparator, _texts(clause.value), params))
    if exclude_prompts:
        where.append(_prompt_exclusion(tags, "p.model_key = v.model_key", params))
    if (allowed := visibility_condition("v.name", visible, params)) is not None:
        where.append(allowed)
    # (name, version) is unique among live versions; model_key only guards pagination if a
    # projection ever shows two live models under one name.
    terms = _order_terms(order, _MODEL_VERSION_ORDER_COLUMNS) + ', v.model_key COLLATE "C" ASC'
    sql = "\n".join(
        [
            "SELECT v.model_key, v.version",
            "FROM rm_registry.model_versions AS v",
            "WHERE " + "\n  AND ".join(where),
            "ORDER BY " + terms,
        ]
    )
    return _page(sql, params, offset, max_results)

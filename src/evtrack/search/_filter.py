"""MLflow search filter strings -> a validated list of comparisons (a conjunction).

The grammar is MLflow's (``mlflow/utils/search_utils.py`` 3.17.2, compat notes section 3):
``clause [AND clause]*`` where a clause is ``identifier comparator value``,
``identifier IS [NOT] NULL`` or ``identifier [NOT] IN (list)``. There is no OR and there are no
parentheses around clauses.

Parsing runs in two passes, in the same order as MLflow, so the *first* error reported for a bad
string is the one MLflow would report:

1. a syntactic pass splits the string into clause-shaped pieces and collects everything that does
   not fit (``OR``, ``(...)``, stray tokens) into one "Invalid clause(s) in filter string" error;
2. a semantic pass validates each clause per entity: entity and key names, value types, and the
   comparators allowed for that entity.

MLflow splits pass 2 between its parser and its SQL store, which makes a few errors depend on the
backend (e.g. ``run_id = ('a','b')`` is a database error). Here all validation happens up front so
the SQL compiler only ever sees clauses it can translate.

Quirks kept on purpose because clients may rely on them:

* ``AND`` is a separator that may be repeated, leading or trailing, or even omitted between two
  clauses (``a = 1 b = 2``), exactly as MLflow tolerates it;
* scalar string values keep escape characters verbatim (``'it''s'`` is the 5 characters
  ``it''s``); use double quotes for a value containing a single quote. Lists are Python literals
  (``('it\\'s',)`` is ``it's``), because MLflow evaluates them with ``ast.literal_eval``;
* a filter that is only whitespace is an error, the empty string is "no filter".

Deliberate differences: comparators are case-insensitive for experiments too (MLflow rejects
``tags.k like 'v'`` on experiments but accepts it on runs), and error messages that embed a set of
comparators list it in a fixed order (MLflow prints a Python set, whose order varies per process).
"""

from __future__ import annotations

import ast
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Literal

from evtrack.errors import invalid
from evtrack.search._lexer import (
    INTEGER_RE,
    Kind,
    RawIdentifier,
    Token,
    read_identifier,
    tokenize,
    trim_backticks,
    unquote_key,
)

Entity = Literal["metric", "parameter", "tag", "attribute", "dataset"]
Value = str | float | tuple[str, ...] | None


@dataclass(frozen=True, slots=True)
class Comparison:
    """One validated clause.

    ``entity`` is the canonical MLflow entity name, ``key`` has quotes removed and attribute
    aliases resolved (``created`` -> ``start_time``, ``run name`` -> ``run_name``), and
    ``comparator`` is upper case. ``value`` is a float for metrics, an int or float for numeric
    attributes, a tuple of strings for ``IN``/``NOT IN``, None for ``IS [NOT] NULL`` and a str
    otherwise.
    """

    entity: Entity
    key: str
    comparator: str
    value: Value


# --- vocabulary -------------------------------------------------------------------------------

ENTITY_ALIASES: Final[dict[str, Entity]] = {
    "metric": "metric",
    "metrics": "metric",
    "parameter": "parameter",
    "parameters": "parameter",
    "param": "parameter",
    "params": "parameter",
    "tag": "tag",
    "tags": "tag",
    "attribute": "attribute",
    "attributes": "attribute",
    "attr": "attribute",
    "run": "attribute",
    "dataset": "dataset",
    "datasets": "dataset",
}
_ENTITY_NAMES: Final = ["metric", "parameter", "tag", "attribute", "dataset"]

RUN_STRING_ATTRIBUTES: Final = ("artifact_uri", "run_id", "run_name", "status", "user_id")
RUN_NUMERIC_ATTRIBUTES: Final = ("end_time", "start_time")
_ALIAS_NUMERIC: Final = ("created", "Created")
_ALIAS_RUN_NAME: Final = ("run name", "Run name", "Run Name")
RUN_SEARCH_ATTRIBUTES: Final = frozenset(
    RUN_STRING_ATTRIBUTES + RUN_NUMERIC_ATTRIBUTES + _ALIAS_NUMERIC + _ALIAS_RUN_NAME
)
_RUN_NUMERIC_KEYS: Final = frozenset(RUN_NUMERIC_ATTRIBUTES + _ALIAS_NUMERIC)
DATASET_KEYS: Final = ("name", "digest", "context")

EXPERIMENT_ENTITIES: Final = ("attribute", "tag", "tags")
EXPERIMENT_ATTRIBUTES: Final = ("name", "experiment_id", "creation_time", "last_update_time")
_EXPERIMENT_NUMERIC_KEYS: Final = frozenset({"creation_time", "last_update_time"})

NUMERIC_COMPARATORS: Final = (">", ">=", "<", "<=", "=", "!=")
KEY_VALUE_COMPARATORS: Final = ("=", "!=", "LIKE", "ILIKE", "IS NULL", "IS NOT NULL")
STRING_COMPARATORS: Final = ("=", "!=", "LIKE", "ILIKE", "IN", "NOT IN")
_LIST_COMPARATORS: Final = ("IN", "NOT IN")

INT64_MIN: Final = -(2**63)
INT64_MAX: Final = 2**63 - 1


def translate_attribute_alias(key: str) -> str:
    """MLflow's display-name aliases for run attributes."""
    if key in _ALIAS_NUMERIC:
        return "start_time"
    if key in _ALIAS_RUN_NAME:
        return "run_name"
    return key


def render_set(items: Sequence[str]) -> str:
    """Render like MLflow's ``{'a', 'b'}`` set repr, but in a stable order."""
    return "{" + ", ".join(f"'{item}'" for item in items) + "}"


def render_keys(items: Sequence[str] | frozenset[str]) -> str:
    return render_set(sorted(items))


# --- pass 1: clause shapes --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Operand:
    """The value side of a clause, still as written."""

    kind: Literal["string", "number", "list", "word"]
    text: str


@dataclass(frozen=True, slots=True)
class _RawClause:
    ident: RawIdentifier
    comparator: str
    operand: _Operand | None


def _paren_end(tokens: list[Token], i: int) -> int | None:
    """Index just past the ``)`` matching the ``(`` at ``i``, or None if unbalanced."""
    depth = 0
    for j in range(i, len(tokens)):
        tok = tokens[j]
        if tok.kind is Kind.PUNCT and tok.text == "(":
            depth += 1
        elif tok.kind is Kind.PUNCT and tok.text == ")":
            depth -= 1
            if depth == 0:
                return j + 1
    return None


def _is_open_paren(tokens: list[Token], i: int) -> bool:
    return i < len(tokens) and tokens[i].kind is Kind.PUNCT and tokens[i].text == "("


def _read_operand(text: str, tokens: list[Token], i: int) -> tuple[_Operand, int] | None:
    if i >= len(tokens):
        return None
    tok = tokens[i]
    if tok.kind in (Kind.SQUOTE, Kind.DQUOTE):
        return _Operand("string", tok.text), i + 1
    if tok.kind is Kind.NUMBER:
        return _Operand("number", tok.text), i + 1
    if _is_open_paren(tokens, i):
        end = _paren_end(tokens, i)
        if end is None:
            return None
        return _Operand("list", text[tok.start : tokens[end - 1].end]), end
    ident = read_identifier(tokens, i)
    if ident is not None:
        # An unquoted word (or backtick name) where a value belongs. sqlparse reads it as an
        # identifier, and MLflow then reports it as an unquoted string value.
        raw, end = ident
        return _Operand("word", text[raw.start : raw.end]), end
    return None


def _read_clause(text: str, tokens: list[Token], i: int) -> tuple[_RawClause, int] | None:
    found = read_identifier(tokens, i)
    if found is None:
        return None
    ident, j = found
    if j >= len(tokens):
        return None
    tok = tokens[j]
    if tok.kind is Kind.OP:
        comparator, j = tok.text, j + 1
    elif tok.is_word("IS"):
        if j + 1 < len(tokens) and tokens[j + 1].is_word("NULL"):
            return _RawClause(ident, "IS NULL", None), j + 2
        if j + 2 < len(tokens) and tokens[j + 1].is_word("NOT") and tokens[j + 2].is_word("NULL"):
            return _RawClause(ident, "IS NOT NULL", None), j + 3
        return None
    elif tok.is_word("IN") or (
        tok.is_word("NOT") and j + 1 < len(tokens) and tokens[j + 1].is_word("IN")
    ):
        comparator = "IN" if tok.is_word("IN") else "NOT IN"
        j += 1 if comparator == "IN" else 2
        if not _is_open_paren(tokens, j):
            return None
    elif tok.is_word("LIKE", "ILIKE", "RLIKE"):
        comparator, j = tok.text, j + 1
    elif (
        tok.is_word("NOT")
        and j + 1 < len(tokens)
        and tokens[j + 1].is_word("LIKE", "ILIKE", "RLIKE")
    ):
        comparator, j = f"NOT {tokens[j + 1].text}", j + 2
    else:
        return None
    operand = _read_operand(text, tokens, j)
    if operand is None:
        return None
    value, end = operand
    return _RawClause(ident, comparator, value), end


def _scan_clauses(filter_string: str) -> tuple[list[_RawClause], list[str]]:
    """Pass 1: the clauses, and the text of every piece that is not part of one."""
    tokens = tokenize(filter_string)
    clauses: list[_RawClause] = []
    invalids: list[str] = []
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if tok.is_word("AND"):
            i += 1
            continue
        found = _read_clause(filter_string, tokens, i)
        if found is not None:
            clauses.append(found[0])
            i = found[1]
            continue
        # Report the largest meaningful unit that failed: a parenthesised group, an
        # identifier, or a single token.
        end: int | None = None
        if _is_open_paren(tokens, i):
            end = _paren_end(tokens, i)
        if end is None:
            ident = read_identifier(tokens, i)
            end = ident[1] if ident is not None else i + 1
        invalids.append(filter_string[tok.start : tokens[end - 1].end])
        i = end
    return clauses, invalids


def _split_clauses(filter_string: str, quote_invalid: bool) -> list[_RawClause]:
    """Pass 1 with MLflow's common error: anything left over is reported in a single error."""
    clauses, invalids = _scan_clauses(filter_string)
    if invalids:
        shown = ", ".join(f"'{s}'" if quote_invalid else s for s in invalids)
        raise invalid(f"Invalid clause(s) in filter string: {shown}")
    return clauses


def _check_parseable(filter_string: str) -> None:
    if not filter_string.strip():
        raise invalid(f"Invalid filter '{filter_string}'. Could not be parsed.")


# --- pass 2: values ---------------------------------------------------------------------------


def _string_value(operand: _Operand) -> str | None:
    """The text inside quotes, verbatim (MLflow does not unescape scalar strings)."""
    if operand.kind == "string":
        return operand.text[1:-1]
    if operand.kind == "word":
        raise invalid(
            "Parameter value is either not quoted or unidentified quote types used for string "
            f"value {operand.text}. Use either single or double quotes."
        )
    return None


def _list_value(operand: _Operand) -> tuple[str, ...]:
    """Evaluate ``(...)`` as a Python literal, as MLflow does, and require non-empty strings."""
    try:
        parsed: object = ast.literal_eval(operand.text)
    except (SyntaxError, ValueError, TypeError, MemoryError, RecursionError) as e:
        raise invalid(
            "While parsing a list in the query, expected a non-empty list of string values, "
            "but got ill-formed list."
        ) from e
    items = parsed if isinstance(parsed, tuple) else (parsed,)
    if not items:
        raise invalid(
            "While parsing a list in the query, expected a non-empty list of string values, "
            "but got empty list"
        )
    strings = tuple(item for item in items if isinstance(item, str))
    if len(strings) != len(items):
        raise invalid(
            "While parsing a list in the query, expected string value, punctuation, or "
            f"whitespace, but got different type in list: {items!r}"
        )
    return strings


def _number(text: str) -> float:
    """An integer literal stays an int (it binds as bigint); anything else is a float."""
    return int(text) if INTEGER_RE.fullmatch(text) else float(text)


def _attribute_value(
    key: str, operand: _Operand, numeric_keys: frozenset[str], list_key: str
) -> Value:
    if key in numeric_keys:
        if operand.kind != "number":
            raise invalid(
                f"Expected numeric value type for numeric attribute: {key}. Found {operand.text}"
            )
        return _number(operand.text)
    text = _string_value(operand)
    if text is not None:
        return text
    if operand.kind == "list":
        if key != list_key:
            raise invalid(
                f"Only ['{list_key}'] attributes support comparison with a list of quoted "
                "string values."
            )
        return _list_value(operand)
    raise invalid(f"Expected a quoted string value for attributes. Got value {operand.text}")


def _key_value(entity: Entity, operand: _Operand) -> str:
    text = _string_value(operand)
    if text is None:
        raise invalid(
            f"Expected a quoted string value for {entity} (e.g. 'my-value'). "
            f"Got value {operand.text}"
        )
    return text


def _check_comparator(comparator: str, allowed: Sequence[str]) -> None:
    if comparator not in allowed:
        raise invalid(f"Invalid comparator '{comparator}' not one of '{render_set(allowed)}'")


def _check_list_shape(comparator: str, value: Value) -> None:
    """``IN`` needs a list and a list needs ``IN`` (MLflow fails in SQL for ``= ('a','b')``)."""
    if isinstance(value, tuple) and comparator not in _LIST_COMPARATORS:
        raise invalid(
            f"Invalid comparator '{comparator}' for a list of values. Use 'IN' or 'NOT IN'."
        )


# --- runs -------------------------------------------------------------------------------------


def resolve_run_identifier(
    raw: RawIdentifier, valid_attributes: frozenset[str]
) -> tuple[Entity, str]:
    """Canonical entity and unquoted key for a runs identifier; shared with ``order_by``."""
    if raw.entity is None:
        entity: Entity = "attribute"
    else:
        name = trim_backticks(raw.entity)
        if name not in ENTITY_ALIASES:
            raise invalid(f"Invalid entity type '{name}'. Valid values are {_ENTITY_NAMES}")
        entity = ENTITY_ALIASES[name]
    key = unquote_key(raw.key)
    if entity == "attribute" and key not in valid_attributes:
        raise invalid(
            f"Invalid attribute key '{key}' specified. "
            f"Valid keys are '{render_keys(valid_attributes)}'"
        )
    if entity == "dataset" and key not in DATASET_KEYS:
        raise invalid(
            f"Invalid dataset key '{key}' specified. Valid keys are '{render_keys(DATASET_KEYS)}'"
        )
    return entity, key


def _resolve_run_clause(clause: _RawClause) -> Comparison:
    entity, key = resolve_run_identifier(clause.ident, RUN_SEARCH_ATTRIBUTES)
    comparator = clause.comparator.upper()
    operand = clause.operand
    if operand is None:
        if entity not in ("tag", "parameter"):
            raise invalid(
                "IS NULL / IS NOT NULL is only supported for tags and params, "
                f"not for '{entity}' '{key}'"
            )
        return Comparison(entity, key, comparator, None)

    value: Value
    if entity == "metric":
        if operand.kind != "number":
            raise invalid(f"Expected numeric value type for metric. Found {operand.text}")
        value = float(operand.text)
        _check_comparator(comparator, NUMERIC_COMPARATORS)
    elif entity in ("parameter", "tag"):
        value = _key_value(entity, operand)
        _check_comparator(comparator, KEY_VALUE_COMPARATORS)
    elif entity == "attribute":
        value = _attribute_value(key, operand, _RUN_NUMERIC_KEYS, "run_id")
        numeric = key in _RUN_NUMERIC_KEYS
        _check_comparator(comparator, NUMERIC_COMPARATORS if numeric else STRING_COMPARATORS)
        key = translate_attribute_alias(key)
    else:  # dataset
        text = _string_value(operand)
        if text is not None:
            value = text
        elif operand.kind == "list":
            value = _list_value(operand)
        else:
            raise invalid(
                f"Expected a quoted string value for dataset attributes. Got value {operand.text}"
            )
        _check_comparator(comparator, STRING_COMPARATORS)
    _check_list_shape(comparator, value)
    return Comparison(entity, key, comparator, value)


def parse_run_filter(filter_string: str | None) -> list[Comparison]:
    """Parse and validate a ``runs/search`` filter; None or ``""`` means no filter."""
    if not filter_string:
        return []
    _check_parseable(filter_string)
    return [_resolve_run_clause(c) for c in _split_clauses(filter_string, quote_invalid=True)]


# --- experiments ------------------------------------------------------------------------------


def resolve_experiment_identifier(
    raw: RawIdentifier, valid_attributes: Sequence[str] = EXPERIMENT_ATTRIBUTES
) -> tuple[Entity, str]:
    """Experiments accept only ``attribute``, ``tag`` and ``tags`` as entity, unaliased.

    MLflow reuses this resolver (``SearchExperimentsUtils._get_identifier``) for model version
    ``order_by`` items, with that search's attribute names as ``valid_attributes``.
    """
    if raw.entity is None:
        entity: Entity = "attribute"
    else:
        if raw.entity not in EXPERIMENT_ENTITIES:
            raise invalid(
                f"Invalid entity type '{raw.entity}'. Valid entity types are {EXPERIMENT_ENTITIES}"
            )
        entity = "attribute" if raw.entity == "attribute" else "tag"
    key = unquote_key(raw.key)
    if entity == "attribute" and key not in valid_attributes:
        raise invalid(
            f"Invalid attribute key '{key}' specified. "
            f"Valid keys are '{render_keys(valid_attributes)}'"
        )
    return entity, key


def _experiment_id(text: str) -> str:
    """Validate an experiment id literal; it stays a string in the AST, like MLflow's."""
    try:
        number = int(text)
    except ValueError:
        number = None
    if number is None or not INT64_MIN <= number <= INT64_MAX:
        raise invalid(f"Invalid experiment ID '{text}'. Experiment ID must be a valid integer.")
    return text


def _resolve_experiment_clause(clause: _RawClause) -> Comparison:
    entity, key = resolve_experiment_identifier(clause.ident)
    comparator = clause.comparator.upper()
    operand = clause.operand
    if operand is None:
        if entity != "tag":
            raise invalid(
                f"IS NULL / IS NOT NULL is only supported for tags, not for attribute '{key}'"
            )
        return Comparison(entity, key, comparator, None)

    value: Value
    if entity == "tag":
        value = _key_value(entity, operand)
        if comparator not in ("=", "!=", "LIKE", "ILIKE"):
            raise invalid(f"Invalid comparator for tag: {comparator}")
    else:
        value = _attribute_value(key, operand, _EXPERIMENT_NUMERIC_KEYS, "experiment_id")
        if key == "experiment_id":
            if comparator not in ("=", "!=", "IN", "NOT IN"):
                raise invalid(f"Invalid comparator for experiment_id: {comparator}")
            if isinstance(value, tuple):
                value = tuple(_experiment_id(v) for v in value)
            else:
                value = _experiment_id(str(value))
        elif key in _EXPERIMENT_NUMERIC_KEYS:
            _check_comparator(comparator, NUMERIC_COMPARATORS)
            if isinstance(value, float) and not isinstance(value, int):
                raise invalid(f"Invalid value for numeric attribute '{key}': {str(value)!r}")
        else:
            _check_comparator(comparator, STRING_COMPARATORS)
            if comparator not in ("=", "!=", "LIKE", "ILIKE"):
                raise invalid(f"Invalid comparator for string attribute: {comparator}")
    _check_list_shape(comparator, value)
    return Comparison(entity, key, comparator, value)


def parse_experiment_filter(filter_string: str | None) -> list[Comparison]:
    """Parse and validate an ``experiments/search`` filter; None or ``""`` means no filter."""
    if not filter_string:
        return []
    _check_parseable(filter_string)
    return [
        _resolve_experiment_clause(c) for c in _split_clauses(filter_string, quote_invalid=False)
    ]

"""``order_by`` items (``"<identifier> [ASC|DESC]"``) -> the complete, deterministic sort order.

The result already contains MLflow's implicit tiebreakers, so that every page boundary falls at
a well-defined place in one total order (offset pagination is only stable under a total order):

* runs: the requested keys, then ``start_time DESC`` unless the request already sorted by start
  time (``created`` counts), then ``run_id ASC`` (``sqlalchemy_store._get_orderby_clauses``);
* experiments: the requested keys or, when none, ``creation_time DESC, experiment_id ASC``; then
  ``experiment_id DESC`` unless ``experiment_id`` is already a key. The tiebreaker really is
  *descending* in MLflow 3.17.2 (``_get_search_experiments_order_by_clauses`` appends
  ``(experiment_id, False)``), so ``order_by=["name"]`` with duplicate names lists the newer id
  first. We mirror it.

Where nulls go (last in both directions) is the SQL compiler's concern; see ``_sql``.

Like MLflow: the direction word is case-insensitive, quoting works as in filters, the run name
aliases (``run name``) are *not* valid sort keys but ``created`` is, and sorting twice by the same
run key is an error. Unlike MLflow we ignore whitespace around an item (MLflow rejects
``" start_time DESC"``) and report the duplicate-key error as INVALID_PARAMETER_VALUE (MLflow
raises it without an error code, i.e. as a 500 that clients would retry).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from evtrack.errors import invalid
from evtrack.search._filter import (
    RUN_NUMERIC_ATTRIBUTES,
    RUN_STRING_ATTRIBUTES,
    Entity,
    resolve_experiment_identifier,
    resolve_run_identifier,
    translate_attribute_alias,
)
from evtrack.search._lexer import Kind, RawIdentifier, read_identifier, tokenize

RUN_ORDER_ATTRIBUTES: Final = frozenset(
    RUN_STRING_ATTRIBUTES + RUN_NUMERIC_ATTRIBUTES + ("created", "Created")
)

# MLflow appends ``experiment_id DESC`` as its tiebreaker; flip to True to break ties ascending.
EXPERIMENT_TIEBREAK_ASCENDING: Final = False


@dataclass(frozen=True, slots=True)
class OrderKey:
    """One sort key: ``entity`` is metric, parameter, tag or attribute; aliases are resolved."""

    entity: Entity
    key: str
    ascending: bool


def _split_item(item: str) -> tuple[RawIdentifier, bool]:
    """Read ``identifier [ASC|DESC]`` with the same identifier rules as filters."""
    unparsable = invalid(f"Invalid order_by clause '{item}'. Could not be parsed.")
    tokens = tokenize(item)
    found = read_identifier(tokens, 0)
    if found is None:
        raise unparsable
    ident, i = found
    rest = tokens[i:]
    if not rest:
        return ident, True
    if len(rest) > 1:
        raise unparsable
    direction = rest[0]
    if direction.kind is Kind.WORD and direction.text.lower() in ("asc", "desc"):
        return ident, direction.text.lower() == "asc"
    if direction.kind is Kind.WORD:
        raise invalid(f"Invalid ordering key in order_by clause '{item}'.")
    raise unparsable


def parse_run_order_by(order_by: Sequence[str] | None) -> list[OrderKey]:
    """Requested run sort keys followed by the implicit tiebreakers."""
    keys: list[OrderKey] = []
    seen: set[tuple[Entity, str]] = set()
    for item in order_by or ():
        ident, ascending = _split_item(item)
        entity, key = resolve_run_identifier(ident, RUN_ORDER_ATTRIBUTES)
        if entity == "dataset":
            raise invalid("Invalid identifier type 'dataset'")
        if entity == "attribute":
            key = translate_attribute_alias(key)
        if (entity, key) in seen:
            raise invalid(f"`order_by` contains duplicate fields: {list(order_by or ())}")
        seen.add((entity, key))
        keys.append(OrderKey(entity, key, ascending))
    if ("attribute", "start_time") not in seen:
        keys.append(OrderKey("attribute", "start_time", False))
    keys.append(OrderKey("attribute", "run_id", True))
    return keys


_EXPERIMENT_DEFAULT: Final = ("creation_time DESC", "experiment_id ASC")


def parse_experiment_order_by(order_by: Sequence[str] | None) -> list[OrderKey]:
    """Requested (or default) experiment sort keys followed by the ``experiment_id`` tiebreak."""
    keys: list[OrderKey] = []
    for item in order_by or _EXPERIMENT_DEFAULT:
        ident, ascending = _split_item(item)
        entity, key = resolve_experiment_identifier(ident)
        if entity != "attribute":
            raise invalid(f"Invalid order_by entity: {entity}")
        keys.append(OrderKey(entity, key, ascending))
    if not any(k.key == "experiment_id" for k in keys):
        keys.append(OrderKey("attribute", "experiment_id", EXPERIMENT_TIEBREAK_ASCENDING))
    return keys

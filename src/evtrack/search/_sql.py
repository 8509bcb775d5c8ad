"""Compile validated searches to parameterised SQL over the ``rm_runs`` / ``rm_experiments`` models.

The output is a :class:`SqlQuery` the caller runs with asyncpg. The SQL text is assembled only
from fixed fragments and column names picked from closed mappings; every user-supplied key, value,
id, limit and offset travels as a ``$n`` parameter, so no filter can change the statement's shape.

Run searches (``_runs``) document their own semantics and query shapes; experiments follow
MLflow 3.17.2's SQL store the same way, with text sort keys in ``COLLATE "C"`` (code point order).

Pagination is offset based: the query fetches ``limit + 1`` rows so the caller learns whether a
next page exists without a second count query (see :func:`next_page_token`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from evtrack.errors import invalid
from evtrack.permissions import Visibility
from evtrack.search._filter import (
    INT64_MAX,
    INT64_MIN,
    Comparison,
    Value,
    parse_experiment_filter,
)
from evtrack.search._order import OrderKey, parse_experiment_order_by
from evtrack.search._page_token import (
    LoggedModelTokenScope,
    decode_page_token,
    encode_logged_model_page_token,
    encode_page_token,
)

SEARCH_MAX_RESULTS_THRESHOLD: Final = 50000

_VIEW_STAGES: Final[dict[str, tuple[str, ...]]] = {
    "ACTIVE_ONLY": ("active",),
    "DELETED_ONLY": ("deleted",),
    "ALL": ("active", "deleted"),
}

# SQL spelling of validated comparators. IN / NOT IN / IS [NOT] NULL are rendered separately.
_SQL_OPERATORS: Final = {
    "=": "=",
    "!=": "<>",
    ">": ">",
    ">=": ">=",
    "<": "<",
    "<=": "<=",
    "LIKE": "LIKE",
    "ILIKE": "ILIKE",
}

# Closed mappings from validated keys to columns: the only identifiers that reach the SQL text.
_EXPERIMENT_TEXT_COLUMNS: Final = {"name": "e.name"}
_EXPERIMENT_NUMERIC_COLUMNS: Final = {
    "creation_time": "e.creation_time",
    "last_update_time": "e.last_update_time",
    "experiment_id": "e.experiment_id",
}


@dataclass(frozen=True, slots=True)
class SqlQuery:
    """A compiled search: run ``sql`` with ``*args``; it returns at most ``limit + 1`` ids.

    ``offset`` and ``limit`` are the page's position and size, kept so that
    :func:`next_page_token` can tell from the row count whether another page follows.
    ``token_scope`` is set for logged-model searches, whose tokens name their request.
    ``order_by`` (run searches) is the query's order restated over its output columns, for a
    caller that selects from it as a subquery and must not lose that order.
    """

    sql: str
    args: tuple[object, ...]
    offset: int
    limit: int
    token_scope: LoggedModelTokenScope | None = None
    order_by: str | None = None


def visibility_condition(
    column: str, visible: Visibility | None, params: _Params, *, numeric: bool = False
) -> str | None:
    """The SQL condition that keeps only what the caller may read (None: no condition)."""
    if visible is None or visible.everything:
        return None
    cast = "::bigint[]" if numeric else "::text[]"

    def values(ids: frozenset[str]) -> list[int] | list[str]:
        return _ids(ids) if numeric else sorted(ids)

    if visible.include is not None:
        return f"{column} = ANY({params.add(values(visible.include), cast)})"
    return f"{column} <> ALL({params.add(values(visible.exclude), cast)})"


def _ids(values: frozenset[str]) -> list[int]:
    return sorted(int(v) for v in values if v.isdigit())


class _Params:
    """Collects bind values and hands out their ``$n`` placeholders."""

    def __init__(self) -> None:
        self.values: list[object] = []

    def add(self, value: object, cast: str = "") -> str:
        self.values.append(value)
        return f"${len(self.values)}{cast}"

    def number(self, value: float) -> str:
        """Bind an int as bigint when it fits (exact comparison), anything else as a double."""
        if isinstance(value, int) and INT64_MIN <= value <= INT64_MAX:
            return self.add(value, "::bigint")
        return self.add(float(value), "::double precision")


# The proto enum numbers, for clients that send ``view_type=1`` rather than the name.
_VIEW_NUMBERS: Final = {"1": "ACTIVE_ONLY", "2": "DELETED_ONLY", "3": "ALL"}


def _view_stages(view_type: str) -> tuple[str, ...]:
    """Lifecycle stages a view type selects; names are case-insensitive."""
    name = view_type.strip().upper() if isinstance(view_type, str) else ""
    stages = _VIEW_STAGES.get(_VIEW_NUMBERS.get(name, name))
    if stages is None:
        raise invalid(f"Invalid view_type '{view_type}'. Valid values are {list(_VIEW_STAGES)}")
    return stages


def _check_run_max_results(max_results: int) -> None:
    """1..50000, with the wording a REST client of MLflow sees for each side of the range (the
    upper bound is checked by MLflow's handler, the lower one by its store)."""
    if max_results < 1:
        raise invalid(
            f"Invalid value {max_results} for parameter 'max_results' supplied. "
            "It must be a positive integer"
        )
    if max_results > SEARCH_MAX_RESULTS_THRESHOLD:
        # The limit is enforced by MLflow's REST handler; this is its exact wording.
        raise invalid(
            f"Invalid value {max_results} for parameter 'max_results' supplied:  Hint: Value "
            "was of type 'int'. See the API docs for more information about request parameters."
        )


def _check_experiment_max_results(max_results: int) -> None:
    """1..50000; MLflow's handler does not check experiments, so both messages are the store's."""
    if max_results < 1:
        raise invalid(
            f"Invalid value {max_results} for parameter 'max_results' supplied. "
            "It must be a positive integer"
        )
    if max_results > SEARCH_MAX_RESULTS_THRESHOLD:
        raise invalid(
            f"Invalid value {max_results} for parameter 'max_results' supplied. "
            f"It must be at most {SEARCH_MAX_RESULTS_THRESHOLD}"
        )


def _scalar(column: str, comparator: str, value: str | tuple[str, ...], params: _Params) -> str:
    """``column <op> $n`` for a string comparison, or ``= ANY`` / ``<> ALL`` for lists."""
    if comparator == "IN":
        return f"{column} = ANY({params.add(list(value), '::text[]')})"
    if comparator == "NOT IN":
        return f"{column} <> ALL({params.add(list(value), '::text[]')})"
    assert isinstance(value, str)
    return f"{column} {_SQL_OPERATORS[comparator]} {params.add(value, '::text')}"


def _texts(value: Value) -> str | tuple[str, ...]:
    """Narrow a validated string (or list) value; the parser guarantees the type."""
    if isinstance(value, str | tuple):
        return value
    raise AssertionError(f"expected a string value, got {value!r}")


def _direction(ascending: bool) -> str:
    return "ASC" if ascending else "DESC"


def _page(
    sql: str,
    params: _Params,
    offset: int,
    limit: int,
    token_scope: LoggedModelTokenScope | None = None,
    *,
    order_by: str | None = None,
) -> SqlQuery:
    limit_ref = params.add(limit + 1, "::bigint")
    offset_ref = params.add(offset, "::bigint")
    return SqlQuery(
        sql=f"{sql}\nLIMIT {limit_ref} OFFSET {offset_ref}",
        args=tuple(params.values),
        offset=offset,
        limit=limit,
        token_scope=token_scope,
        order_by=order_by,
    )


def _experiment_condition(clause: Comparison, params: _Params) -> str:
    comparator, value = clause.comparator, clause.value
    if clause.entity == "tag":
        key_ref = params.add(clause.key, "::text")
        exists = (
            "SELECT 1 FROM rm_experiments.experiment_tags AS f "
            f"WHERE f.experiment_id = e.experiment_id AND f.key = {key_ref}"
        )
        if comparator == "IS NULL":
            return f"NOT EXISTS ({exists})"
        if comparator == "IS NOT NULL":
            return f"EXISTS ({exists})"
        return f"EXISTS ({exists} AND {_scalar('f.value', comparator, _texts(value), params)})"
    if clause.key == "experiment_id":
        if isinstance(value, tuple):
            ids = params.add([int(v) for v in value], "::bigint[]")
            if comparator == "IN":
                return f"e.experiment_id = ANY({ids})"
            return f"e.experiment_id <> ALL({ids})"
        assert isinstance(value, str)
        id_ref = params.add(int(value), "::bigint")
        return f"e.experiment_id {_SQL_OPERATORS[comparator]} {id_ref}"
    if clause.key in _EXPERIMENT_NUMERIC_COLUMNS:
        assert isinstance(value, int | float)
        column = _EXPERIMENT_NUMERIC_COLUMNS[clause.key]
        return f"{column} {_SQL_OPERATORS[comparator]} {params.number(value)}"
    return _scalar(_EXPERIMENT_TEXT_COLUMNS[clause.key], comparator, _texts(value), params)


def _experiment_order(keys: Sequence[OrderKey]) -> list[str]:
    terms: list[str] = []
    for key in keys:
        direction = _direction(key.ascending)
        if key.key in _EXPERIMENT_TEXT_COLUMNS:
            column = _EXPERIMENT_TEXT_COLUMNS[key.key]
            terms.append(f'{column} COLLATE "C" {direction} NULLS LAST')
        else:
            terms.append(f"{_EXPERIMENT_NUMERIC_COLUMNS[key.key]} {direction} NULLS LAST")
    return terms


def compile_experiment_search(
    view_type: str,
    filter_string: str | None,
    order_by: Sequence[str],
    max_results: int,
    page_token: str | None,
    visible: Visibility | None = None,
) -> SqlQuery:
    """Compile ``experiments/search`` to a query selecting ``experiment_id`` in MLflow's order;
    ``visible`` narrows it to the experiments the caller may read."""
    _check_experiment_max_results(max_results)
    stages = _view_stages(view_type)
    clauses = parse_experiment_filter(filter_string)
    order = parse_experiment_order_by(order_by)
    offset = decode_page_token(page_token)

    params = _Params()
    where: list[str] = []
    if len(stages) == 1:
        where.append(f"e.lifecycle_stage = {params.add(stages[0], '::text')}")
    where.extend(_experiment_condition(clause, params) for clause in clauses)
    if (
        allowed := visibility_condition("e.experiment_id", visible, params, numeric=True)
    ) is not None:
        where.append(allowed)
    sql = "\n".join(
        [
            "SELECT e.experiment_id",
            "FROM rm_experiments.experiments AS e",
            *(["WHERE " + "\n  AND ".join(where)] if where else []),
            "ORDER BY " + ", ".join(_experiment_order(order)),
        ]
    )
    return _page(sql, params, offset, max_results)


def next_page_token(query: SqlQuery, rows_returned: int) -> str | None:
    """Token for the page after ``query``'s, or None if ``rows_returned`` shows it was the last.

    The query fetches one row more than the page size; getting it back is what proves that
    another page exists. Callers return only the first ``query.limit`` rows.
    """
    if rows_returned <= query.limit:
        return None
    if query.token_scope is not None:
        return encode_logged_model_page_token(query.token_scope, query.offset + query.limit)
    return encode_page_token(query.offset + query.limit)

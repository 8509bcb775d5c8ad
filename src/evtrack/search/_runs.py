"""Compile ``runs/search`` to parameterised SQL over the ``rm_runs`` read model.

Semantics mirror MLflow 3.17.2's SQL store (``sqlalchemy_store.py``):

* a metric/param/tag/dataset clause matches when the run has a row satisfying it (``EXISTS``),
  so ``!=`` never matches runs that lack the key, and metric clauses see only the latest value;
* NaN metrics are stored as ``value = 0, is_nan = true``. MLflow makes every comparison with a
  NaN metric false except ``!=``, which is always true; we do the same;
* ``=``, ``!=`` and ``LIKE`` are case-sensitive, ``ILIKE`` is not (PostgreSQL's own operators,
  with its default ``\\`` escape in patterns, as MLflow on PostgreSQL);
* ordering puts null / missing values last in both directions and, for metrics, NaN after every
  number but before missing; the implicit tiebreakers come from ``_order``;
* text sort keys use ``COLLATE "C"`` (code point order). MLflow's result order otherwise depends
  on the database collation; "C" matches its SQLite default and Python's ``sorted``, and keeps
  pagination identical across deployments whatever the cluster's locale.

``attributes.run_name`` filters on the ``runs.run_name`` column. (MLflow filters on the
``mlflow.runName`` tag, a workaround for runs logged before MLflow 1.29 had a name column; the
projection keeps both in step, so the column is the faithful and cheaper choice.)

Query shape. When the first sort key is a metric, param or tag (the *lead* key, alias ``o1``),
the natural single query (LEFT JOIN the key, sort on "is it NaN / missing" first) defeats every
index: PostgreSQL must join and sort all matching runs to return the first page. So the runs are
split where that order splits them anyway:

* the *head*: runs that have the lead key (and, for a metric, a number rather than NaN). It is an
  inner join ordered by the value itself, which the ``(key, value)`` index serves in order, so a
  page over 100,000 runs reads about a page of index entries. It is cut at ``offset + limit + 1``
  rows, more than any page can use;
* the *tail*: runs without the key (and NaN metrics). Everything in it sorts after the head, so
  it is read only when the head came up short (a one-time filter on the head's row count).

Filter clauses on the lead key itself are evaluated on the lead's row ``o1`` instead of an
``EXISTS`` probe: the key is the primary key's second half, so that row is the only one the probe
could find. It turns ``metrics.acc > 0.5 ORDER BY metrics.acc DESC`` into an index range scan,
and such a clause is false for missing keys (and, unless it is ``!=``, for NaN), which proves the
tail empty: the query is then the head alone.

The output columns are ``run_id`` and the sort values ``s1 .. sn``; :attr:`SqlQuery.order_by`
repeats the order over those columns, for callers that select from the query and must keep its
order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from evtrack.search._filter import Comparison, parse_run_filter
from evtrack.search._order import OrderKey, parse_run_order_by
from evtrack.search._page_token import decode_page_token
from evtrack.search._sql import (
    _SQL_OPERATORS,
    SqlQuery,
    _check_run_max_results,
    _direction,
    _page,
    _Params,
    _scalar,
    _texts,
    _view_stages,
)

# Closed mappings from validated keys to columns: the only identifiers that reach the SQL text.
_RUN_TEXT_COLUMNS: Final = {
    "artifact_uri": "r.artifact_uri",
    "run_id": "r.run_id",
    "run_name": "r.run_name",
    "status": "r.status",
    "user_id": "r.user_id",
}
_RUN_NUMERIC_COLUMNS: Final = {"start_time": "r.start_time", "end_time": "r.end_time"}
_KEY_VALUE_TABLES: Final = {
    "metric": "rm_runs.latest_metrics",
    "parameter": "rm_runs.params",
    "tag": "rm_runs.tags",
}
_DATASET_COLUMNS: Final = {"name": "f.name", "digest": "f.digest", "context": "f.context"}
_LEAD: Final = "o1"


@dataclass(frozen=True, slots=True)
class _Term:
    """One ORDER BY term; kept apart from its expression so it can be replayed on a column."""

    expr: str
    direction: str
    text: bool = False  # compared by code point
    nulls_last: bool = True

    def on(self, expr: str) -> str:
        collate = ' COLLATE "C"' if self.text else ""
        nulls = " NULLS LAST" if self.nulls_last else ""
        return f"{expr}{collate} {self.direction}{nulls}"

    def sql(self) -> str:
        return self.on(self.expr)


@dataclass(frozen=True, slots=True)
class _Lead:
    """The first sort key when it is a metric, param or tag, joined as ``o1``."""

    entity: str
    key: str
    key_ref: str
    ascending: bool

    def join(self, kind: str) -> str:
        return (
            f"{kind} {_KEY_VALUE_TABLES[self.entity]} AS {_LEAD} "
            f"ON {_LEAD}.run_id = r.run_id AND {_LEAD}.key = {self.key_ref}"
        )

    def owns(self, clause: Comparison) -> bool:
        """Whether ``clause`` filters on this very key (and can be read off ``o1``)."""
        return clause.entity == self.entity and clause.key == self.key


def _experiment_condition(experiment_ids: Sequence[int], params: _Params) -> str:
    """``= $1`` for the usual single experiment: unlike ``= ANY``, it lets PostgreSQL read the
    experiment's runs off an index in the index's order (and stop after a page)."""
    if len(experiment_ids) == 1:
        return f"r.experiment_id = {params.add(int(experiment_ids[0]), '::bigint')}"
    return f"r.experiment_id = ANY({params.add([int(i) for i in experiment_ids], '::bigint[]')})"


def _run_condition(clause: Comparison, params: _Params) -> str:
    comparator, value = clause.comparator, clause.value
    if clause.entity == "attribute":
        if clause.key in _RUN_NUMERIC_COLUMNS:
            assert isinstance(value, int | float)
            column = _RUN_NUMERIC_COLUMNS[clause.key]
            return f"{column} {_SQL_OPERATORS[comparator]} {params.number(value)}"
        return _scalar(_RUN_TEXT_COLUMNS[clause.key], comparator, _texts(value), params)

    if clause.entity == "dataset":
        condition = _scalar(_DATASET_COLUMNS[clause.key], comparator, _texts(value), params)
        return (
            "EXISTS (SELECT 1 FROM rm_runs.dataset_inputs AS f "
            f"WHERE f.run_id = r.run_id AND {condition})"
        )

    table = _KEY_VALUE_TABLES[clause.entity]
    key_ref = params.add(clause.key, "::text")
    exists = f"SELECT 1 FROM {table} AS f WHERE f.run_id = r.run_id AND f.key = {key_ref}"
    if comparator == "IS NULL":
        return f"NOT EXISTS ({exists})"
    if comparator == "IS NOT NULL":
        return f"EXISTS ({exists})"
    return f"EXISTS ({exists} AND {_value_condition('f', clause, params)})"


def _value_condition(alias: str, clause: Comparison, params: _Params) -> str:
    """The clause's test on a key-value row ``alias`` (NaN rules included for metrics)."""
    comparator, value = clause.comparator, clause.value
    if clause.entity == "metric":
        assert isinstance(value, float)
        compare = f"{alias}.value {_SQL_OPERATORS[comparator]} {params.number(value)}"
        if comparator == "!=":
            return f"({compare} OR {alias}.is_nan)"
        return f"({compare} AND NOT {alias}.is_nan)"
    return _scalar(f"{alias}.value", comparator, _texts(value), params)


def _lead_condition(clause: Comparison, params: _Params) -> str:
    """A clause on the lead key, read off the (possibly missing) row ``o1``.

    Equivalent to the ``EXISTS`` form: the probe could only find ``o1``, and every test on a
    missing ``o1`` is NULL, i.e. false, except ``IS NULL`` which is written out.
    """
    if clause.comparator == "IS NULL":
        return f"{_LEAD}.run_id IS NULL"
    if clause.comparator == "IS NOT NULL":
        return f"{_LEAD}.run_id IS NOT NULL"
    return _value_condition(_LEAD, clause, params)


def _key_terms(entity: str, alias: str, ascending: bool) -> list[_Term]:
    direction = _direction(ascending)
    if entity == "metric":
        # Numbers first, then NaN, then runs without the metric, whatever the direction.
        rank = f"CASE WHEN {alias}.is_nan THEN 1 WHEN {alias}.run_id IS NULL THEN 2 ELSE 0 END"
        return [
            _Term(rank, "ASC", nulls_last=False),
            _Term(f"{alias}.value", direction, nulls_last=False),
        ]
    return [_Term(f"{alias}.value", direction, text=True)]


def _order_terms(
    keys: Sequence[OrderKey], params: _Params, first_alias: int
) -> tuple[list[str], list[_Term]]:
    """ORDER BY terms plus the LEFT JOINs that bring metric/param/tag sort values in."""
    joins: list[str] = []
    terms: list[_Term] = []
    for key in keys:
        if key.entity == "attribute":
            direction = _direction(key.ascending)
            if key.key in _RUN_NUMERIC_COLUMNS:
                terms.append(_Term(_RUN_NUMERIC_COLUMNS[key.key], direction))
            else:
                terms.append(_Term(_RUN_TEXT_COLUMNS[key.key], direction, text=True))
            continue
        alias = f"o{first_alias + len(joins)}"
        joins.append(
            f"LEFT JOIN {_KEY_VALUE_TABLES[key.entity]} AS {alias} ON {alias}.run_id = r.run_id "
            f"AND {alias}.key = {params.add(key.key, '::text')}"
        )
        terms.extend(_key_terms(key.entity, alias, key.ascending))
    return joins, terms


def _select(exprs: Sequence[str]) -> str:
    """The id and the sort values, nothing else: the fewer columns a search reads, the more of
    it the indexes answer on their own (index-only scans, narrow hash tables). Callers look
    the page's runs up afterwards."""
    columns = ", ".join(f"{e} AS s{i}" for i, e in enumerate(exprs, 1))
    return f"SELECT r.run_id, {columns}"


def _outer_order(terms: Sequence[_Term]) -> str:
    return ", ".join(t.on(f"s{i}") for i, t in enumerate(terms, 1))


def _filters(
    base: list[str], clauses: Sequence[Comparison], lead: _Lead | None, params: _Params
) -> list[str]:
    where = list(base)
    for clause in clauses:
        if lead is not None and lead.owns(clause):
            where.append(_lead_condition(clause, params))
        else:
            where.append(_run_condition(clause, params))
    return where


def _tail_is_empty(lead: _Lead, clauses: Sequence[Comparison]) -> bool:
    """Whether the filter alone rules out runs without the lead key (and NaN metrics)."""
    own = [c for c in clauses if lead.owns(c)]
    drops_missing = any(c.comparator != "IS NULL" for c in own)
    drops_nan = lead.entity != "metric" or any(c.comparator != "!=" for c in own)
    return drops_missing and drops_nan


def _head_is_empty(lead: _Lead, clauses: Sequence[Comparison]) -> bool:
    return any(lead.owns(c) and c.comparator == "IS NULL" for c in clauses)


def _plain(where: Sequence[str], joins: Sequence[str], terms: Sequence[_Term]) -> str:
    """The single-query shape: every matching run, joined and sorted in one go."""
    return "\n".join(
        [
            _select([t.expr for t in terms]),
            "FROM rm_runs.runs AS r",
            *joins,
            "WHERE " + "\n  AND ".join(where),
            "ORDER BY " + ", ".join(t.sql() for t in terms),
        ]
    )


def _head(lead: _Lead, where: Sequence[str], joins: Sequence[str], rest: Sequence[_Term]) -> str:
    """Runs that have the lead key (a number, for a metric), ordered by its value first."""
    value = _key_terms(lead.entity, _LEAD, lead.ascending)[-1]
    metric = lead.entity == "metric"
    columns = (["0", value.expr] if metric else [value.expr]) + [t.expr for t in rest]
    return "\n".join(
        [
            _select(columns),
            "FROM rm_runs.runs AS r",
            lead.join("JOIN"),
            *joins,
            "WHERE " + "\n  AND ".join([*where, f"NOT {_LEAD}.is_nan"] if metric else where),
            "ORDER BY " + ", ".join(t.sql() for t in [value, *rest]),
        ]
    )


def _tail(
    lead: _Lead, where: Sequence[str], joins: Sequence[str], rest: Sequence[_Term], need: str
) -> str:
    """The other runs, read only when the head (CTE ``head``) has fewer than ``need`` rows."""
    absent = f"{_LEAD}.run_id IS NULL" + (f" OR {_LEAD}.is_nan" if lead.entity == "metric" else "")
    terms = [*_key_terms(lead.entity, _LEAD, lead.ascending), *rest]
    return "\n".join(
        [
            _select([t.expr for t in terms]),
            "FROM rm_runs.runs AS r",
            lead.join("LEFT JOIN"),
            *joins,
            "WHERE " + "\n  AND ".join([*where, f"({absent})"]),
            f"  AND (SELECT count(*) FROM head) < {need}",
        ]
    )


def _split(
    lead: _Lead,
    where: Sequence[str],
    joins: Sequence[str],
    rest: Sequence[_Term],
    need: str,
    with_tail: bool,
) -> str:
    """Head and tail (see the module docstring) in their common order, before LIMIT/OFFSET."""
    head = _head(lead, where, joins, rest)
    if not with_tail:
        return head
    return "\n".join(
        [
            f"WITH head AS MATERIALIZED ({head}\nLIMIT {need})",
            "SELECT * FROM (SELECT * FROM head",
            "UNION ALL",
            f"{_tail(lead, where, joins, rest, need)}) AS u",
            "ORDER BY " + _outer_order([*_key_terms(lead.entity, _LEAD, lead.ascending), *rest]),
        ]
    )


def compile_run_search(
    experiment_ids: Sequence[int],
    view_type: str,
    filter_string: str | None,
    order_by: Sequence[str],
    max_results: int,
    page_token: str | None,
) -> SqlQuery:
    """Compile ``runs/search`` to a query selecting ``run_id`` in MLflow's result order.

    Raises :class:`evtrack.errors.EvtrackError` (INVALID_PARAMETER_VALUE) for an invalid view
    type, ``max_results`` outside ``1..50000``, filter, ``order_by`` or page token; the checks
    run in MLflow's order so the same request yields the same first error.
    """
    _check_run_max_results(max_results)
    stages = _view_stages(view_type)
    clauses = parse_run_filter(filter_string)
    order = parse_run_order_by(order_by)
    offset = decode_page_token(page_token)

    params = _Params()
    base = [_experiment_condition(experiment_ids, params)]
    if len(stages) == 1:
        base.append(f"r.lifecycle_stage = {params.add(stages[0], '::text')}")

    first = order[0]
    if first.entity == "attribute":
        where = _filters(base, clauses, None, params)
        joins, terms = _order_terms(order, params, first_alias=1)
        sql = _plain(where, joins, terms)
        return _page(sql, params, offset, max_results, order_by=_outer_order(terms))

    lead = _Lead(first.entity, first.key, params.add(first.key, "::text"), first.ascending)
    where = _filters(base, clauses, lead, params)
    joins, rest = _order_terms(order[1:], params, first_alias=2)
    terms = [*_key_terms(lead.entity, _LEAD, lead.ascending), *rest]
    if _head_is_empty(lead, clauses):
        sql = _plain(where, [lead.join("LEFT JOIN"), *joins], terms)
    else:
        # LIMIT and OFFSET are bound last (callers and tests find them there); the head's
        # cut-off refers to them by the numbers they are about to get.
        n = len(params.values)
        need = f"(${n + 1}::bigint + ${n + 2}::bigint)"
        sql = _split(lead, where, joins, rest, need, with_tail=not _tail_is_empty(lead, clauses))
    return _page(sql, params, offset, max_results, order_by=_outer_order(terms))

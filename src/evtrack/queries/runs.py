"""Reads of the runs read model: whole runs as runs/get and runs/search return them.

PostgreSQL renders each run's JSON itself (:data:`RUN_JSON`), in one statement with the lookup
or the search that selects the runs. A page of 1000 runs is then one statement and 1000 short
strings for Python to splice into the response, instead of seven queries, thousands of records
and as many wire objects to build and encode again. Callers that want objects (GraphQL, the
create/update answers) decode the same text into :class:`evtrack.wire.mlflow.Run`, so every
route shows a run the same way.

The text is what msgspec would write for ``wire.Run``: fields in declaration order, unset
optional fields and empty lists left out, params/tags/metrics sorted by key, and doubles that
JSON cannot carry as the strings proto JSON uses (``"NaN"``, ``"Infinity"``, ``"-Infinity"``).
Integral doubles keep a ``.0`` so that JSON readers see a float, as from the reference server.
Numbers may be spelled differently (``1e+20`` for ``1e20``), never with another value: the
statements run with ``extra_float_digits = 1``, PostgreSQL's shortest exact form (see
:func:`_rendered`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any, Final, TypeAlias

import asyncpg
import msgspec

from evtrack.eventlog import Conn
from evtrack.search import SqlQuery
from evtrack.wire import mlflow as wire

Executor: TypeAlias = "Conn | asyncpg.Pool[Any]"


def _quoted(expr: str) -> str:
    """A JSON string literal of a text expression (PostgreSQL escapes it)."""
    return f"to_json({expr})::text"


def _member(name: str, items: str, source: str, order: str) -> str:
    """``"name":[items...]`` over the run's rows of ``source``, or NULL when there are none.

    NULL drops out of ``concat_ws``, which is how empty lists are left out. ``ARRAY(...)``
    keeps its subquery's order, which the table's primary key index already delivers (an
    ordered ``string_agg`` would sort every run's rows again).
    """
    rows = f"ARRAY(SELECT {items} FROM {source} WHERE x.run_id = r.run_id ORDER BY {order})"
    return f"('\"{name}\":[' || nullif(array_to_string({rows}, ','), '') || ']')"


def _key_value(source: str, name: str) -> str:
    item = "'{\"key\":' || " + _quoted("x.key") + " || ',\"value\":' || " + _quoted("x.value")
    return _member(name, item + " || '}'", f"{source} AS x", "x.key")


# Exact for every double: NaN rows are flagged (stored as 0), infinities come out quoted from
# to_json, and a double PostgreSQL prints without '.' or exponent (integral, below 1e15) gets
# ".0" appended.
_METRIC_VALUE: Final = (
    "CASE WHEN x.is_nan THEN '\"NaN\"' ELSE to_json(x.value)::text || "
    "CASE WHEN x.value = trunc(x.value) AND abs(x.value) < 1e15 THEN '.0' ELSE '' END END"
)
_METRICS: Final = _member(
    "metrics",
    "'{\"key\":' || "
    + _quoted("x.key")
    + " || ',\"value\":' || "
    + _METRIC_VALUE
    + " || ',\"timestamp\":' || x.timestamp || ',\"step\":' || x.step || '}'",
    "rm_runs.latest_metrics AS x",
    "x.key",
)
_DATASET_TAGS: Final = (
    "coalesce(',\"tags\":[' || nullif(array_to_string(ARRAY(SELECT '{\"key\":' || "
    + _quoted("t.e->>'key'")
    + " || ',\"value\":' || "
    + _quoted("t.e->>'value'")
    + " || '}' FROM jsonb_array_elements(x.tags) WITH ORDINALITY AS t(e, n) ORDER BY t.n), ','),"
    " '') || ']', '')"
)
_DATASETS: Final = _member(
    "dataset_inputs",
    '\'{"dataset":{"name":\' || '
    + _quoted("x.name")
    + " || ',\"digest\":' || "
    + _quoted("x.digest")
    + " || ',\"source_type\":' || "
    + _quoted("x.source_type")
    + " || ',\"source\":' || "
    + _quoted("x.source")
    + " || coalesce(',\"schema\":' || "
    + _quoted("x.schema")
    + ", '') || coalesce(',\"profile\":' || "
    + _quoted("x.profile")
    + ", '') || '}' || "
    + _DATASET_TAGS
    + " || '}'",
    "rm_runs.dataset_inputs AS x",
    "x.name, x.digest",
)
_MODEL_INPUTS: Final = _member(
    "model_inputs",
    "'{\"model_id\":' || " + _quoted("x.model_id") + " || '}'",
    "rm_runs.model_inputs AS x",
    "x.model_id",
)
_MODEL_OUTPUTS: Final = _member(
    "model_outputs",
    "'{\"model_id\":' || " + _quoted("x.model_id") + " || ',\"step\":' || x.step || '}'",
    "rm_runs.model_outputs AS x",
    "x.model_id",
)
_INFO: Final = (
    "'{\"run_id\":' || "
    + _quoted("r.run_id")
    + " || ',\"run_uuid\":' || "
    + _quoted("r.run_id")
    + " || ',\"run_name\":' || "
    + _quoted("r.run_name")
    + ' || \',"experiment_id":"\' || r.experiment_id || \'","user_id":\' || '
    + _quoted("r.user_id")
    + " || ',\"status\":' || "
    + _quoted("r.status")
    + " || ',\"artifact_uri\":' || "
    + _quoted("r.artifact_uri")
    + " || ',\"lifecycle_stage\":' || "
    + _quoted("r.lifecycle_stage")
    + " || coalesce(',\"start_time\":' || r.start_time, '')"
    " || coalesce(',\"end_time\":' || r.end_time, '') || '}'"
)


def _run_json(*, model_inputs: bool) -> str:
    """The SQL expression rendering run ``r`` as MLflow's ``Run`` JSON object."""
    inputs = f"concat_ws(',', {_DATASETS}, {_MODEL_INPUTS})" if model_inputs else _DATASETS
    return (
        f"'{{\"info\":' || {_INFO}"
        f" || ',\"data\":{{' || concat_ws(',', {_METRICS}, "
        f"{_key_value('rm_runs.params', 'params')}, {_key_value('rm_runs.tags', 'tags')})"
        f" || '}},\"inputs\":{{' || coalesce({inputs}, '')"
        f" || '}},\"outputs\":{{' || coalesce({_MODEL_OUTPUTS}, '') || '}}}}'"
    )


RUN_JSON: Final = _run_json(model_inputs=True)
# MLflow's search_runs leaves model inputs out of the runs it returns (its SQL store builds
# RunInputs from dataset inputs only); runs/get has them.
SEARCHED_RUN_JSON: Final = _run_json(model_inputs=False)

_BY_IDS: Final = f"""SELECT {RUN_JSON}
FROM unnest($1::text[]) WITH ORDINALITY AS i(run_id, n)
JOIN rm_runs.runs AS r ON r.run_id = i.run_id
ORDER BY i.n"""
_BY_ID: Final = f"SELECT {RUN_JSON} FROM rm_runs.runs AS r WHERE r.run_id = $1"

_run_decoder = msgspec.json.Decoder(wire.Run)

# Settings of the read-only transaction every rendering statement runs in:
# * extra_float_digits = 1: doubles in their shortest exact form whatever the server's default
#   (below 1 PostgreSQL rounds them);
# * no parallel workers and no JIT: a page is a latency-bound read of at most a few thousand
#   index entries and rows. Starting workers or compiling costs more than it saves and, on a
#   busy machine, competes with everything else for the CPUs.
_SETTINGS: Final = (
    "SET LOCAL extra_float_digits = 1; SET LOCAL max_parallel_workers_per_gather = 0; "
    "SET LOCAL jit = off"
)


@asynccontextmanager
async def _connection(db: Executor) -> AsyncIterator[Conn]:
    if isinstance(db, asyncpg.Pool):
        async with db.acquire() as conn:
            yield conn
    else:
        yield db


async def _rendered(db: Executor, sql: str, *args: object) -> list[str]:
    """The first column of ``sql``'s rows, run under :data:`_SETTINGS`."""
    async with _connection(db) as conn, conn.transaction(readonly=True):
        await conn.execute(_SETTINGS)
        rows = await conn.fetch(sql, *args)
    return [row[0] for row in rows]


async def get_run_json(db: Executor, run_id: str) -> str | None:
    """One run as JSON text, or None if there is no such run."""
    found = await _rendered(db, _BY_ID, run_id)
    return found[0] if found else None


async def get_runs(db: Executor, run_ids: Sequence[str]) -> list[wire.Run]:
    """Full runs in the order of ``run_ids``; ids without a run are skipped."""
    if not run_ids:
        return []
    return [_run_decoder.decode(text) for text in await _rendered(db, _BY_IDS, list(run_ids))]


def _searched(query: SqlQuery) -> str:
    if query.order_by is None:
        raise ValueError("not a compiled run search: it does not expose its order")
    # A correlated subquery, not a join: PostgreSQL then has to look the page's runs up one by
    # one by id, where a join may have it scan every run to hash them.
    render = f"SELECT {SEARCHED_RUN_JSON} FROM rm_runs.runs AS r WHERE r.run_id = page.run_id"
    return f"SELECT ({render})\nFROM ({query.sql}) AS page\nORDER BY {query.order_by}"


async def search_runs_json(db: Executor, query: SqlQuery) -> list[str]:
    """The runs a compiled run search selects, as JSON texts in its order.

    Like the query itself this returns up to ``query.limit + 1`` runs; the extra one only
    tells :func:`evtrack.search.next_page_token` that another page exists.
    """
    return await _rendered(db, _searched(query), *query.args)


async def get_run_info(db: Executor, run_id: str) -> wire.RunInfo | None:
    row = await db.fetchrow("SELECT * FROM rm_runs.runs WHERE run_id = $1", run_id)
    return None if row is None else _info(row)


def _info(row: Any) -> wire.RunInfo:
    return wire.RunInfo(
        run_id=row["run_id"],
        run_uuid=row["run_id"],
        run_name=row["run_name"],
        experiment_id=str(row["experiment_id"]),
        user_id=row["user_id"],
        status=row["status"],
        artifact_uri=row["artifact_uri"],
        lifecycle_stage=row["lifecycle_stage"],
        start_time=row["start_time"],
        end_time=row["end_time"],
    )

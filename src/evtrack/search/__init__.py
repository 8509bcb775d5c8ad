"""MLflow search grammar for runs and experiments, compiled to SQL over the read models.

Pure functions, no I/O: callers execute the returned :class:`SqlQuery` with asyncpg
(``await conn.fetch(q.sql, *q.args)``), keep the first ``q.limit`` rows and pass the row count
to :func:`next_page_token`. All validation errors are ``EvtrackError`` with
INVALID_PARAMETER_VALUE and MLflow's wording.
"""

from evtrack.search._filter import Comparison, parse_experiment_filter, parse_run_filter
from evtrack.search._order import OrderKey, parse_experiment_order_by, parse_run_order_by
from evtrack.search._page_token import decode_page_token, encode_page_token
from evtrack.search._sql import (
    SEARCH_MAX_RESULTS_THRESHOLD,
    SqlQuery,
    compile_experiment_search,
    compile_run_search,
    next_page_token,
)

__all__ = [
    "SEARCH_MAX_RESULTS_THRESHOLD",
    "Comparison",
    "OrderKey",
    "SqlQuery",
    "compile_experiment_search",
    "compile_run_search",
    "decode_page_token",
    "encode_page_token",
    "next_page_token",
    "parse_experiment_filter",
    "parse_experiment_order_by",
    "parse_run_filter",
    "parse_run_order_by",
]

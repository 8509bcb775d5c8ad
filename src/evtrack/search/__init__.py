"""MLflow search grammars for runs, experiments, the model registry and logged models, compiled
to SQL over the read models.

Pure functions, no I/O: callers execute the returned :class:`SqlQuery` with asyncpg
(``await conn.fetch(q.sql, *q.args)``), keep the first ``q.limit`` rows and pass the row count
to :func:`next_page_token`. All validation errors are ``EvtrackError`` with
INVALID_PARAMETER_VALUE and MLflow's wording.

Selected columns: ``run_id`` (runs), ``experiment_id`` (experiments), ``model_key`` (registered
models), ``model_key, version`` (model versions), ``model_id`` (logged models).
"""

from evtrack.search._filter import Comparison, parse_experiment_filter, parse_run_filter
from evtrack.search._logged_models import (
    SEARCH_LOGGED_MODEL_MAX_PAGE_SIZE,
    SEARCH_LOGGED_MODEL_MAX_RESULTS_DEFAULT,
    DatasetFilter,
    LoggedModelOrder,
    compile_logged_model_search,
    parse_datasets,
    parse_logged_model_filter,
    parse_logged_model_order_by,
)
from evtrack.search._order import OrderKey, parse_experiment_order_by, parse_run_order_by
from evtrack.search._page_token import (
    LoggedModelTokenScope,
    decode_logged_model_page_token,
    decode_page_token,
    encode_logged_model_page_token,
    encode_page_token,
)
from evtrack.search._registry import (
    IS_PROMPT_TAG_KEY,
    SEARCH_MODEL_VERSION_MAX_RESULTS_DEFAULT,
    SEARCH_MODEL_VERSION_MAX_RESULTS_THRESHOLD,
    SEARCH_REGISTERED_MODEL_MAX_RESULTS_DEFAULT,
    SEARCH_REGISTERED_MODEL_MAX_RESULTS_THRESHOLD,
    compile_model_version_search,
    compile_registered_model_search,
    parse_model_version_filter,
    parse_model_version_order_by,
    parse_registered_model_filter,
    parse_registered_model_order_by,
)
from evtrack.search._runs import compile_run_search
from evtrack.search._sql import (
    SEARCH_MAX_RESULTS_THRESHOLD,
    SqlQuery,
    compile_experiment_search,
    next_page_token,
)

__all__ = [
    "IS_PROMPT_TAG_KEY",
    "SEARCH_LOGGED_MODEL_MAX_PAGE_SIZE",
    "SEARCH_LOGGED_MODEL_MAX_RESULTS_DEFAULT",
    "SEARCH_MAX_RESULTS_THRESHOLD",
    "SEARCH_MODEL_VERSION_MAX_RESULTS_DEFAULT",
    "SEARCH_MODEL_VERSION_MAX_RESULTS_THRESHOLD",
    "SEARCH_REGISTERED_MODEL_MAX_RESULTS_DEFAULT",
    "SEARCH_REGISTERED_MODEL_MAX_RESULTS_THRESHOLD",
    "Comparison",
    "DatasetFilter",
    "LoggedModelOrder",
    "LoggedModelTokenScope",
    "OrderKey",
    "SqlQuery",
    "compile_experiment_search",
    "compile_logged_model_search",
    "compile_model_version_search",
    "compile_registered_model_search",
    "compile_run_search",
    "decode_logged_model_page_token",
    "decode_page_token",
    "encode_logged_model_page_token",
    "encode_page_token",
    "next_page_token",
    "parse_datasets",
    "parse_experiment_filter",
    "parse_experiment_order_by",
    "parse_logged_model_filter",
    "parse_logged_model_order_by",
    "parse_model_version_filter",
    "parse_model_version_order_by",
    "parse_registered_model_filter",
    "parse_registered_model_order_by",
    "parse_run_filter",
    "parse_run_order_by",
]

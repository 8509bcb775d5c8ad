"""Validation rules for names, values and limits, with MLflow's exact error messages.

MLflow's own tests assert these messages verbatim, and users grep logs for them, so the text
follows the reference server's wording.
"""

from __future__ import annotations

import json
import posixpath
import re
from typing import Any

from evtrack.errors import EvtrackError, invalid, not_found
from evtrack.events import INT64_MAX, MAX_KEY_LENGTH

MAX_PARAMS_TAGS_PER_BATCH = 100
MAX_METRICS_PER_BATCH = 1000
MAX_ENTITIES_PER_BATCH = 1000
# MLflow's limit for a log-batch body, in bytes. Its own server counts the request's fields
# instead of its bytes, so it never refuses a large body; evtrack refuses one by its size, before
# decoding it, so a batch of long values costs no more memory than the limit says.
MAX_BATCH_LOG_REQUEST_SIZE = 1_000_000
MAX_PARAM_VAL_LENGTH = 6000
MAX_TAG_VAL_LENGTH = 8000
MAX_EXPERIMENT_NAME_LENGTH = 500
MAX_EXPERIMENT_TAG_KEY_LENGTH = 250
MAX_EXPERIMENT_TAG_VAL_LENGTH = 20000
MAX_ENTITY_KEY_LENGTH = MAX_KEY_LENGTH
MAX_DATASET_NAME_SIZE = 500
MAX_DATASET_DIGEST_SIZE = 36
MAX_DATASET_SCHEMA_SIZE = 1048575
MAX_DATASET_SOURCE_SIZE = 65535
MAX_DATASET_PROFILE_SIZE = 16777215
MAX_INPUT_TAG_KEY_SIZE = 255
MAX_INPUT_TAG_VALUE_SIZE = 500

_MISSING_KEY_NAME = "A key name must be provided."
_NAME_PATTERN = re.compile(r"^[/\w.\- :]*$")
_RUN_ID_PATTERN = re.compile(r"^[a-zA-Z0-9][\w\-]{0,255}$")
_BAD_CHARACTERS = (
    "Names may only contain alphanumerics, underscores (_), dashes (-), periods (.), "
    "spaces ( ), colon(:) and slashes (/)."
)


def invalid_value(path: str, value: Any, message: str | None = None) -> str:
    shown = json.dumps(value, sort_keys=True, separators=(",", ":"))
    if message:
        return f"Invalid value {shown} for parameter '{path}' supplied: {message}"
    return f"Invalid value {shown} for parameter '{path}' supplied."


def missing_value(path: str) -> str:
    return f"Missing value for required parameter '{path}'."


def _join(path: str, leaf: str) -> str:
    return f"{path}.{leaf}" if path else leaf


def _bad_path(name: str) -> str:
    return (
        "Names may be treated as files in certain cases, and must not resolve to other names"
        f" when treated as such. This name would resolve to {posixpath.normpath(name)!r}"
    )


def _resolves_elsewhere(name: str) -> bool:
    norm = posixpath.normpath(name)
    return norm != name or norm == "." or norm.startswith("..") or norm.startswith("/")


def validate_entity_name(name: object, path: str, *, kind: str) -> str:
    """Metric, param and tag keys: a safe character set, and no path tricks.

    ``name`` comes straight from a decoded JSON body, so it may be any JSON value; anything
    but a string is MLflow's 400 (never a ``TypeError`` from the pattern match, a 500)."""
    if name is None:
        if kind == "metric":
            raise invalid(
                invalid_value(path, None, f"Metric name cannot be None. {_MISSING_KEY_NAME}")
            )
        if kind == "param":
            raise invalid(invalid_value(path, "", _MISSING_KEY_NAME))
        raise invalid(missing_value(path))
    if not isinstance(name, str):
        raise invalid(
            invalid_value(path, name, f"Hint: Value was of type '{type(name).__name__}'.")
        )
    if not _NAME_PATTERN.match(name):
        raise invalid(invalid_value(path, name, _BAD_CHARACTERS))
    if _resolves_elsewhere(name):
        raise invalid(invalid_value(path, name, _bad_path(name)))
    return name


def check_length(entity: str, limit: int, value: str, *, truncate: bool = False) -> str:
    """Enforce a length limit; values MLflow truncates (param and tag values) are cut."""
    if len(value) <= limit:
        return value
    if truncate:
        return value[:limit]
    raise invalid(f"'{entity}' exceeds the maximum length of {limit} characters")


def validate_param(key: str | None, value: str, path: str = "") -> tuple[str, str]:
    key = validate_entity_name(key, _join(path, "key"), kind="param")
    check_length("Param key", MAX_ENTITY_KEY_LENGTH, key)
    return key, check_length("Param value", MAX_PARAM_VAL_LENGTH, value, truncate=True)


def validate_run_tag(key: str | None, value: str, path: str = "") -> tuple[str, str]:
    key = validate_entity_name(key, _join(path, "key"), kind="tag")
    check_length(_join(path, "key"), MAX_ENTITY_KEY_LENGTH, key)
    return key, check_length(_join(path, "value"), MAX_TAG_VAL_LENGTH, value, truncate=True)


def validate_experiment_tag(key: str | None, value: str) -> tuple[str, str]:
    key = validate_entity_name(key, "key", kind="tag")
    check_length("key", MAX_EXPERIMENT_TAG_KEY_LENGTH, key)
    check_length("value", MAX_EXPERIMENT_TAG_VAL_LENGTH, value)
    return key, value


def validate_batch_limits(metrics: int, params: int, tags: int) -> None:
    _batch_limit("metrics", MAX_METRICS_PER_BATCH, metrics)
    _batch_limit("params", MAX_PARAMS_TAGS_PER_BATCH, params)
    _batch_limit("tags", MAX_PARAMS_TAGS_PER_BATCH, tags)
    _batch_limit("metrics, params, and tags", MAX_ENTITIES_PER_BATCH, metrics + params + tags)


def _batch_limit(entity: str, limit: int, length: int) -> None:
    if length > limit:
        raise invalid(
            f"A batch logging request can contain at most {limit} {entity}. "
            f"Got {length} {entity}. Please split up {entity} across multiple"
            " requests and try again."
        )


def validate_unique_param_keys(keys: list[str]) -> None:
    seen: set[str] = set()
    dupes: list[str] = []
    for key in keys:
        if key in seen:
            dupes.append(key)
        seen.add(key)
    if dupes:
        raise invalid(
            f"Duplicate parameter keys have been submitted: {dupes}. Please ensure "
            "the request contains only one param value per param key."
        )


def validate_experiment_name(name: Any) -> str:
    if name == "" or name is None:
        raise invalid(f"Invalid experiment name: '{name if name is not None else 'None'}'")
    if not isinstance(name, str):
        raise invalid(f"Invalid experiment name: {name}. Expects a string.")
    if len(name) > MAX_EXPERIMENT_NAME_LENGTH:
        raise invalid(
            f"'name' exceeds the maximum length of {MAX_EXPERIMENT_NAME_LENGTH} characters"
        )
    return name


def validate_run_id(run_id: str, path: str = "run_id") -> str:
    if not _RUN_ID_PATTERN.match(run_id):
        raise invalid(invalid_value(path, run_id))
    return run_id


def parse_experiment_id(experiment_id: Any) -> int:
    """An experiment id as an integer; ids that cannot exist (negative, beyond int64) parse
    fine and are then simply not found, as in MLflow."""
    try:
        parsed = int(experiment_id)
    except (TypeError, ValueError):
        parsed = None
    if parsed is None or str(experiment_id).strip() != str(experiment_id):
        raise EvtrackError(
            invalid("").code,
            f"Invalid experiment ID '{experiment_id}'. Experiment ID must be a valid integer.",
        )
    if not -INT64_MAX <= parsed <= INT64_MAX:
        raise not_found(f"No Experiment with id={parsed} exists")
    return parsed

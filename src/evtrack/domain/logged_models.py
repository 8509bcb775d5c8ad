"""Commands on MLflow 3 logged models, and the legacy ``runs/log-model`` record.

Every flavor's ``log_model`` in MLflow 3 creates a logged model (PENDING), uploads its files
under the model's own artifact location, then finalizes it (READY or UPLOAD_FAILED); it
cannot log a model without these calls. The rules and messages follow the reference SQL store
(``mlflow/store/tracking/sqlalchemy_store.py``), with three deliberate differences, each
because the reference's behaviour there is an accident of its storage rather than a contract:

* a deleted model is "not found" for every write (the reference still lets you tag or
  finalize it, although it is gone from get and search); deleting it again is a no-op;
* re-logging a param with the same value is a no-op and a different value is a 400 with a
  clear message (the reference leaks a database IntegrityError either way);
* tag and param keys follow the same name rules as run tags and params (the reference checks
  nothing, so an empty or ``../x`` key is stored and later breaks filters and the UI).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from evtrack.domain._aggregates import LOG_MODEL_HISTORY_TAG
from evtrack.domain._logged_model_state import (
    LoggedModelState,
    decode_logged_model,
    encode_logged_model,
    logged_model_stream,
    model_not_found,
    new_logged_model_state,
    require_logged_models,
)
from evtrack.domain._names import random_run_name
from evtrack.domain._validation import (
    MAX_ENTITY_KEY_LENGTH,
    check_length,
    invalid_value,
    validate_entity_name,
    validate_unique_param_keys,
)
from evtrack.domain.tracking import (
    _append_run,
    _load_experiment,
    _load_run,
    _require_active_experiment,
)
from evtrack.errors import invalid, not_found
from evtrack.eventlog import UnitOfWork
from evtrack.events import (
    LOGGED_MODEL_READY,
    LOGGED_MODEL_UPLOAD_FAILED,
    KeyValue,
    LoggedModelCreated,
    LoggedModelDeleted,
    LoggedModelFinalized,
    LoggedModelParamsLogged,
    LoggedModelTagDeleted,
    LoggedModelTagsSet,
    RunDataLogged,
)

FINAL_STATUSES = (LOGGED_MODEL_READY, LOGGED_MODEL_UPLOAD_FAILED)
MAX_MODEL_NAME_LENGTH = 500  # the reference's column width
_BAD_NAME_CHARACTERS = ("/", ":", ".", "%", '"', "'")
_MODEL_JSON_REQUIRED = ("artifact_path", "flavors", "run_id", "utc_time_created")


# --- validation ----------------------------------------------------------------------------


def validate_logged_model_name(name: str | None) -> str | None:
    """A model name ends up in ``runs:/<run>/<name>`` URIs and filters, hence the charset."""
    if name is None:
        return None
    if not name or any(c in name for c in _BAD_NAME_CHARACTERS):
        raise invalid(
            f"Invalid model name ({name!r}) provided. Model name must be a non-empty string "
            f"and cannot contain the following characters: {_BAD_NAME_CHARACTERS}"
        )
    check_length("name", MAX_MODEL_NAME_LENGTH, name)
    return name


def _checked_pairs(pairs: Sequence[tuple[str, str]], path: str, kind: str) -> list[KeyValue]:
    """Keys follow the run tag/param rules; values are kept whole (MLflow stores them as text)."""
    out = []
    for index, (key, value) in enumerate(pairs):
        where = f"{path}[{index}].key"
        name = validate_entity_name(key, where, kind=kind)
        check_length(where, MAX_ENTITY_KEY_LENGTH, name)
        out.append(KeyValue(name, value))
    return out


def _last_value_wins(tags: list[KeyValue]) -> list[KeyValue]:
    return [KeyValue(k, v) for k, v in {t.key: t.value for t in tags}.items()]


# --- loading -------------------------------------------------------------------------------


async def _load(
    uow: UnitOfWork, model_id: str, *, allow_deleted: bool = False
) -> tuple[LoggedModelState, int]:
    """The model's state and stream version, locked until commit (writes only)."""
    stream = logged_model_stream(model_id)
    head = (await uow.heads([stream], lock=True))[stream]
    if head.state is None:
        raise model_not_found(model_id)
    state = decode_logged_model(head.state)
    if state.deleted and not allow_deleted:
        raise model_not_found(model_id)
    return state, head.version


def _record(
    uow: UnitOfWork,
    state: LoggedModelState,
    version: int,
    event: LoggedModelFinalized
    | LoggedModelTagsSet
    | LoggedModelTagDeleted
    | LoggedModelParamsLogged
    | LoggedModelDeleted,
) -> None:
    state.apply(event)
    uow.append(
        logged_model_stream(state.model_id),
        [event],
        expected_version=version,
        state=encode_logged_model(state),
    )


# --- commands ------------------------------------------------------------------------------


async def create_logged_model(
    uow: UnitOfWork,
    experiment_id: int,
    *,
    name: str | None,
    model_type: str | None,
    source_run_id: str | None,
    params: Sequence[tuple[str, str]],
    tags: Sequence[tuple[str, str]],
) -> str:
    """Create a PENDING model in an active experiment and return its ``m-<32 hex>`` id.

    Its artifacts go under the experiment's location, ``<location>/models/<id>/artifacts``,
    which is where the client uploads the model files before finalizing.
    """
    valid_name = validate_logged_model_name(name)
    checked_params = _checked_pairs(params, "params", "param")
    validate_unique_param_keys([p.key for p in checked_params])
    checked_tags = _last_value_wins(_checked_pairs(tags, "tags", "tag"))
    experiment, _ = await _load_experiment(uow, experiment_id)
    _require_active_experiment(experiment)
    model_id = f"m-{uuid.uuid4().hex}"
    event = LoggedModelCreated(
        model_id=model_id,
        experiment_id=experiment_id,
        name=valid_name or random_run_name(),
        artifact_location=(
            f"{experiment.artifact_location.rstrip('/')}/models/{model_id}/artifacts"
        ),
        model_type=model_type or None,
        source_run_id=source_run_id or None,
        params=checked_params,
        tags=checked_tags,
    )
    uow.append(
        logged_model_stream(model_id),
        [event],
        expected_version=0,
        state=encode_logged_model(new_logged_model_state(event)),
    )
    return model_id


async def finalize_logged_model(uow: UnitOfWork, model_id: str, status: str) -> None:
    """Record the upload's outcome. Finalizing again is allowed (the reference allows it)."""
    if status not in FINAL_STATUSES:
        raise invalid(
            invalid_value(
                "status",
                status,
                f"A logged model can only be finalized as {' or '.join(FINAL_STATUSES)}.",
            )
        )
    state, version = await _load(uow, model_id)
    _record(uow, state, version, LoggedModelFinalized(model_id=model_id, status=status))


async def set_logged_model_tags(
    uow: UnitOfWork, model_id: str, tags: Sequence[tuple[str, str]]
) -> None:
    """Upsert tags. Also the registry's way to record ``mlflow.modelVersions`` on a model."""
    checked = _last_value_wins(_checked_pairs(tags, "tags", "tag"))
    state, version = await _load(uow, model_id)
    if checked:
        _record(uow, state, version, LoggedModelTagsSet(model_id=model_id, tags=checked))


async def delete_logged_model_tag(uow: UnitOfWork, model_id: str, key: str) -> None:
    state, version = await _load(uow, model_id)
    if key not in state.tag_keys:
        raise not_found(f"No tag with key {key!r} found for model with ID {model_id!r}.")
    _record(uow, state, version, LoggedModelTagDeleted(model_id=model_id, key=key))


async def log_logged_model_params(
    uow: UnitOfWork, model_id: str, params: Sequence[tuple[str, str]]
) -> None:
    """Add params; params never change once logged, so a retry is harmless."""
    checked = _checked_pairs(params, "params", "param")
    validate_unique_param_keys([p.key for p in checked])
    state, version = await _load(uow, model_id)
    for p in checked:
        old = state.params.get(p.key)
        if old is not None and old != p.value:
            raise invalid(
                f"Changing param values is not allowed. Param with key='{p.key}' was already"
                f" logged with value='{old}' for logged model ID='{model_id}'."
                f" Attempted logging new value '{p.value}'."
            )
    new = [p for p in checked if p.key not in state.params]
    if new:
        _record(uow, state, version, LoggedModelParamsLogged(model_id=model_id, params=new))


async def delete_logged_model(uow: UnitOfWork, model_id: str) -> None:
    """Soft delete; deleting a deleted model is a no-op, so a retried DELETE succeeds."""
    state, version = await _load(uow, model_id, allow_deleted=True)
    if not state.deleted:
        _record(uow, state, version, LoggedModelDeleted(model_id=model_id))


# --- legacy runs/log-model -----------------------------------------------------------------


def _history_entry(model_json: str) -> dict[str, Any]:
    """The part of an MLmodel document MLflow keeps in a run's log-model history.

    Mirrors ``Model.from_dict(...).get_tags_dict()``: the identifying fields, in MLflow's
    order, and each flavor's configuration without its bulky ``config`` entry.
    """
    try:
        model = json.loads(model_json)
    except ValueError:
        model = None
    if not isinstance(model, dict):
        raise invalid(f"Malformed model info. \n {model_json} \n is not a valid JSON.")
    missing = [f for f in _MODEL_JSON_REQUIRED if f not in model]
    if missing:
        shown = "{" + ", ".join(repr(f) for f in missing) + "}"
        raise invalid(f"Model json is missing mandatory fields: {shown}")
    flavors = model["flavors"]
    if flavors is None:
        flavors = {}
    if not isinstance(flavors, dict):
        raise invalid(invalid_value("model_json.flavors", flavors, "Expected a JSON object."))
    entry: dict[str, Any] = {}
    if model["run_id"] is not None:
        entry["run_id"] = model["run_id"]
    if model["artifact_path"] is not None:
        entry["artifact_path"] = model["artifact_path"]
    created = model["utc_time_created"]
    entry["utc_time_created"] = (
        str(created) if created else str(datetime.now(UTC).replace(tzinfo=None))
    )
    entry["model_uuid"] = model.get("model_uuid")
    entry["flavors"] = {
        name: ({k: v for k, v in conf.items() if k != "config"} if isinstance(conf, dict) else conf)
        for name, conf in flavors.items()
    }
    return entry


async def record_logged_model(uow: UnitOfWork, run_id: str, model_json: str) -> None:
    """Append a model to the run's ``mlflow.log-model.history`` tag (MLflow 2.x clients).

    The tag is a JSON list decided here, from the value in the run's state, and written whole
    as an ordinary tag, so the runs read model and searches see it like any other tag. The
    value is not truncated like other tag values: a cut JSON document would be useless.
    """
    entry = _history_entry(model_json)
    loaded = await _load_run(uow, run_id)
    loaded.require_active()
    history: list[Any] = []
    if loaded.run.model_history is not None:
        try:
            previous = json.loads(loaded.run.model_history)
        except ValueError:
            previous = None
        if not isinstance(previous, list):
            raise invalid(
                f"The run tag '{LOG_MODEL_HISTORY_TAG}' of run {run_id} does not hold a JSON"
                " list of models, so a model cannot be appended to it."
            )
        history = previous
    value = json.dumps([*history, entry])
    _append_run(
        uow, loaded, RunDataLogged(run_id=run_id, tags=[KeyValue(LOG_MODEL_HISTORY_TAG, value)])
    )


__all__ = [
    "FINAL_STATUSES",
    "LOG_MODEL_HISTORY_TAG",
    "create_logged_model",
    "delete_logged_model",
    "delete_logged_model_tag",
    "finalize_logged_model",
    "log_logged_model_params",
    "record_logged_model",
    "require_logged_models",
    "set_logged_model_tags",
    "validate_logged_model_name",
]

"""MLflow 3 logged-model routes (compat section 1.5) and the legacy ``runs/log-model``.

``mlflow.<flavor>.log_model`` cannot work without these: it creates a logged model, uploads
the files under the model's artifact location, finalizes it and tags it after registration;
``load_model("runs:/<run>/<name>")`` finds the model through search. Response shapes follow
the reference server field for field, including its quirks the client or the UI could notice.

Each write decodes its request into one command of :mod:`evtrack.domain.logged_model_commands`
(which says which of them get a derived idempotency key, and why) and executes it.
"""

from __future__ import annotations

import posixpath
from typing import Any

from aiohttp import web

from evtrack.api._access import FILTERED, arg, logged_model, readable_experiment_ids, run
from evtrack.api._common import (
    empty,
    execute,
    json_response,
    search_response,
    services,
    wait_fresh,
)
from evtrack.api._requests import Args, read_args
from evtrack.api._routing import Route
from evtrack.api.artifacts import (
    ARTIFACT_STORE,
    content_disposition,
    file_info_to_json,
    guess_mime_type,
    list_directory,
)
from evtrack.api.run_artifacts import store_path
from evtrack.artifacts import normalize_artifact_path
from evtrack.domain import invalid_value, model_not_found, parse_experiment_id
from evtrack.domain.logged_model_commands import (
    CreateLoggedModel,
    DeleteLoggedModel,
    DeleteLoggedModelTag,
    FinalizeLoggedModel,
    LogLoggedModelParams,
    LogRunModel,
    SetLoggedModelTags,
)
from evtrack.errors import ErrorCode, EvtrackError, invalid
from evtrack.events import KeyValue
from evtrack.permissions import Permission
from evtrack.queries import logged_models as queries
from evtrack.search import compile_logged_model_search
from evtrack.wire import mlflow as wire

_SEE_DOCS = " See the API docs for more information about request parameters."
LOGGED_MODELS = ("logged_models",)
_BASE = "/mlflow/logged-models"
# Proto enum numbers of LoggedModelStatus, which proto JSON also accepts instead of names.
_STATUS_NUMBERS = {
    0: "LOGGED_MODEL_STATUS_UNSPECIFIED",
    1: "LOGGED_MODEL_PENDING",
    2: "LOGGED_MODEL_READY",
    3: "LOGGED_MODEL_UPLOAD_FAILED",
}


def _missing(path: str) -> EvtrackError:
    return invalid(f"Missing value for required parameter '{path}'.{_SEE_DOCS}")


def _pairs(items: list[Any], name: str) -> list[KeyValue]:
    """``[{key, value}]`` as pairs; a missing value is ``""`` as in proto JSON."""
    out = []
    for index, item in enumerate(items):
        if not isinstance(item, dict) or item.get("key") in (None, ""):
            raise _missing(f"{name}[{index}].key")
        key, value = item["key"], item.get("value")
        if not isinstance(key, str):
            raise invalid(invalid_value(f"{name}[{index}].key", key))
        if value is None:
            value = ""
        out.append(KeyValue(key, value if isinstance(value, str) else str(value)))
    return out


def _model_id(request: web.Request, args: Args, *, required: bool) -> str:
    """The model named in the URL; the body's ``model_id``, which the client also sends,
    must agree with it (the reference requires it on finalize and params and obeys the
    body, which would let a request act on a model other than the one its URL names)."""
    model_id = request.match_info["model_id"]
    given = args.string("model_id", required=required)
    if given and given != model_id:
        raise invalid(
            f"The model_id in the request body ('{given}') does not match the model_id in "
            f"the URL ('{model_id}')."
        )
    return model_id


async def _render(request: web.Request, model_id: str) -> wire.LoggedModel:
    await wait_fresh(request, *LOGGED_MODELS)
    model = await queries.get_logged_model(services(request).pool, model_id)
    if model is None:
        raise model_not_found(model_id)
    return model


# --- writes --------------------------------------------------------------------------------


async def create(request: web.Request) -> web.Response:
    args = await read_args(request)
    experiment_id = parse_experiment_id(args.required_string("experiment_id"))
    name = args.string("name") or None
    model_type = args.string("model_type") or None
    source_run_id = args.string("source_run_id") or None
    command = CreateLoggedModel(
        experiment_id=experiment_id,
        name=name,
        model_type=model_type,
        source_run_id=source_run_id,
        params=_pairs(args.array("params"), "params"),
        tags=_pairs(args.array("tags"), "tags"),
    )
    # Refuse before writing while the read models cannot catch up (invariant 12): a 503
    # after the write could not show what was written, and the client's retry would
    # create a second one.
    await wait_fresh(request, *LOGGED_MODELS)
    model_id: str = await execute(request, command)
    return json_response({"model": await _render(request, model_id)})


def _status(args: Args) -> str:
    value = args.fields.get("status")
    if value is None or value == "":
        raise _missing("status")
    if isinstance(value, int) and not isinstance(value, bool):
        value = _STATUS_NUMBERS.get(value, value)
    elif isinstance(value, str) and value.isdigit():
        value = _STATUS_NUMBERS.get(int(value), value)
    if not isinstance(value, str):
        raise invalid(invalid_value("status", value))
    return value


async def finalize(request: web.Request) -> web.Response:
    args = await read_args(request)
    model_id = _model_id(request, args, required=True)
    await execute(request, FinalizeLoggedModel(model_id=model_id, status=_status(args)))
    return json_response({"model": await _render(request, model_id)})


async def set_tags(request: web.Request) -> web.Response:
    args = await read_args(request)
    model_id = _model_id(request, args, required=False)
    tags = _pairs(args.array("tags"), "tags")
    await execute(request, SetLoggedModelTags(model_id=model_id, tags=tags))
    return empty()


async def delete_tag(request: web.Request) -> web.Response:
    model_id = request.match_info["model_id"]
    key = request.match_info["tag_key"]
    await execute(request, DeleteLoggedModelTag(model_id=model_id, key=key))
    return empty()


async def log_params(request: web.Request) -> web.Response:
    args = await read_args(request)
    model_id = _model_id(request, args, required=True)
    params = _pairs(args.array("params"), "params")
    await execute(request, LogLoggedModelParams(model_id=model_id, params=params))
    return empty()


async def delete(request: web.Request) -> web.Response:
    args = await read_args(request)
    model_id = _model_id(request, args, required=False)
    await execute(request, DeleteLoggedModel(model_id=model_id))
    return empty()


async def log_model(request: web.Request) -> web.Response:
    """Legacy ``runs/log-model``: append the model to the run's log-model history tag."""
    args = await read_args(request)
    run_id = args.required_string("run_id")
    model_json = args.required_string("model_json")
    await execute(request, LogRunModel(run_id=run_id, model_json=model_json))
    return empty()


# --- reads ---------------------------------------------------------------------------------


async def get(request: web.Request) -> web.Response:
    args = await read_args(request)
    model_id = request.match_info["model_id"]
    allow_deleted = args.boolean("allow_deleted")
    model = await queries.get_logged_model(
        services(request).pool, model_id, allow_deleted=allow_deleted
    )
    if model is None:
        raise model_not_found(model_id)
    return json_response({"model": model})


async def search(request: web.Request) -> web.Response:
    """The filter, datasets, order and page token are validated by the search compiler, in
    MLflow's order; this only checks the request's shape."""
    args = await read_args(request)
    if args.fields.get("experiment_ids") is None:
        raise _missing("experiment_ids")
    requested = args.string_list("experiment_ids")
    readable = await readable_experiment_ids(request, requested)
    if requested and not readable:
        return json_response({})  # none the caller may read: filtered, no 403
    query = compile_logged_model_search(
        experiment_ids=readable,
        filter_string=args.string("filter") or None,
        datasets=args.array("datasets") or None,
        order_by=args.array("order_by") or None,
        max_results=args.integer("max_results") or None,
        page_token=args.string("page_token") or None,
    )
    return await search_response(request, query, queries.get_logged_models, "models")


async def _artifact_root(request: web.Request, model_id: str) -> tuple[str, str | None]:
    """The model's artifact URI, and its path in this server's store (None if elsewhere)."""
    location = await queries.get_artifact_location(services(request).pool, model_id)
    if location is None:
        raise model_not_found(model_id)
    return location, store_path(location)


async def list_artifacts(request: web.Request) -> web.Response:
    """Like runs' ``artifacts/list``: entries are relative to the model's artifact root."""
    args = await read_args(request)
    model_id = request.match_info["model_id"]
    sub = args.string("artifact_directory_path")
    sub_path = normalize_artifact_path(sub, allow_root=True) if sub else ""
    root_uri, root = await _artifact_root(request, model_id)
    body: dict[str, object] = {"root_uri": root_uri}
    if root is None:
        return json_response(body)
    listed = posixpath.join(root, sub_path) if sub_path else root
    files = await list_directory(request.config_dict[ARTIFACT_STORE], listed)
    if files:
        entries = []
        for f in files:
            entry = file_info_to_json(f)
            entry["path"] = posixpath.join(sub_path, f.path) if sub_path else f.path
            entries.append(entry)
        body["files"] = entries
    return json_response(body)


async def get_artifact(request: web.Request) -> web.StreamResponse:
    """The UI's raw download of one file of a model, served as an attachment."""
    model_id = request.match_info["model_id"]
    raw = request.query.get("artifact_file_path")
    if not raw:
        raise EvtrackError(
            ErrorCode.BAD_REQUEST,
            'Request must include the "artifact_file_path" query parameter.',
        )
    rel = normalize_artifact_path(raw)
    _, root = await _artifact_root(request, model_id)
    if root is None:
        raise EvtrackError(
            ErrorCode.RESOURCE_DOES_NOT_EXIST,
            "Artifacts of this model are not stored by this server",
        )
    size, chunks = await request.config_dict[ARTIFACT_STORE].open(posixpath.join(root, rel))
    try:
        name = posixpath.basename(rel)
        response = web.StreamResponse(
            headers={
                "Content-Disposition": content_disposition(name),
                "X-Content-Type-Options": "nosniff",
            }
        )
        response.content_type = guess_mime_type(name)
        response.content_length = size
        await response.prepare(request)
        async for chunk in chunks:
            await response.write(chunk)
        await response.write_eof()
        return response
    finally:
        aclose = getattr(chunks, "aclose", None)
        if aclose is not None:
            await aclose()


def logged_model_routes() -> list[Route]:
    read, edit = Permission.EXPERIMENT_READ, Permission.EXPERIMENT_EDIT
    one = f"{_BASE}/{{model_id}}"
    return [
        Route("POST", _BASE, create, edit, resource=arg("experiment_id")),
        Route("POST", f"{_BASE}/search", search, read, reads=LOGGED_MODELS, resource=FILTERED),
        Route("GET", one, get, read, reads=LOGGED_MODELS, resource=logged_model),
        Route("PATCH", one, finalize, edit, resource=logged_model),
        Route("DELETE", one, delete, edit, resource=logged_model),
        Route("PATCH", f"{one}/tags", set_tags, edit, resource=logged_model),
        Route("DELETE", f"{one}/tags/{{tag_key:.+}}", delete_tag, edit, resource=logged_model),
        Route("POST", f"{one}/params", log_params, edit, resource=logged_model),
        Route(
            "GET",
            f"{one}/artifacts/directories",
            list_artifacts,
            read,
            reads=LOGGED_MODELS,
            resource=logged_model,
        ),
        Route(
            "GET",
            f"{one}/artifacts/files",
            get_artifact,
            read,
            reads=LOGGED_MODELS,
            prefixes=("/ajax-api/2.0",),
            resource=logged_model,
        ),
        Route("POST", "/mlflow/runs/log-model", log_model, edit, resource=run),
    ]

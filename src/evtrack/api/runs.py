"""MLflow run routes: lifecycle, logging, search (compat sections 1.2, 1.3)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from evtrack.api import _plain_batch as plain_batch
from evtrack.api._access import FILTERED, arg, readable_experiment_ids, run
from evtrack.api._bodies import Body, read_body
from evtrack.api._common import (
    empty,
    execute,
    json_response,
    prerendered_page,
    prerendered_response,
    services,
    wait_fresh,
)
from evtrack.api._requests import Args, read_args
from evtrack.api._routing import Handler, Route
from evtrack.domain import MAX_BATCH_LOG_REQUEST_SIZE, invalid_value, parse_experiment_id
from evtrack.domain.commands import (
    CreateRun,
    DeleteRun,
    DeleteRunTag,
    LogInputs,
    LogOutputs,
    LogRunData,
    MetricPoints,
    RestoreRun,
    UpdateRun,
)
from evtrack.errors import invalid, not_found
from evtrack.events import DatasetInput, KeyValue, ModelOutput
from evtrack.permissions import Permission
from evtrack.queries import runs as queries
from evtrack.search import compile_run_search

_SEE_DOCS = " See the API docs for more information about request parameters."
RUNS = ("runs",)


def _missing(path: str) -> Exception:
    return invalid(f"Missing value for required parameter '{path}'.{_SEE_DOCS}")


def _number(value: Any) -> Any:
    """Proto JSON spells NaN and infinities as strings; accept numeric strings like it does."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _integer(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            return value
    return value


def _points(items: list[Any], *, single: bool = False) -> MetricPoints | None:
    """The request's points, decoded from proto JSON (numbers may be spelled as strings);
    their rules are the domain's."""
    if not items:
        return None
    keys: list[Any] = []
    values: list[Any] = []
    stamps: list[Any] = []
    steps: list[Any] = []
    model_ids: list[str | None] = []
    names: list[str | None] = []
    digests: list[str | None] = []
    for index, item in enumerate(items):
        path = "" if single else f"metrics[{index}]"
        if not isinstance(item, dict):
            raise invalid(invalid_value(path or "metric", item))
        for field in ("key", "value", "timestamp"):
            if item.get(field) is None or item.get(field) == "":
                raise _missing(f"{path}.{field}" if path else field)
        keys.append(item["key"])
        values.append(_number(item["value"]))
        stamps.append(_integer(item["timestamp"]))
        steps.append(_integer(item["step"]) if item.get("step") is not None else 0)
        model_ids.append(item.get("model_id") or None)
        names.append(item.get("dataset_name") or None)
        digests.append(item.get("dataset_digest") or None)
    return MetricPoints(
        keys=keys,
        values=values,
        timestamps=stamps,
        steps=steps,
        model_ids=model_ids if any(model_ids) else None,
        dataset_names=names if any(names) else None,
        dataset_digests=digests if any(digests) else None,
    )


def _pairs(items: list[Any], name: str) -> list[KeyValue]:
    out = []
    for index, item in enumerate(items):
        path = f"{name}[{index}]"
        if not isinstance(item, dict) or item.get("key") in (None, ""):
            raise _missing(f"{path}.key")
        value = item.get("value")
        value = "" if value is None else value
        if not isinstance(value, str):
            value = str(value)
        out.append(KeyValue(item["key"], value))  # a key that is no string is the domain's 400
    return out


async def _render_run(request: web.Request, run_id: str) -> Any:
    await wait_fresh(request, *RUNS)
    found = await queries.get_runs(services(request).pool, [run_id])
    if not found:
        raise not_found(f"Run with id={run_id} not found")
    return found[0]


# --- lifecycle -----------------------------------------------------------------------------


async def create(request: web.Request) -> web.Response:
    args = await read_args(request)
    experiment_id = parse_experiment_id(args.required_string("experiment_id"))
    user_id = args.string("user_id") or ""
    run_name = args.string("run_name") or None
    start_time = args.integer("start_time")
    if start_time is None:
        start_time = 0  # what the reference stores for a run created without one
    command = CreateRun(
        experiment_id=experiment_id,
        user_id=user_id,
        run_name=run_name,
        start_time=start_time,
        tags=_pairs(args.array("tags"), "tags"),
    )
    # Not replay-safe: two identical create requests (same start time in milliseconds, no
    # name) are two runs in MLflow, and a client retry cannot be told apart from them.
    # Clients that want retry-safe creation send an Idempotency-Key.
    # Refuse before writing while the read models cannot catch up (invariant 12): a 503
    # after the write could not show what was written, and the client's retry would
    # create a second one.
    await wait_fresh(request, *RUNS)
    run_id = await execute(request, command)
    return json_response({"run": await _render_run(request, run_id)})


async def get(request: web.Request) -> web.Response:
    args = await read_args(request)
    run_id = args.run_id()
    found = await queries.get_run_json(services(request).pool, run_id)
    if found is None:
        raise not_found(f"Run with id={run_id} not found")
    return prerendered_response([("run", found)])


async def update(request: web.Request) -> web.Response:
    args = await read_args(request)
    run_id = args.run_id()
    status = args.string("status") or None
    end_time = args.integer("end_time")
    run_name = args.string("run_name") or None
    command = UpdateRun(run_id=run_id, status=status, end_time=end_time, run_name=run_name)
    await execute(request, command)
    run = await _render_run(request, run_id)
    return json_response({"run_info": run.info})


def _lifecycle(delete: bool) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        args = await read_args(request)
        run_id = args.run_id()
        await execute(request, (DeleteRun if delete else RestoreRun)(run_id=run_id))
        return empty()

    return handler


# --- logging -------------------------------------------------------------------------------


async def log_metric(request: web.Request) -> web.Response:
    args = await read_args(request)
    run_id = args.run_id()
    args.required_string("key")  # a non-string key is the reference's type error, not a 500
    metrics = _points([args.fields], single=True)
    await execute(request, LogRunData(run_id=run_id, metrics=metrics, single=True))
    return empty()


def _single_value(args: Args) -> str:
    value = args.string("value")
    if value is None:
        raise _missing("value")
    return value


async def log_param(request: web.Request) -> web.Response:
    args = await read_args(request)
    run_id = args.run_id()
    param = KeyValue(args.required_string("key"), _single_value(args))
    await execute(request, LogRunData(run_id=run_id, params=[param], single=True))
    return empty()


async def set_tag(request: web.Request) -> web.Response:
    args = await read_args(request)
    run_id = args.run_id()
    tag = KeyValue(args.required_string("key"), _single_value(args))
    await execute(request, LogRunData(run_id=run_id, tags=[tag], single=True))
    return empty()


async def log_batch(request: web.Request) -> web.Response:
    body = await _batch_body(request)
    if request.content_type == "application/json" and (batch := plain_batch.decode(body)):
        # The everyday body, decoded straight into typed points (see ``_plain_batch``).
        args = Args(batch.fields(), from_query=False, raw=body)
        command = LogRunData(
            run_id=args.run_id(),
            metrics=batch.points(),
            params=_pairs(batch.params, "params"),
            tags=_pairs(batch.tags, "tags"),
        )
    else:
        args = await read_args(request, max_body=MAX_BATCH_LOG_REQUEST_SIZE)
        command = LogRunData(
            run_id=args.run_id(),
            metrics=_points(args.array("metrics")),
            params=_pairs(args.array("params"), "params"),
            tags=_pairs(args.array("tags"), "tags"),
        )
    await execute(request, command)
    return empty()


async def _batch_body(request: web.Request) -> Body:
    """The body, refused by its size in bytes before it is decoded."""
    size = request.content_length
    if size is None or size <= MAX_BATCH_LOG_REQUEST_SIZE:
        body = await read_body(request)
        size = len(body)
        if size <= MAX_BATCH_LOG_REQUEST_SIZE:
            return body
    raise invalid(
        f"Batched logging API requests must be at most {MAX_BATCH_LOG_REQUEST_SIZE} bytes, "
        f"got a request of size {size}."
    )


async def delete_tag(request: web.Request) -> web.Response:
    args = await read_args(request)
    run_id = args.run_id()
    key = args.required_string("key")
    await execute(request, DeleteRunTag(run_id=run_id, key=key))
    return empty()


def _dataset_inputs(items: list[Any]) -> list[DatasetInput]:
    out = []
    for index, item in enumerate(items):
        dataset = item.get("dataset") if isinstance(item, dict) else None
        if not isinstance(dataset, dict):
            raise _missing(f"datasets[{index}].dataset")
        for field in ("name", "digest", "source_type", "source"):
            if not dataset.get(field):
                raise _missing(f"datasets[{index}].dataset.{field}")
        tags = [
            KeyValue(str(t.get("key", "")), str(t.get("value", "")))
            for t in item.get("tags") or []
            if isinstance(t, dict)
        ]
        out.append(
            DatasetInput(
                name=dataset["name"],
                digest=dataset["digest"],
                source_type=dataset["source_type"],
                source=dataset["source"],
                schema=dataset.get("schema") or None,
                profile=dataset.get("profile") or None,
                tags=tags,
            )
        )
    return out


async def log_inputs(request: web.Request) -> web.Response:
    args = await read_args(request)
    run_id = args.run_id()
    datasets = _dataset_inputs(args.array("datasets"))
    model_ids = [
        m["model_id"] for m in args.array("models") if isinstance(m, dict) and m.get("model_id")
    ]
    await execute(request, LogInputs(run_id=run_id, datasets=datasets, model_ids=model_ids))
    return empty()


async def log_outputs(request: web.Request) -> web.Response:
    args = await read_args(request)
    run_id = args.run_id()
    models = [
        ModelOutput(model_id=m["model_id"], step=int(m.get("step") or 0))
        for m in args.array("models")
        if isinstance(m, dict) and m.get("model_id")
    ]
    await execute(request, LogOutputs(run_id=run_id, models=models))
    return empty()


# --- search --------------------------------------------------------------------------------


async def search(request: web.Request) -> web.Response:
    args = await read_args(request)
    experiment_ids = [parse_experiment_id(e) for e in args.array("experiment_ids")]
    readable = await readable_experiment_ids(request, [str(e) for e in experiment_ids])
    if experiment_ids and not readable:
        return json_response({})  # none the caller may read: MLflow filters, no 403
    experiment_ids = [e for e in experiment_ids if str(e) in readable]
    max_results = args.integer("max_results")
    query = compile_run_search(
        experiment_ids=experiment_ids,
        view_type=args.string("run_view_type") or "ACTIVE_ONLY",
        filter_string=args.string("filter"),
        order_by=args.string_list("order_by"),
        max_results=1000 if max_results is None else max_results,
        page_token=args.string("page_token"),
    )
    found = await queries.search_runs_json(services(request).pool, query)
    return prerendered_page(query, found, "runs")


def run_routes() -> list[Route]:
    read, edit = Permission.EXPERIMENT_READ, Permission.EXPERIMENT_EDIT
    base = "/mlflow/runs"
    return [
        Route("POST", f"{base}/create", create, edit, resource=arg("experiment_id")),
        Route("GET", f"{base}/get", get, read, reads=RUNS, resource=run),
        Route("POST", f"{base}/update", update, edit, resource=run),
        Route("POST", f"{base}/delete", _lifecycle(True), edit, resource=run),
        Route("POST", f"{base}/restore", _lifecycle(False), edit, resource=run),
        Route("POST", f"{base}/log-metric", log_metric, edit, resource=run),
        Route("POST", f"{base}/log-parameter", log_param, edit, resource=run),
        Route("POST", f"{base}/set-tag", set_tag, edit, resource=run),
        Route("POST", f"{base}/delete-tag", delete_tag, edit, resource=run),
        Route("POST", f"{base}/log-batch", log_batch, edit, resource=run),
        Route("POST", f"{base}/log-inputs", log_inputs, edit, resource=run),
        Route("POST", f"{base}/outputs", log_outputs, edit, resource=run),
        Route("POST", f"{base}/search", search, read, reads=RUNS, resource=FILTERED),
        Route("GET", f"{base}/search", search, read, reads=RUNS, resource=FILTERED),
    ]

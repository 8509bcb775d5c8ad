"""MLflow run routes: lifecycle, logging, search (compat sections 1.2, 1.3)."""

from __future__ import annotations

import math
from typing import Any

from aiohttp import web

from evtrack.api import _plain_batch as plain_batch
from evtrack.api._common import (
    empty,
    json_response,
    prerendered_page,
    prerendered_response,
    run_command,
    services,
    wait_fresh,
)
from evtrack.api._requests import Args, read_args
from evtrack.api._routing import Handler, Route
from evtrack.domain import tracking
from evtrack.domain._validation import (
    DOUBLE_MAX,
    MAX_BATCH_LOG_REQUEST_SIZE,
    MAX_DATASET_DIGEST_SIZE,
    MAX_DATASET_NAME_SIZE,
    MAX_ENTITY_KEY_LENGTH,
    check_length,
    invalid_value,
    parse_experiment_id,
    validate_batch_limits,
    validate_entity_name,
    validate_metric,
    validate_param,
    validate_run_tag,
)
from evtrack.errors import invalid, not_found
from evtrack.eventlog import UnitOfWork
from evtrack.events import DatasetInput, KeyValue, MetricColumns, ModelOutput
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


_PLAIN_POINT = frozenset({"key", "value", "timestamp", "step"})


def _plain_columns(items: list[Any]) -> MetricColumns | None:
    """The fast path for the common batch: plain points with well-typed fields only.

    Checks whole columns at C speed (comprehensions, min/max, a set of keys) instead of one
    point at a time; returns None when anything is unusual, and the careful path then finds
    the first bad point and reports it in MLflow's words.
    """
    try:
        if not all(type(item) is dict and item.keys() <= _PLAIN_POINT for item in items):
            return None
        keys = [item["key"] for item in items]
        values = [item["value"] for item in items]
        stamps = [item["timestamp"] for item in items]
        steps = [item.get("step") or 0 for item in items]
    except KeyError:
        return None
    if not (
        all(type(v) is float or type(v) is int for v in values)
        and all(type(t) is int for t in stamps)
        and all(type(s) is int for s in steps)
        and all(type(k) is str for k in keys)
        and min(stamps) >= 0
    ):
        return None
    for key in set(keys):
        validate_entity_name(key, "metrics.key", kind="metric")
        check_length("Metric name", MAX_ENTITY_KEY_LENGTH, key)
    if any(math.isinf(v) for v in values):
        values = [math.copysign(DOUBLE_MAX, v) if math.isinf(v) else float(v) for v in values]
    else:
        values = [float(v) for v in values]
    return MetricColumns(keys=keys, values=values, timestamps=stamps, steps=steps)


def _metric_columns(items: list[Any], *, single: bool = False) -> MetricColumns | None:
    if not items:
        return None
    if not single and (fast := _plain_columns(items)) is not None:
        return fast
    keys: list[str] = []
    values: list[float] = []
    stamps: list[int] = []
    steps: list[int] = []
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
        key, value, stamp, step = validate_metric(
            item["key"],
            _number(item["value"]),
            _integer(item["timestamp"]),
            _integer(item.get("step", 0) if item.get("step") is not None else 0),
            path,
        )
        keys.append(key)
        values.append(value)
        stamps.append(stamp)
        steps.append(step)
        model_ids.append(item.get("model_id") or None)
        dataset_name = item.get("dataset_name") or None
        dataset_digest = item.get("dataset_digest") or None
        if dataset_name is not None:
            check_length("dataset_name", MAX_DATASET_NAME_SIZE, dataset_name)
        if dataset_digest is not None:
            check_length("dataset_digest", MAX_DATASET_DIGEST_SIZE, dataset_digest)
        names.append(dataset_name)
        digests.append(dataset_digest)
    return MetricColumns(
        keys=keys,
        values=values,
        timestamps=stamps,
        steps=steps,
        model_ids=model_ids if any(model_ids) else None,
        dataset_names=names if any(names) else None,
        dataset_digests=digests if any(digests) else None,
    )


def _pairs(items: list[Any], name: str, *, params: bool) -> list[KeyValue]:
    out = []
    for index, item in enumerate(items):
        path = f"{name}[{index}]"
        if not isinstance(item, dict) or item.get("key") in (None, ""):
            raise _missing(f"{path}.key")
        value = item.get("value")
        value = "" if value is None else value
        if not isinstance(value, str):
            value = str(value)
        if params:
            out.append(KeyValue(*validate_param(item["key"], value, path)))
        else:
            out.append(KeyValue(*validate_run_tag(item["key"], value, path)))
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
    tags = [(t.key, t.value) for t in _pairs(args.array("tags"), "tags", params=False)]

    async def command(uow: UnitOfWork) -> str:
        return await tracking.create_run(uow, experiment_id, user_id, run_name, start_time, tags)

    # No key derived from the body here: two identical create requests (same start time in
    # milliseconds, no name) are two runs in MLflow, and a client retry cannot be told apart
    # from them. Clients that want retry-safe creation send an Idempotency-Key.
    run_id = await run_command(
        request,
        command,
        result_type=str,
        raw=args.raw,
        derive_key=False,
        declared_user=user_id or None,
    )
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

    async def command(uow: UnitOfWork) -> None:
        await tracking.update_run(uow, run_id, status, end_time, run_name)

    await run_command(request, command, result_type=type(None), raw=args.raw)
    run = await _render_run(request, run_id)
    return json_response({"run_info": run.info})


def _lifecycle(delete: bool) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        args = await read_args(request)
        run_id = args.run_id()

        async def command(uow: UnitOfWork) -> None:
            await tracking.set_run_lifecycle(uow, run_id, delete=delete)

        await run_command(request, command, result_type=type(None), raw=args.raw, derive_key=False)
        return empty()

    return handler


# --- logging -------------------------------------------------------------------------------


async def _log(request: web.Request, args: Args, data: tracking.RunData) -> web.Response:
    run_id = args.run_id()

    async def command(uow: UnitOfWork) -> None:
        await tracking.log_run_data(uow, run_id, data)

    # A key derived from the body is only safe where replaying the same request later is a
    # no-op whatever happened in between: metric points (identical points are one point) and
    # params (immutable). Tags are upserts: a=1, a=2, a=1 must end at 1, so no derived key.
    await run_command(
        request, command, result_type=type(None), raw=args.raw, derive_key=not data.tags
    )
    return empty()


async def log_metric(request: web.Request) -> web.Response:
    args = await read_args(request)
    args.run_id()
    args.required_string("key")  # a non-string key is the reference's type error, not a 500
    metrics = _metric_columns([args.fields], single=True)
    return await _log(request, args, tracking.RunData(metrics, [], []))


async def log_param(request: web.Request) -> web.Response:
    args = await read_args(request)
    args.run_id()
    key = args.required_string("key")
    value = args.string("value")
    if value is None:
        raise _missing("value")
    param = KeyValue(*validate_param(key, value))
    return await _log(request, args, tracking.RunData(None, [param], []))


async def set_tag(request: web.Request) -> web.Response:
    args = await read_args(request)
    args.run_id()
    key = args.required_string("key")
    value = args.string("value")
    if value is None:
        raise _missing("value")
    tag = KeyValue(*validate_run_tag(key, value))
    return await _log(request, args, tracking.RunData(None, [], [tag]))


async def log_batch(request: web.Request) -> web.Response:
    if (response := await _log_plain_batch(request)) is not None:
        return response
    args = await read_args(request, max_body=MAX_BATCH_LOG_REQUEST_SIZE)
    args.run_id()
    metrics, params, tags = args.array("metrics"), args.array("params"), args.array("tags")
    validate_batch_limits(len(metrics), len(params), len(tags))
    data = tracking.RunData(
        _metric_columns(metrics),
        _pairs(params, "params", params=True),
        _pairs(tags, "tags", params=False),
    )
    return await _log(request, args, data)


async def _log_plain_batch(request: web.Request) -> web.Response | None:
    """The fast path for the common body (see ``_plain_batch``); None to take the general one."""
    if request.content_type != "application/json":
        return None
    body = await request.read()
    if len(body) > MAX_BATCH_LOG_REQUEST_SIZE or (batch := plain_batch.decode(body)) is None:
        return None
    args = Args(batch.fields(), from_query=False, raw=body)
    args.run_id()
    validate_batch_limits(len(batch.metrics), len(batch.params), len(batch.tags))
    metrics = plain_batch.metric_columns(batch.metrics)
    if metrics is False:
        return None
    data = tracking.RunData(
        metrics if isinstance(metrics, MetricColumns) else None,
        _pairs(batch.params, "params", params=True),
        _pairs(batch.tags, "tags", params=False),
    )
    return await _log(request, args, data)


async def delete_tag(request: web.Request) -> web.Response:
    args = await read_args(request)
    run_id = args.run_id()
    key = args.required_string("key")

    async def command(uow: UnitOfWork) -> None:
        await tracking.delete_run_tag(uow, run_id, key)

    await run_command(request, command, result_type=type(None), raw=args.raw, derive_key=False)
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
        check_length("dataset name", MAX_DATASET_NAME_SIZE, dataset["name"])
        check_length("dataset digest", MAX_DATASET_DIGEST_SIZE, dataset["digest"])
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

    async def command(uow: UnitOfWork) -> None:
        await tracking.log_inputs(uow, run_id, datasets, model_ids)

    await run_command(request, command, result_type=type(None), raw=args.raw)
    return empty()


async def log_outputs(request: web.Request) -> web.Response:
    args = await read_args(request)
    run_id = args.run_id()
    models = [
        ModelOutput(model_id=m["model_id"], step=int(m.get("step") or 0))
        for m in args.array("models")
        if isinstance(m, dict) and m.get("model_id")
    ]

    async def command(uow: UnitOfWork) -> None:
        await tracking.log_outputs(uow, run_id, models)

    await run_command(request, command, result_type=type(None), raw=args.raw)
    return empty()


# --- search --------------------------------------------------------------------------------


async def search(request: web.Request) -> web.Response:
    args = await read_args(request)
    experiment_ids = [parse_experiment_id(e) for e in args.array("experiment_ids")]
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
        Route("POST", f"{base}/create", create, edit),
        Route("GET", f"{base}/get", get, read, reads=RUNS),
        Route("POST", f"{base}/update", update, edit),
        Route("POST", f"{base}/delete", _lifecycle(True), edit),
        Route("POST", f"{base}/restore", _lifecycle(False), edit),
        Route("POST", f"{base}/log-metric", log_metric, edit),
        Route("POST", f"{base}/log-parameter", log_param, edit),
        Route("POST", f"{base}/set-tag", set_tag, edit),
        Route("POST", f"{base}/delete-tag", delete_tag, edit),
        Route("POST", f"{base}/log-batch", log_batch, edit),
        Route("POST", f"{base}/log-inputs", log_inputs, edit),
        Route("POST", f"{base}/outputs", log_outputs, edit),
        Route("POST", f"{base}/search", search, read, reads=RUNS),
        Route("GET", f"{base}/search", search, read, reads=RUNS),
    ]

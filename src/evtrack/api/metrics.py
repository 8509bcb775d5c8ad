"""MLflow metric history routes (compat section 1.4)."""

from __future__ import annotations

from typing import Any

import msgspec
from aiohttp import web

from evtrack.api._access import run, runs
from evtrack.api._common import json_response, services
from evtrack.api._requests import read_args
from evtrack.api._routing import Route
from evtrack.errors import invalid
from evtrack.permissions import Permission
from evtrack.queries import metric_samples
from evtrack.queries import metrics as queries
from evtrack.wire import mlflow as wire

MAX_RUNS_PER_BULK_REQUEST = 100
MAX_RESULTS_PER_RUN = 2500
MAX_HISTORY_RESULTS = 25000
METRICS = ("metrics",)


async def get_history(request: web.Request) -> web.StreamResponse:
    args = await read_args(request)
    run_id = args.run_id()
    key = args.required_string("metric_key")
    max_results = args.integer("max_results")
    if max_results is not None and max_results <= 0:
        raise invalid(
            f"Invalid value {max_results} for parameter 'max_results' supplied. "
            "It must be a positive integer."
        )
    pool = services(request).pool
    token = args.string("page_token")
    if max_results is None and not token:
        return await _stream_history(request, pool, run_id, key)
    points, next_token = await queries.metric_history_page(
        pool, run_id, key, page_token=token, limit=max_results or MAX_HISTORY_RESULTS
    )
    body: dict[str, object] = {}
    if points:
        body["metrics"] = points
    if next_token:
        body["next_page_token"] = next_token
    return json_response(body)


async def _stream_history(
    request: web.Request, pool: Any, run_id: str, key: str
) -> web.StreamResponse:
    """The whole series as one JSON answer, written as it is read (bounded memory).

    Each piece is encoded once into its own buffer, whose opening bracket becomes the comma
    that joins it to the previous piece; the closing bracket is left out by a memoryview, so
    a piece of several megabytes is not copied again before it reaches the transport."""
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    await response.prepare(request)
    encoder = msgspec.json.Encoder()
    opened = False
    async for piece in queries.stream_metric_history(pool, run_id, key):
        buffer = bytearray()
        encoder.encode_into(piece, buffer)  # [{...},...,{...}]
        if opened:
            buffer[0] = ord(",")
        else:
            await response.write(b'{"metrics":')
        await response.write(memoryview(buffer)[:-1])
        opened = True
    await response.write(b"]}" if opened else b"{}")
    await response.write_eof()
    return response


async def get_history_bulk_interval(request: web.Request) -> web.Response:
    args = await read_args(request)
    run_ids = args.string_list("run_ids")
    if not run_ids:
        raise invalid(
            "Missing value for required parameter 'run_ids'. "
            "See the API docs for more information about request parameters."
        )
    if len(run_ids) > MAX_RUNS_PER_BULK_REQUEST:
        raise invalid(
            f"GetMetricHistoryBulkInterval request must specify at most "
            f"{MAX_RUNS_PER_BULK_REQUEST} run_ids. Received {len(run_ids)} run_ids."
            " See the API docs for more information about request parameters."
        )
    key = args.required_string("metric_key")
    max_results = args.integer("max_results")
    if max_results is not None and not 1 <= max_results <= MAX_RESULTS_PER_RUN:
        raise invalid(
            f"max_results must be between 1 and {MAX_RESULTS_PER_RUN}."
            " See the API docs for more information about request parameters."
        )
    start, end = args.integer("start_step"), args.integer("end_step")
    if (start is None) != (end is None):
        raise invalid("If either start step or end step are specified, both must be specified.")
    if start is not None and end is not None and start > end:
        raise invalid(
            "end_step must be greater than start_step. "
            f"Found start_step={start} and end_step={end}."
        )
    points = await metric_samples.metric_history_sampled(
        services(request).pool,
        run_ids,
        key,
        max_results=max_results or MAX_RESULTS_PER_RUN,
        start_step=start,
        end_step=end,
    )
    return json_response({"metrics": points} if points else {})


async def get_history_bulk(request: web.Request) -> web.Response:
    """The legacy UI route: whole histories of several runs (ajax only)."""
    run_ids = request.query.getall("run_id", [])
    if not run_ids:
        raise invalid("GetMetricHistoryBulk request must specify at least one run_id.")
    if len(run_ids) > MAX_RUNS_PER_BULK_REQUEST:
        raise invalid(
            f"GetMetricHistoryBulk request cannot specify more than {MAX_RUNS_PER_BULK_REQUEST}"
            f" run_ids. Received {len(run_ids)} run_ids."
        )
    key = request.query.get("metric_key")
    if key is None:
        raise invalid("GetMetricHistoryBulk request must specify a metric_key.")
    try:
        max_results = min(
            int(request.query.get("max_results", MAX_HISTORY_RESULTS)), MAX_HISTORY_RESULTS
        )
    except ValueError as exc:
        raise invalid("max_results must be an integer.") from exc
    pool = services(request).pool
    points: list[wire.Metric] = []
    for run_id in sorted(run_ids):
        page, _ = await queries.metric_history_page(
            pool, run_id, key, page_token=None, limit=max_results
        )
        points.extend(
            wire.Metric(key=p.key, value=p.value, timestamp=p.timestamp, step=p.step, run_id=run_id)
            for p in sorted(page, key=lambda p: (p.step, p.timestamp))
        )
    return json_response({"metrics": points[:max_results]})


def metric_routes() -> list[Route]:
    read = Permission.EXPERIMENT_READ
    return [
        Route("GET", "/mlflow/metrics/get-history", get_history, read, reads=METRICS, resource=run),
        Route(
            "GET",
            "/mlflow/metrics/get-history-bulk-interval",
            get_history_bulk_interval,
            read,
            reads=METRICS,
            resource=runs("run_ids"),
        ),
        Route(
            "GET",
            "/mlflow/metrics/get-history-bulk",
            get_history_bulk,
            read,
            reads=METRICS,
            resource=runs("run_id"),
            prefixes=("/ajax-api/2.0",),
        ),
    ]

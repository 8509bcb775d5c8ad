"""Long metric series for drawing: min/max buckets of a step window, or its raw points.

``GET /api/2.0/evtrack/metrics/buckets?run_id=&key=[&start_step=&end_step=][&buckets=]
[&raw_limit=]`` is what the console's series explorer draws from: a million-point series
comes back as ``buckets`` buckets, each with its minimum and maximum (a one-point spike
survives), and a zoomed window with at most ``raw_limit`` points comes back as the points.
``GET /api/2.0/evtrack/metrics/series?run_id=`` lists a run's series with their sizes.
"""

from __future__ import annotations

from aiohttp import web

from evtrack.api._access import run
from evtrack.api._common import json_response, services
from evtrack.api._requests import Args, read_args
from evtrack.api._routing import Route
from evtrack.errors import invalid
from evtrack.events import INT64_MAX, INT64_MIN
from evtrack.permissions import Permission
from evtrack.queries.metric_buckets import MAX_BUCKETS, MAX_RAW_LIMIT, metric_buckets, run_series

DEFAULT_BUCKETS = 1000
METRICS = ("metrics",)


def _bounded(args: Args, name: str, low: int, high: int, default: int | None) -> int | None:
    value = args.integer(name)
    if value is None:
        return default
    if not low <= value <= high:
        raise invalid(f"Invalid value {value} for parameter '{name}': must be {low} to {high}.")
    return value


async def buckets(request: web.Request) -> web.Response:
    args = await read_args(request)
    run_id = args.run_id()
    key = args.required_string("key")
    start = _bounded(args, "start_step", INT64_MIN, INT64_MAX, None)
    end = _bounded(args, "end_step", INT64_MIN, INT64_MAX, None)
    if start is not None and end is not None and start > end:
        raise invalid(f"Invalid step window: start_step {start} is after end_step {end}.")
    count = _bounded(args, "buckets", 1, MAX_BUCKETS, DEFAULT_BUCKETS)
    assert count is not None
    raw_limit = _bounded(args, "raw_limit", 0, MAX_RAW_LIMIT, count)
    assert raw_limit is not None
    answer = await metric_buckets(
        services(request).pool,
        run_id,
        key,
        start_step=start,
        end_step=end,
        buckets=count,
        raw_limit=raw_limit,
    )
    return json_response(answer)


async def series(request: web.Request) -> web.Response:
    run_id = (await read_args(request)).run_id()
    return json_response(
        {"run_id": run_id, "series": await run_series(services(request).pool, run_id)}
    )


def series_routes() -> list[Route]:
    read = Permission.EXPERIMENT_READ
    return [
        Route("GET", "/evtrack/metrics/buckets", buckets, read, reads=METRICS, resource=run),
        Route("GET", "/evtrack/metrics/series", series, read, reads=METRICS, resource=run),
    ]

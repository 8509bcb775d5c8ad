"""Routes MLflow's web UI calls for features evtrack does not have: empty answers in the
reference server's shapes, so each page shows its empty state instead of an error.

evtrack tracks experiments, runs, logged models and the registry; it stores no GenAI traces,
evaluation datasets, AI-gateway endpoints or MCP servers, and has no AI assistant. The UI asks
for them on its pages anyway (the GenAI overview, the Traces and Datasets tabs) and shows a red
error or a spinner that never stops when the route is missing. Every route here answers what the
reference answers for an experiment that has none of these: the shapes were taken from a
running reference server (MLflow 3.17) with an empty store. :data:`STUB_ROUTES` lists them, so
the documentation and the tests can name every route that answers only an empty stub.

UI telemetry is answered as disabled, as the reference answers with telemetry turned off: the
UI then sends nothing.
"""

from __future__ import annotations

from aiohttp import web

from evtrack.api._access import FILTERED
from evtrack.api._common import json_response
from evtrack.api._requests import Args, read_args
from evtrack.api._routing import Handler, Route
from evtrack.errors import invalid
from evtrack.permissions import Permission

V3 = ("/api/3.0", "/ajax-api/3.0")
AJAX_V2 = ("/ajax-api/2.0",)
AJAX_V3 = ("/ajax-api/3.0",)

UI_TELEMETRY_DISABLED = {
    "disable_ui_events": [],
    "disable_ui_telemetry": True,
    "ui_rollout_percentage": 0,
}


def _require(args: Args, *names: str) -> None:
    """Refuse a request without ``names``, with the reference's message: a malformed call is
    a 400 even where the answer would be empty."""
    for name in names:
        value = args.fields.get(name)
        if value is None or value == [] or value == "":
            raise invalid(
                f"Missing value for required parameter '{name}'. "
                "See the API docs for more information about request parameters."
            )


def _empty(*required: str) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        _require(await read_args(request), *required)
        return json_response({})

    return handler


async def trace_metrics(request: web.Request) -> web.Response:
    """No traces: an ungrouped count is one point of 0 (SQL's COUNT of nothing), every other
    aggregate or grouping has no point at all, as the reference answers."""
    args = await read_args(request)
    _require(args, "experiment_ids", "view_type", "aggregations")
    aggregations = args.array("aggregations")
    kinds = [a.get("aggregation_type") for a in aggregations if isinstance(a, dict)]
    grouped = bool(args.array("dimensions")) or args.fields.get("time_interval_seconds")
    if grouped or "COUNT" not in kinds:
        return json_response({})
    metric = args.string("metric_name") or ""
    return json_response({"data_points": [{"metric_name": metric, "values": {"COUNT": 0.0}}]})


async def gateway_proxy(request: web.Request) -> web.Response:
    """No AI gateway is configured: the reference's answer when it has no deployments target."""
    return json_response({"endpoints": []})


async def assistant_config(request: web.Request) -> web.Response:
    """No AI assistant: nothing configured, and no remote access."""
    return json_response({"providers": {}, "projects": {}, "remote_access_allowed": False})


async def assistant_providers(request: web.Request) -> web.Response:
    return json_response({"providers": []})


async def mcp_servers(request: web.Request) -> web.Response:
    """No MCP server registry."""
    return json_response({"mcp_servers": []})


async def ui_telemetry_config(request: web.Request) -> web.Response:
    return json_response(UI_TELEMETRY_DISABLED)


async def ui_telemetry_events(request: web.Request) -> web.Response:
    return json_response({"status": "disabled"})


def ui_stub_routes() -> list[Route]:
    return list(STUB_ROUTES)


_read = Permission.EXPERIMENT_READ
# Empty answers, but only to signed-in callers (deny by default; the UI sends credentials).
_signed_in = Permission.AUTHENTICATED
STUB_ROUTES: tuple[Route, ...] = (
    Route("POST", "/mlflow/traces/search", _empty(), _read, prefixes=V3, resource=FILTERED),
    Route("POST", "/mlflow/traces/metrics", trace_metrics, _read, prefixes=V3, resource=FILTERED),
    Route("POST", "/mlflow/datasets/search", _empty(), _read, prefixes=V3, resource=FILTERED),
    Route("GET", "/mlflow/gateway-proxy", gateway_proxy, _signed_in, prefixes=AJAX_V2),
    Route("POST", "/mlflow/gateway-proxy", gateway_proxy, _signed_in, prefixes=AJAX_V2),
    Route("GET", "/mlflow/assistant/config", assistant_config, _signed_in, prefixes=AJAX_V3),
    Route("GET", "/mlflow/assistant/providers", assistant_providers, _signed_in, prefixes=AJAX_V3),
    Route("GET", "/mlflow/mcp-servers", mcp_servers, _signed_in, prefixes=V3),
    Route("GET", "/mlflow/ui-telemetry", ui_telemetry_config, _signed_in, prefixes=AJAX_V3),
    Route("POST", "/mlflow/ui-telemetry", ui_telemetry_events, _signed_in, prefixes=AJAX_V3),
)
"""Every route that answers only an empty stub."""

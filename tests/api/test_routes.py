"""Every route declares its permission (invariant 11) and is mounted under MLflow's prefixes."""

from __future__ import annotations

from aiohttp import web

from evtrack.api import all_routes, mount
from evtrack.api.console import STATIC_PATHS
from evtrack.permissions import Permission

RESOURCE_FREE = {
    "/health",
    "/ready",
    "/version",
    "/mlflow/server-info",
    "/mlflow/experiments/create",
    "/mlflow/registered-models/create",
    # MLflow's web UI: its page and files, and the stubs of features evtrack does not have.
    "/",
    "/static-files/{path:.+}",
    "/mlflow/gateway-proxy",
    "/mlflow/assistant/config",
    "/mlflow/assistant/providers",
    "/mlflow/mcp-servers",
    "/mlflow/ui-telemetry",
    *STATIC_PATHS,  # the console's own code, no data
}


def test_every_route_declares_a_permission() -> None:
    for route in all_routes():
        assert isinstance(route.permission, Permission), route
        if route.permission is Permission.NONE:
            assert route.path in RESOURCE_FREE, f"{route.method} {route.path} needs a permission"


def test_write_routes_need_more_than_read() -> None:
    reads = {Permission.EXPERIMENT_READ, Permission.MODEL_READ}
    for route in all_routes():
        if route.method in ("POST", "PUT", "PATCH", "DELETE") and route.permission in reads:
            # Read-only queries sent with POST: searches, GraphQL and the UI's aggregates.
            assert route.path.endswith(
                (
                    "/search",
                    "/get-latest-versions",
                    "/graphql",
                    "/search-datasets",
                    "/traces/metrics",
                )
            ), route


def test_routes_are_mounted_under_api_and_ajax_prefixes() -> None:
    app = web.Application()
    mount(app, all_routes())
    paths = {r.resource.canonical for r in app.router.routes() if r.resource is not None}
    for needed in (
        "/api/2.0/mlflow/runs/log-batch",
        "/ajax-api/2.0/mlflow/runs/search",
        "/api/3.0/mlflow/server-info",
    ):
        assert needed in paths

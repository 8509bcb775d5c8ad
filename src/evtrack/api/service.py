"""Service routes: liveness, readiness, version, server capabilities."""

from __future__ import annotations

from aiohttp import web

from evtrack import MLFLOW_COMPAT_VERSION
from evtrack.api._common import json_response, services
from evtrack.api._routing import Route
from evtrack.permissions import Permission

SERVER_INFO = {
    "store_type": "SqlStore",
    "workspaces_enabled": False,
    "trace_archival_enabled": False,
    "multipart_uploads_enabled": False,
    "multipart_downloads_enabled": False,
    "presigned_upload_run_id_supported": False,
    "presigned_upload_model_id_supported": False,
    "features_enabled": {"gateway": False},
}


async def health(request: web.Request) -> web.Response:
    return web.Response(text="OK")


async def ready(request: web.Request) -> web.Response:
    """Readiness (invariant 12): 200 while the database answers and no read model lags past
    the bound or stalls; 503 naming what lags otherwise. ``/health`` stays liveness only."""
    report = await services(request).readiness.check()
    body = {
        "status": "ready" if report.ready else "not_ready",
        "database": "ok" if report.database else "unreachable",
        "max_lag_events": report.max_lag,
        "stall_after_seconds": report.stall_after_s,
        "read_models": report.behind,
        "lagging": [
            {"name": lag.name, "events_behind": lag.behind, "stalled_seconds": lag.stalled_s}
            for lag in report.lagging
        ],
    }
    if report.error is not None:
        body["error"] = report.error
    response = json_response(body, status=200 if report.ready else 503)
    if not report.ready:
        response.headers["Retry-After"] = "5"
    return response


async def version(request: web.Request) -> web.Response:
    return web.Response(text=MLFLOW_COMPAT_VERSION)


async def server_info(request: web.Request) -> web.Response:
    return json_response(SERVER_INFO)


def service_routes() -> list[Route]:
    root = ("",)
    v3 = ("/api/3.0", "/ajax-api/3.0")
    return [
        Route("GET", "/health", health, Permission.NONE, prefixes=root),
        Route("GET", "/ready", ready, Permission.NONE, prefixes=root),
        Route("GET", "/version", version, Permission.NONE, prefixes=root),
        Route("GET", "/mlflow/server-info", server_info, Permission.NONE, prefixes=v3),
    ]

"""Service routes: health, version, server capabilities, and calls answered as empty."""

from __future__ import annotations

from aiohttp import web

from evtrack import MLFLOW_COMPAT_VERSION
from evtrack.api._common import json_response
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


async def version(request: web.Request) -> web.Response:
    return web.Response(text=MLFLOW_COMPAT_VERSION)


async def server_info(request: web.Request) -> web.Response:
    return json_response(SERVER_INFO)


def service_routes() -> list[Route]:
    root = ("",)
    v3 = ("/api/3.0", "/ajax-api/3.0")
    return [
        Route("GET", "/health", health, Permission.NONE, prefixes=root),
        Route("GET", "/version", version, Permission.NONE, prefixes=root),
        Route("GET", "/mlflow/server-info", server_info, Permission.NONE, prefixes=v3),
    ]

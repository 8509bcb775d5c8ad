"""The HTTP layer: requests decoded into domain commands and read-model queries, answered as
MLflow does. The composition root (:mod:`evtrack.server`) attaches the services."""

from evtrack.api._access import ACCESS, AUTH_CONFIG, LOCAL_USER, AuthConfig
from evtrack.api._app import RECENT_ERRORS, all_routes, build_app, check_limits, mount
from evtrack.api._http_server import connection_limits, serve
from evtrack.api._state import SERVICES, Services
from evtrack.api._ui_bundle import UiBundle, locate_ui_bundle
from evtrack.api.artifacts import ARTIFACT_STORE
from evtrack.api.ingest import INGEST_GATE, IngestGate, IngestLimits
from evtrack.api.ui import UI_FILES, ui_files

__all__ = [
    "ACCESS",
    "ARTIFACT_STORE",
    "AUTH_CONFIG",
    "INGEST_GATE",
    "LOCAL_USER",
    "RECENT_ERRORS",
    "SERVICES",
    "UI_FILES",
    "AuthConfig",
    "IngestGate",
    "IngestLimits",
    "Services",
    "UiBundle",
    "all_routes",
    "build_app",
    "check_limits",
    "connection_limits",
    "locate_ui_bundle",
    "mount",
    "serve",
    "ui_files",
]

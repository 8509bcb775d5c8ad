"""The HTTP layer: MLflow REST routes translated to domain commands and read-model queries."""

from evtrack.api._app import all_routes, create_app
from evtrack.api._http_server import serve

__all__ = ["all_routes", "create_app", "serve"]

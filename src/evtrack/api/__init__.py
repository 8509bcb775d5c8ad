"""The HTTP layer: MLflow REST routes translated to domain commands and read-model queries."""

from evtrack.api._app import all_routes, create_app

__all__ = ["all_routes", "create_app"]

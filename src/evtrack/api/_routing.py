"""The route table: every HTTP route with the permission it needs and the read models it reads.

Routes are declared once with a path relative to an API prefix; the app mounts each one under
every prefix MLflow's clients use (``/api/2.0``, ``/ajax-api/2.0``, and the 3.0 twins).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from aiohttp import web

from evtrack.permissions import Permission

JSON_BODY = ("application/json",)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Locator = Callable[[web.Request], Awaitable[Sequence[str]]]


@dataclass(frozen=True)
class Route:
    """One endpoint.

    ``path`` is relative to the API prefix, e.g. ``/mlflow/runs/get``. ``reads`` names the
    projections whose read models the handler queries: the app waits (bounded) until they
    have caught up with the log as it was when the request arrived (read-your-writes).
    ``prefixes`` lists the API prefixes the route is mounted under; ``None`` means the
    default set (``/api/2.0`` and ``/ajax-api/2.0``); ``("",)`` mounts it at the root.
    ``body_types`` lists the content types a write (POST, PUT, PATCH, DELETE) may declare
    for a non-empty body; unless it is ``None`` (any type, declared or not), types a browser
    may send cross-site without a preflight (form, multipart, text/plain) are refused even
    with an empty body, and so is an undeclared body (see :mod:`evtrack.api._cross_site`).
    """

    method: str
    path: str
    handler: Handler
    permission: Permission
    reads: tuple[str, ...] = ()
    prefixes: tuple[str, ...] | None = None
    # How to find the resource the request names (see api._access); required for a
    # permission on a resource type, so no such route can be registered unguarded.
    resource: Locator | None = None
    body_types: tuple[str, ...] | None = JSON_BODY

    def __post_init__(self) -> None:
        if self.permission.resource_type is not None and self.resource is None:
            raise TypeError(
                f"{self.method} {self.path} needs {self.permission.value} but names no resource"
            )

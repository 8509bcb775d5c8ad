"""Which events of the log a caller may see (the live event stream).

An event belongs to the resource its stream is about: an experiment, a run or logged model
(their experiment), or a registered model (by its current name). A caller sees it with READ
on that resource; streams about nothing a grant can name (users, tokens) are an admin's.
"""

from __future__ import annotations

from aiohttp import web

from evtrack.api._access import access, principal
from evtrack.permissions import EXPERIMENT, REGISTERED_MODEL


class EventAccess:
    """Decides, per event, whether one subscriber may see it; remembers per resource."""

    def __init__(self, request: web.Request) -> None:
        self._request = request
        self._seen: dict[str, bool] = {}

    async def may_read(self, stream_id: str) -> bool:
        """Whether the caller may see an event of ``stream_id``."""
        caller = await principal(self._request)
        if caller.is_admin:
            return True
        known = self._seen.get(stream_id)
        if known is None:
            known = await self._decide(stream_id)
            self._seen[stream_id] = known
        return known

    async def _decide(self, stream_id: str) -> bool:
        control = access(self._request)
        kind, _, key = stream_id.partition("-")
        resource: tuple[str, str | None]
        if kind == "experiment":
            resource = (EXPERIMENT, key)
        elif kind == "run":
            resource = (EXPERIMENT, await control.experiment_of_run(key))
        elif kind == "logged_model":
            resource = (EXPERIMENT, await control.experiment_of_logged_model(key))
        elif kind == "registered_model":
            resource = (REGISTERED_MODEL, await control.model_name(key))
        else:
            return False
        resource_type, resource_id = resource
        if resource_id is None:
            return False
        caller = await principal(self._request)
        return (await control.level(caller, resource_type, resource_id)).can_read

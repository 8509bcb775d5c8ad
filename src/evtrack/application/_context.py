"""Who asks, and through which request: what every command carries besides its own fields."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Context:
    """The caller of a command.

    ``principal`` is recorded as the actor of every event the command appends (invariant 11).
    ``idempotency_key`` is the client's own key, scoped by ``scope`` (the route it came
    through), so a retried request is answered once whatever else is in flight.
    """

    principal: str
    claimed_principal: str | None = None  # unverified, only with authentication off
    request_id: str | None = None
    client: str | None = None
    idempotency_key: str | None = None
    scope: str = ""
    source: str | None = None  # an import's source server, recorded in the metadata

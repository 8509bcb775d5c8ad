"""Permissions: what each route needs, and what a grant gives.

Two vocabularies meet here. A route declares a :class:`Permission`: which kind of resource the
request names and which capability it needs on it. A user holds an :class:`AccessLevel` on a
resource (MLflow's names: READ, USE, EDIT, MANAGE, DENY), from an explicit grant, from owning
it (the creator gets MANAGE), from a grant on every resource of the type (``*``), or else from
the server's default. Enforcement is deny-by-default: a route without a declaration cannot be
registered, and a test walks the route table.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Permission(StrEnum):
    """The permission a route requires, on the resource the request names."""

    NONE = "none"  # health, version, server-info: no resource involved, no login needed
    AUTHENTICATED = "authenticated"  # any signed-in user; the handler checks the rest
    EXPERIMENT_CREATE = "experiment:create"
    EXPERIMENT_READ = "experiment:read"
    EXPERIMENT_EDIT = "experiment:edit"
    EXPERIMENT_MANAGE = "experiment:manage"
    MODEL_CREATE = "registered_model:create"
    MODEL_READ = "registered_model:read"
    MODEL_EDIT = "registered_model:edit"
    MODEL_MANAGE = "registered_model:manage"
    ADMIN = "admin"

    @property
    def resource_type(self) -> str | None:
        kind, _, _ = self.value.partition(":")
        return kind if kind in RESOURCE_TYPES else None

    @property
    def capability(self) -> str | None:
        _, _, capability = self.value.partition(":")
        return capability or None


EXPERIMENT = "experiment"
REGISTERED_MODEL = "registered_model"
RESOURCE_TYPES = (EXPERIMENT, REGISTERED_MODEL)
WILDCARD = "*"
"""A grant on ``*`` applies to every resource of its type, including ones created later."""


@dataclass(frozen=True)
class AccessLevel:
    """One of MLflow's permission levels and what it allows."""

    name: str
    rank: int
    can_read: bool = False
    can_use: bool = False
    can_update: bool = False
    can_manage: bool = False

    def allows(self, capability: str) -> bool:
        """Whether this level allows a route capability (read, edit, manage, create)."""
        if capability in ("read", "create"):
            return self.can_read
        if capability == "edit":
            return self.can_update
        if capability == "manage":
            return self.can_manage
        return False


DENY = AccessLevel("DENY", -1)
NO_PERMISSIONS = AccessLevel("NO_PERMISSIONS", 0)
READ = AccessLevel("READ", 1, can_read=True)
USE = AccessLevel("USE", 2, can_read=True, can_use=True)
EDIT = AccessLevel("EDIT", 3, can_read=True, can_use=True, can_update=True)
MANAGE = AccessLevel("MANAGE", 4, can_read=True, can_use=True, can_update=True, can_manage=True)

ACCESS_LEVELS: dict[str, AccessLevel] = {
    level.name: level for level in (READ, USE, EDIT, MANAGE, DENY, NO_PERMISSIONS)
}
GRANTABLE = ("READ", "USE", "EDIT", "MANAGE", "DENY", "NO_PERMISSIONS")


def access_level(name: str) -> AccessLevel:
    """The level named ``name``; raises KeyError for an unknown name."""
    return ACCESS_LEVELS[name]


ACCESS_CHANNEL = "evtrack_access"
"""PostgreSQL channel the access read model notifies when who-may-do-what changed."""


@dataclass(frozen=True)
class Visibility:
    """Which resources of one type a caller may read, as a search filter.

    ``include`` None with an empty ``exclude`` is everything (an admin, or a default that
    reads). With a readable default, ``exclude`` lists resources denied explicitly; with an
    unreadable default, ``include`` lists the only resources granted.
    """

    include: frozenset[str] | None = None
    exclude: frozenset[str] = frozenset()

    @property
    def everything(self) -> bool:
        return self.include is None and not self.exclude

    def allows(self, resource_id: str) -> bool:
        if self.include is not None:
            return resource_id in self.include
        return resource_id not in self.exclude


EVERYTHING = Visibility()

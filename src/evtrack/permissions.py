"""What each route needs to be allowed, declared from the first route on.

Enforcement is deny-by-default: a route without a declaration cannot be registered, so the
route table can be walked by a test and by the auth layer when it lands.
"""

from __future__ import annotations

from enum import StrEnum


class Permission(StrEnum):
    """The permission a route requires, on the resource the request names."""

    NONE = "none"  # health, version, server-info: no resource involved
    EXPERIMENT_READ = "experiment:read"
    EXPERIMENT_EDIT = "experiment:edit"
    EXPERIMENT_MANAGE = "experiment:manage"
    MODEL_READ = "registered_model:read"
    MODEL_EDIT = "registered_model:edit"
    MODEL_MANAGE = "registered_model:manage"
    ADMIN = "admin"

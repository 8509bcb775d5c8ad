"""Typed commands of the model registry and of evtrack's promotion approval.

The HTTP layer decodes a request into one of these; :mod:`evtrack.domain.registry` judges
it (names, tags, aliases, stages, sources, the promotion policy) with MLflow's error texts.
None of them is replay-safe: a tag or alias set twice around another change must land
twice, and a creation or a transition request executed again is a second one. A client's
own ``Idempotency-Key`` still makes any of them safe to retry.

Who acts is the executing context's principal, not a field: the work reads it from the unit
of work's metadata, so the requester recorded on a transition request is the caller.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from evtrack.domain.commands import Command
from evtrack.domain.registry import PromotionPolicy
from evtrack.events import KeyValue

Decision = Literal["approve", "reject", "cancel"]

# --- registered models ---------------------------------------------------------------------


class CreateRegisteredModel(Command, frozen=True, kw_only=True):
    name: str
    tags: list[KeyValue] = []
    description: str | None = None


class RenameRegisteredModel(Command, frozen=True, kw_only=True):
    name: str
    new_name: str | None


class UpdateRegisteredModel(Command, frozen=True, kw_only=True):
    name: str
    description: str | None = None


class DeleteRegisteredModel(Command, frozen=True, kw_only=True):
    name: str


class SetRegisteredModelTag(Command, frozen=True, kw_only=True):
    name: str
    key: str
    value: str


class DeleteRegisteredModelTag(Command, frozen=True, kw_only=True):
    name: str
    key: str


class SetModelAlias(Command, frozen=True, kw_only=True):
    name: str
    alias: str
    version: int


class DeleteModelAlias(Command, frozen=True, kw_only=True):
    name: str
    alias: str


# --- model versions ------------------------------------------------------------------------


class CreateModelVersion(Command, frozen=True, kw_only=True):
    """Answers the new version's number."""

    result_type: ClassVar[type[Any]] = int

    name: str
    source: str
    run_id: str | None = None
    model_id: str | None = None
    tags: list[KeyValue] = []
    run_link: str | None = None
    description: str | None = None


class UpdateModelVersion(Command, frozen=True, kw_only=True):
    name: str
    version: int
    description: str | None = None


class DeleteModelVersion(Command, frozen=True, kw_only=True):
    name: str
    version: int


class SetModelVersionTag(Command, frozen=True, kw_only=True):
    name: str
    version: int
    key: str
    value: str


class DeleteModelVersionTag(Command, frozen=True, kw_only=True):
    name: str
    version: int
    key: str


class TransitionModelVersionStage(Command, frozen=True, kw_only=True):
    """MLflow's direct transition; the deployment's promotion policy (the domain's rules)
    may refuse it in favour of an approved request."""

    name: str
    version: int
    stage: str
    archive_existing_versions: bool = False


# --- promotion approval (evtrack) ----------------------------------------------------------


class RequestTransition(Command, frozen=True, kw_only=True):
    """Answers the new request's id."""

    result_type: ClassVar[type[Any]] = str

    name: str
    version: int
    stage: str
    archive_existing_versions: bool = False
    comment: str | None = None


class DecideTransition(Command, frozen=True, kw_only=True):
    """Approve (and apply), reject or cancel a pending request, under the promotion policy."""

    name: str
    request_id: str
    decision: Decision
    comment: str | None = None


__all__ = [
    "CreateModelVersion",
    "CreateRegisteredModel",
    "DecideTransition",
    "Decision",
    "DeleteModelAlias",
    "DeleteModelVersion",
    "DeleteModelVersionTag",
    "DeleteRegisteredModel",
    "DeleteRegisteredModelTag",
    "PromotionPolicy",
    "RenameRegisteredModel",
    "RequestTransition",
    "SetModelAlias",
    "SetModelVersionTag",
    "SetRegisteredModelTag",
    "TransitionModelVersionStage",
    "UpdateModelVersion",
    "UpdateRegisteredModel",
]

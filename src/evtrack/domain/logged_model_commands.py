"""Typed commands on MLflow 3 logged models, and the legacy ``runs/log-model``.

:mod:`evtrack.domain.logged_models` judges them (names, keys, statuses, the model JSON).

Only :class:`LogRunModel` is replay-safe: its ``model_json`` carries the model's creation time
and uuid, so an identical command is a retry, and appending twice would not be harmless.
Setting tags, finalizing, logging params and deleting are idempotent by nature, while a key
derived from their content would swallow a legitimate repeat (tag ``a=1``, ``a=2``, ``a=1``
within the key's lifetime would leave ``2``); two identical creations are two models. A
client's own ``Idempotency-Key`` still makes any of them safe to retry.
"""

from __future__ import annotations

from typing import Any, ClassVar

from evtrack.domain.commands import Command
from evtrack.events import KeyValue


class CreateLoggedModel(Command, frozen=True, kw_only=True):
    """Answers the new model's ``m-<32 hex>`` id."""

    result_type: ClassVar[type[Any]] = str

    experiment_id: int
    name: str | None = None
    model_type: str | None = None
    source_run_id: str | None = None
    params: list[KeyValue] = []
    tags: list[KeyValue] = []


class FinalizeLoggedModel(Command, frozen=True, kw_only=True):
    model_id: str
    status: str


class SetLoggedModelTags(Command, frozen=True, kw_only=True):
    model_id: str
    tags: list[KeyValue] = []


class DeleteLoggedModelTag(Command, frozen=True, kw_only=True):
    model_id: str
    key: str


class LogLoggedModelParams(Command, frozen=True, kw_only=True):
    model_id: str
    params: list[KeyValue] = []


class DeleteLoggedModel(Command, frozen=True, kw_only=True):
    model_id: str


class LogRunModel(Command, frozen=True, kw_only=True):
    """Legacy ``runs/log-model``: append an MLmodel document to the run's history tag."""

    run_id: str
    model_json: str

    def replay_safe(self) -> bool:
        return True


__all__ = [
    "CreateLoggedModel",
    "DeleteLoggedModel",
    "DeleteLoggedModelTag",
    "FinalizeLoggedModel",
    "LogLoggedModelParams",
    "LogRunModel",
    "SetLoggedModelTags",
]

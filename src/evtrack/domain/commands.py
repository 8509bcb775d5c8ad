"""Typed commands: everything a client can ask to change, as the domain receives it.

The HTTP layer decodes a request body into one of these and hands it to the application's
``execute``; the domain decides what it means (:func:`evtrack.domain.plan`). Fields hold what
the client sent, shaped but not yet judged: names, lengths, ranges and MLflow's error texts
are the domain's to check, once, whichever route the command came through.

A command's ``result_type`` is what executing it answers; it is stored with the idempotency
key so a retry gets the same answer. ``replay_safe`` says whether the same command executed
again later changes nothing more (points and params do; tag upserts and creations do not):
only such commands get an idempotency key derived from their content when the client sends
none.
"""

from __future__ import annotations

from typing import Any, ClassVar

import msgspec

from evtrack.events import DatasetInput, KeyValue, ModelOutput


class Command(msgspec.Struct, frozen=True, kw_only=True):
    """Base of every command."""

    result_type: ClassVar[type[Any]] = type(None)

    def replay_safe(self) -> bool:
        return False

    def key_content(self) -> Command:
        """What a derived idempotency key is computed from: the command as the client sent
        it, without what the server added (a retry must get the same key)."""
        return self


# --- experiments ---------------------------------------------------------------------------


class CreateExperiment(Command, frozen=True, kw_only=True):
    result_type: ClassVar[type[Any]] = int

    name: Any
    artifact_location: str | None = None
    tags: list[KeyValue] = []


class RenameExperiment(Command, frozen=True, kw_only=True):
    experiment_id: int
    new_name: Any


class DeleteExperiment(Command, frozen=True, kw_only=True):
    experiment_id: int


class RestoreExperiment(Command, frozen=True, kw_only=True):
    experiment_id: int


class SetExperimentTag(Command, frozen=True, kw_only=True):
    experiment_id: int
    key: str
    value: str

    def replay_safe(self) -> bool:
        return True


class EnsureDefaultExperiment(Command, frozen=True, kw_only=True):
    """Create experiment 0 "Default" if it does not exist (MLflow's fluent API falls back to
    it); answers whether it was created."""

    result_type: ClassVar[type[Any]] = bool


class DeleteExperimentTag(Command, frozen=True, kw_only=True):
    experiment_id: int
    key: str


# --- runs ----------------------------------------------------------------------------------


class CreateRun(Command, frozen=True, kw_only=True):
    result_type: ClassVar[type[Any]] = str

    experiment_id: int
    user_id: str = ""
    run_name: str | None = None
    start_time: int | None = None
    tags: list[KeyValue] = []


class UpdateRun(Command, frozen=True, kw_only=True):
    run_id: str
    status: str | None = None
    end_time: int | None = None
    run_name: str | None = None

    def replay_safe(self) -> bool:
        return True


class DeleteRun(Command, frozen=True, kw_only=True):
    run_id: str


class RestoreRun(Command, frozen=True, kw_only=True):
    run_id: str


class MetricPoints(msgspec.Struct, frozen=True, kw_only=True):
    """Points as the client sent them, one list per field (values may still be mistyped:
    the domain words the error for the first bad point)."""

    keys: list[Any]
    values: list[Any]
    timestamps: list[Any]
    steps: list[Any]
    model_ids: list[str | None] | None = None
    dataset_names: list[str | None] | None = None
    dataset_digests: list[str | None] | None = None


class LogRunData(Command, frozen=True, kw_only=True):
    """``log-metric``, ``log-parameter``, ``set-tag`` and ``log-batch``: one event per request.

    ``single`` marks the one-entity routes, whose errors name fields without a list index.
    """

    run_id: str
    metrics: MetricPoints | None = None
    params: list[KeyValue] = []
    tags: list[KeyValue] = []
    single: bool = False

    def replay_safe(self) -> bool:
        # Identical points are one point and params are immutable, so replaying is a no-op;
        # tags are upserts (a=1, a=2, a=1 must end at 1), so a request with tags is not.
        return not self.tags


class DeleteRunTag(Command, frozen=True, kw_only=True):
    run_id: str
    key: str


class LogInputs(Command, frozen=True, kw_only=True):
    run_id: str
    datasets: list[DatasetInput] = []
    model_ids: list[str] = []

    def replay_safe(self) -> bool:
        return True


class LogOutputs(Command, frozen=True, kw_only=True):
    run_id: str
    models: list[ModelOutput] = []

    def replay_safe(self) -> bool:
        return True


# --- native ingestion ----------------------------------------------------------------------


class PackedPoints(msgspec.Struct, frozen=True, kw_only=True):
    """One record's points as little-endian arrays (``uint32`` key index into ``names``,
    ``float64`` values, ``int64`` timestamps and steps). ``field`` names where they came
    from in the request (``metrics`` or ``packed``), for error messages."""

    field: str
    names: list[str]
    key_index: bytes
    values: bytes
    timestamps: bytes
    steps: bytes


class StartRun(msgspec.Struct, frozen=True, kw_only=True):
    experiment_id: str | None = None
    experiment_name: str | None = None
    run_name: str | None = None
    user_id: str | None = None
    start_time: int | None = None
    tags: list[KeyValue] = []


class EndRun(msgspec.Struct, frozen=True, kw_only=True):
    status: str = "FINISHED"
    end_time: int | None = None


class IngestRecord(msgspec.Struct, frozen=True, kw_only=True):
    run_id: str
    points: list[PackedPoints] = []
    params: list[KeyValue] = []
    tags: list[KeyValue] = []
    start: StartRun | None = None
    end: EndRun | None = None


class IngestSummary(msgspec.Struct, frozen=True):
    """What an ingest request stored: runs touched, points, params and tags."""

    runs: int
    points: int
    params: int
    tags: int


class Ingest(Command, frozen=True, kw_only=True):
    """Many runs' starts, data and ends, applied as one transaction.

    The evtrack client always sends an explicit ``Idempotency-Key``; for other senders, an
    identical request within the derived key's lifetime is taken for a retry.
    """

    result_type: ClassVar[type[Any]] = IngestSummary

    records: list[IngestRecord]
    # With authentication on: the experiment each run was authorized in (None: a new
    # experiment created by name). The decision checks the runs are where the caller was
    # allowed to write, so a check made on possibly stale read models cannot be tricked.
    authorized: dict[str, int | None] | None = None

    def key_content(self) -> Command:
        return msgspec.structs.replace(self, authorized=None)

    def replay_safe(self) -> bool:
        return True

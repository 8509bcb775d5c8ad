"""Commands of an import: facts copied from another tracking server, ids and times kept.

Ordinary commands allocate ids (experiments, registered model versions), stamp times and
refuse writes to deleted runs, because a client asks for something new. An import states
what already exists elsewhere: experiment 7 called "churn", created at T, deleted at U;
run r with its points; version 3 in Production. These commands carry those facts as the
source shows them, and the domain decides the events that make evtrack show the same
(:mod:`evtrack.domain.imports`).

Each command names the ``source`` server and a ``fingerprint`` of the source state it
copies. The domain records the fingerprint with the aggregate once everything of it is in
(``ExperimentImported``, ``RunImported``, ``RegisteredModelImported``), so importing the
same state again appends nothing, and an import that was interrupted resumes at the
aggregates that lack it. Whoever executes them is the import's principal (its actor).
"""

from __future__ import annotations

from typing import Any, ClassVar

import msgspec

from evtrack.domain.commands import Command, PackedPoints
from evtrack.events import KeyValue


class ImportedExperiment(msgspec.Struct, frozen=True, kw_only=True):
    experiment_id: int
    name: str
    artifact_location: str
    lifecycle_stage: str  # "active" or "deleted"
    creation_time: int
    last_update_time: int
    tags: list[KeyValue] = []


class ImportExperiment(Command, frozen=True, kw_only=True):
    """Create the experiment under its source id (or bring an earlier import up to date).
    Answers whether it was created. Its lifecycle and times come last, with
    :class:`FinishExperimentImport`, once its runs are in."""

    result_type: ClassVar[type[Any]] = bool

    source: str
    experiment: ImportedExperiment
    fingerprint: str


class FinishExperimentImport(Command, frozen=True, kw_only=True):
    """Give the imported experiment its source lifecycle and times; marks it imported."""

    source: str
    experiment: ImportedExperiment
    fingerprint: str


class ImportedRun(msgspec.Struct, frozen=True, kw_only=True):
    run_id: str
    experiment_id: int
    user_id: str = ""
    run_name: str = ""
    status: str = "RUNNING"
    start_time: int | None = None
    end_time: int | None = None
    lifecycle_stage: str = "active"
    params: list[KeyValue] = []
    tags: list[KeyValue] = []
    fingerprint: str


class ImportRuns(Command, frozen=True, kw_only=True):
    """Create runs under their source ids, with their info, params and tags (or bring
    earlier imports up to date). Answers the ids of the runs whose points and artifacts
    are still to be copied: all but those already imported in the same state."""

    result_type: ClassVar[type[Any]] = list[str]

    source: str
    runs: list[ImportedRun]


class ImportRunPoints(Command, frozen=True, kw_only=True):
    """Metric points of an imported run, as packed arrays; with ``complete`` (the run's
    fingerprint) the run is marked imported after them."""

    source: str
    run_id: str
    points: PackedPoints | None = None
    complete: str | None = None


class ImportedModelVersion(msgspec.Struct, frozen=True, kw_only=True):
    version: int
    source: str
    run_id: str | None = None
    run_link: str | None = None
    description: str | None = None
    current_stage: str = "None"
    creation_timestamp: int
    last_updated_timestamp: int
    tags: list[KeyValue] = []


class ImportRegisteredModel(Command, frozen=True, kw_only=True):
    """A registered model with its versions (numbers kept), stages, aliases, tags and
    descriptions, as one append to the model's stream."""

    source: str
    name: str
    description: str | None = None
    creation_timestamp: int
    last_updated_timestamp: int
    tags: list[KeyValue] = []
    versions: list[ImportedModelVersion] = []
    aliases: list[KeyValue] = []  # alias -> version number (as text)
    fingerprint: str


__all__ = [
    "FinishExperimentImport",
    "ImportExperiment",
    "ImportRegisteredModel",
    "ImportRunPoints",
    "ImportRuns",
    "ImportedExperiment",
    "ImportedModelVersion",
    "ImportedRun",
]

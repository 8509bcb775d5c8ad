"""Events of MLflow 3 logged models: what ``log_model`` creates before any registration.

Stream: ``logged_model-<model_id>``. A logged model belongs to an experiment but lives in its
own stream, so finalizing or tagging one model never contends with the experiment's or its
source run's writers. Metric points logged "for" a model are not events of this stream: they
travel with the run's ``RunDataLogged`` event (its ``MetricColumns.model_ids`` column), as the
client logs them against the run.

Timestamps (creation, last update) are the log's ``recorded_at``, like experiments: the event
says what happened, the log says when.
"""

from __future__ import annotations

from evtrack.events._base import Event
from evtrack.events._constraints import Int64, Text
from evtrack.events.tracking import KeyValue

LOGGED_MODEL_PENDING = "LOGGED_MODEL_PENDING"
LOGGED_MODEL_READY = "LOGGED_MODEL_READY"
LOGGED_MODEL_UPLOAD_FAILED = "LOGGED_MODEL_UPLOAD_FAILED"


class LoggedModelCreated(Event, frozen=True):
    """A model was created in PENDING status, with the params and tags the client sent.

    ``model_type`` and ``source_run_id`` are None when the client sent none. The source run
    is recorded as given: MLflow does not require it to exist.
    """

    model_id: Text
    experiment_id: Int64
    name: Text
    artifact_location: Text
    model_type: Text | None = None
    source_run_id: Text | None = None
    params: list[KeyValue] = []
    tags: list[KeyValue] = []


class LoggedModelFinalized(Event, frozen=True):
    """The upload ended: ``status`` is LOGGED_MODEL_READY or LOGGED_MODEL_UPLOAD_FAILED."""

    model_id: Text
    status: Text
    status_message: Text | None = None


class LoggedModelTagsSet(Event, frozen=True):
    """Tags upserted in one request (later keys in the list win over earlier ones)."""

    model_id: Text
    tags: list[KeyValue]


class LoggedModelTagDeleted(Event, frozen=True):
    model_id: Text
    key: Text


class LoggedModelParamsLogged(Event, frozen=True):
    """Params beyond the first 100, which the client sends after creation in batches."""

    model_id: Text
    params: list[KeyValue]


class LoggedModelDeleted(Event, frozen=True):
    """Soft delete: the model disappears from get and search, its history stays."""

    model_id: Text

"""Events of the tracking domain: experiments and runs.

Streams: ``experiment-<id>`` and ``run-<id>``. Metric points travel in columnar form, one
event per logging request, never one event per point.
"""

from __future__ import annotations

import msgspec
import numpy as np

from evtrack.events._base import Event
from evtrack.events._constraints import (
    ColumnKey,
    ConstraintViolation,
    Int64,
    Millis,
    Text,
    check_clamped,
    check_text_column,
)


class KeyValue(msgspec.Struct, frozen=True, array_like=True):
    key: Text
    value: Text


class MetricColumns(msgspec.Struct, frozen=True, omit_defaults=True):
    """Metric points of one request, one list per field, all of equal length.

    NaN values are kept; infinities were clamped to +-1.7976931348623157e308 when logged.
    The optional columns are present only when at least one point carries the field.
    """

    keys: list[ColumnKey]
    values: list[float]
    timestamps: list[Millis]
    steps: list[Int64]
    model_ids: list[Text | None] | None = None
    dataset_names: list[Text | None] | None = None
    dataset_digests: list[Text | None] | None = None

    def __post_init__(self) -> None:
        n = len(self.keys)
        lengths = [len(self.values), len(self.timestamps), len(self.steps)]
        for column in (self.model_ids, self.dataset_names, self.dataset_digests):
            if column is not None:
                lengths.append(len(column))
        if any(length != n for length in lengths):
            raise ConstraintViolation("metric columns must have equal lengths")
        check_text_column(self.keys, "metrics.keys")
        check_clamped(self.values, "metrics.values")

    def __len__(self) -> int:
        return len(self.keys)


class PackedMetrics(msgspec.Struct, frozen=True):
    """Metric points of one ingest request as packed little-endian arrays, one per field.

    The bulk form of :class:`MetricColumns`: a million points are four byte strings, so
    neither the ingest route nor the projectors make a Python object per point. ``names`` are
    the metric keys; ``key_index`` holds one ``uint32`` index into ``names`` per point;
    ``values`` are ``float64`` (NaN kept, infinities clamped as for MetricColumns),
    ``timestamps`` (ms) and ``steps`` are ``int64``.
    """

    names: list[ColumnKey]
    key_index: bytes
    values: bytes
    timestamps: bytes
    steps: bytes

    def __post_init__(self) -> None:
        n, odd = divmod(len(self.values), 8)
        sizes = (len(self.key_index), len(self.timestamps), len(self.steps))
        if odd or sizes != (4 * n, 8 * n, 8 * n):
            raise ConstraintViolation("packed metric arrays must hold the same number of points")
        check_text_column(self.names, "packed.names")
        if not n:
            return
        if int(np.frombuffer(self.key_index, dtype="<u4").max()) >= len(self.names):
            raise ConstraintViolation("packed metric key_index refers past the end of names")
        if bool(np.isinf(np.frombuffer(self.values, dtype="<f8")).any()):
            raise ConstraintViolation("packed metric values: infinities must be clamped")
        if int(np.frombuffer(self.timestamps, dtype="<i8").min()) < 0:
            raise ConstraintViolation("packed metric timestamps must be non-negative")

    def __len__(self) -> int:
        return len(self.values) // 8


class ExperimentCreated(Event, frozen=True):
    experiment_id: Int64
    name: Text
    artifact_location: Text
    tags: list[KeyValue] = []


class ExperimentRenamed(Event, frozen=True):
    experiment_id: Int64
    name: Text


class ExperimentDeleted(Event, frozen=True):
    experiment_id: Int64


class ExperimentRestored(Event, frozen=True):
    experiment_id: Int64


class ExperimentTagSet(Event, frozen=True):
    experiment_id: Int64
    key: Text
    value: Text


class ExperimentTagDeleted(Event, frozen=True):
    experiment_id: Int64
    key: Text


class RunCreated(Event, frozen=True):
    run_id: Text
    experiment_id: Int64
    user_id: Text
    run_name: Text
    start_time: Int64 | None
    artifact_uri: Text
    tags: list[KeyValue] = []


class RunUpdated(Event, frozen=True):
    """Status, end time and/or name changed; absent fields are unchanged."""

    run_id: Text
    status: Text | None = None
    end_time: Int64 | None = None
    run_name: Text | None = None


class RunDeleted(Event, frozen=True):
    """The run was soft-deleted.

    ``experiment_generation`` records how many times the run's experiment had been deleted
    or restored when this happened: an experiment delete/restore after it overrides the
    run's own lifecycle, as in MLflow, where deleting an experiment marks all its runs.
    """

    run_id: Text
    experiment_generation: Int64


class RunRestored(Event, frozen=True):
    run_id: Text
    experiment_generation: Int64


class RunDataLogged(Event, frozen=True):
    """One logging request against a run: metrics, params and tags, all or some of them."""

    run_id: Text
    metrics: MetricColumns | None = None
    params: list[KeyValue] = []
    tags: list[KeyValue] = []
    packed_metrics: PackedMetrics | None = None  # ingest's bulk form; see PackedMetrics


class RunTagDeleted(Event, frozen=True):
    run_id: Text
    key: Text


class DatasetInput(msgspec.Struct, frozen=True, omit_defaults=True):
    name: Text
    digest: Text
    source_type: Text
    source: Text
    schema: Text | None = None
    profile: Text | None = None
    tags: list[KeyValue] = []


class ModelOutput(msgspec.Struct, frozen=True):
    model_id: Text
    step: Int64


class RunInputsLogged(Event, frozen=True):
    run_id: Text
    datasets: list[DatasetInput] = []
    model_ids: list[Text] = []


class RunOutputsLogged(Event, frozen=True):
    run_id: Text
    models: list[ModelOutput] = []


class ExperimentImported(Event, frozen=True):
    """The experiment was copied from another server (``source``), which it now matches.

    Appended last, after the experiment's runs and lifecycle, it sets the times the source
    shows: an import cannot replay the source's history at its own pace, so the read models
    take creation and last-update times from here. ``fingerprint`` names the source state
    it matches, so importing the same state again appends nothing.
    """

    experiment_id: Int64
    source: Text
    fingerprint: Text
    creation_time: Millis
    last_update_time: Millis


class RunImported(Event, frozen=True):
    """Every fact of the run (info, params, tags, each metric point, artifacts) was copied
    from ``source`` in the state ``fingerprint`` names: an interrupted import resumes after
    the runs that have it, and a repeated import skips them."""

    run_id: Text
    source: Text
    fingerprint: Text

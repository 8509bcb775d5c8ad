"""Events of the tracking domain: experiments and runs.

Streams: ``experiment-<id>`` and ``run-<id>``. Metric points travel in columnar form, one
event per logging request, never one event per point.
"""

from __future__ import annotations

import msgspec

from evtrack.events._base import Event


class KeyValue(msgspec.Struct, frozen=True, array_like=True):
    key: str
    value: str


class MetricColumns(msgspec.Struct, frozen=True, omit_defaults=True):
    """Metric points of one request, one list per field, all of equal length.

    NaN values are kept; infinities were clamped to +-1.7976931348623157e308 when logged.
    The optional columns are present only when at least one point carries the field.
    """

    keys: list[str]
    values: list[float]
    timestamps: list[int]
    steps: list[int]
    model_ids: list[str | None] | None = None
    dataset_names: list[str | None] | None = None
    dataset_digests: list[str | None] | None = None

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

    names: list[str]
    key_index: bytes
    values: bytes
    timestamps: bytes
    steps: bytes

    def __len__(self) -> int:
        return len(self.values) // 8


class ExperimentCreated(Event, frozen=True):
    experiment_id: int
    name: str
    artifact_location: str
    tags: list[KeyValue] = []


class ExperimentRenamed(Event, frozen=True):
    experiment_id: int
    name: str


class ExperimentDeleted(Event, frozen=True):
    experiment_id: int


class ExperimentRestored(Event, frozen=True):
    experiment_id: int


class ExperimentTagSet(Event, frozen=True):
    experiment_id: int
    key: str
    value: str


class ExperimentTagDeleted(Event, frozen=True):
    experiment_id: int
    key: str


class RunCreated(Event, frozen=True):
    run_id: str
    experiment_id: int
    user_id: str
    run_name: str
    start_time: int | None
    artifact_uri: str
    tags: list[KeyValue] = []


class RunUpdated(Event, frozen=True):
    """Status, end time and/or name changed; absent fields are unchanged."""

    run_id: str
    status: str | None = None
    end_time: int | None = None
    run_name: str | None = None


class RunDeleted(Event, frozen=True):
    """The run was soft-deleted.

    ``experiment_generation`` records how many times the run's experiment had been deleted
    or restored when this happened: an experiment delete/restore after it overrides the
    run's own lifecycle, as in MLflow, where deleting an experiment marks all its runs.
    """

    run_id: str
    experiment_generation: int


class RunRestored(Event, frozen=True):
    run_id: str
    experiment_generation: int


class RunDataLogged(Event, frozen=True):
    """One logging request against a run: metrics, params and tags, all or some of them."""

    run_id: str
    metrics: MetricColumns | None = None
    params: list[KeyValue] = []
    tags: list[KeyValue] = []
    packed_metrics: PackedMetrics | None = None  # ingest's bulk form; see PackedMetrics


class RunTagDeleted(Event, frozen=True):
    run_id: str
    key: str


class DatasetInput(msgspec.Struct, frozen=True, omit_defaults=True):
    name: str
    digest: str
    source_type: str
    source: str
    schema: str | None = None
    profile: str | None = None
    tags: list[KeyValue] = []


class ModelOutput(msgspec.Struct, frozen=True):
    model_id: str
    step: int


class RunInputsLogged(Event, frozen=True):
    run_id: str
    datasets: list[DatasetInput] = []
    model_ids: list[str] = []


class RunOutputsLogged(Event, frozen=True):
    run_id: str
    models: list[ModelOutput] = []

"""Native ingestion: many runs' points, params, tags, starts and ends in one command.

The whole request is checked before anything is written (:func:`plan_ingest`): points with
numpy (key indexes, non-negative timestamps, infinities clamped), keys once per request,
params and tags with the same rules as the MLflow routes. Each run's points from every record
become one :class:`PackedMetrics`, so the event written for a run holds four byte strings
however many points it carries.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from evtrack.domain import _aggregates as agg
from evtrack.domain import tracking
from evtrack.domain._metric_rules import KeyChecker, check_arrays
from evtrack.domain._validation import (
    MAX_PARAM_VAL_LENGTH,
    MAX_TAG_VAL_LENGTH,
    check_length,
    parse_experiment_id,
    validate_entity_name,
    validate_run_id,
)
from evtrack.domain.commands import EndRun, IngestRecord, IngestSummary, PackedPoints, StartRun
from evtrack.errors import ErrorCode, EvtrackError, invalid, not_found
from evtrack.eventlog import UnitOfWork
from evtrack.events import Event, KeyValue, PackedMetrics
from evtrack.events.arrays import F64, I64, U32, pack

MAX_POINTS_PER_REQUEST = 1_000_000
MAX_RUNS_PER_REQUEST = 1000


@dataclass(frozen=True, slots=True)
class _Points:
    names: list[str]
    key_index: U32
    values: F64
    timestamps: I64
    steps: I64

    def __len__(self) -> int:
        return len(self.values)


def _checked(p: PackedPoints, where: str) -> _Points:
    if len(p.values) % 8:
        raise invalid(f"{where}.values must be a whole number of float64 (8 bytes each).")
    n = len(p.values) // 8
    if len(p.timestamps) != 8 * n or len(p.steps) != 8 * n or len(p.key_index) != 4 * n:
        raise invalid(
            f"{where}: key_index (uint32), values (float64), timestamps and steps (int64) "
            "must hold the same number of points."
        )
    key_index = np.frombuffer(p.key_index, dtype="<u4").astype(np.uint32)
    if n and int(key_index.max()) >= len(p.names):
        raise invalid(f"{where}.key_index refers past the end of names.")
    timestamps = np.frombuffer(p.timestamps, dtype="<i8").astype(np.int64)
    values = check_arrays(
        np.frombuffer(p.values, dtype="<f8").astype(np.float64), timestamps, where
    )
    steps = np.frombuffer(p.steps, dtype="<i8").astype(np.int64)
    return _Points(list(p.names), key_index, values, timestamps, steps)


@dataclass
class _RunPoints:
    """Every point of one run in one request, from however many records."""

    names: list[str] = field(default_factory=list)
    _position: dict[str, int] = field(default_factory=dict)
    _parts: list[_Points] = field(default_factory=list)

    def add(self, points: _Points) -> None:
        if not len(points):
            return
        remap = np.fromiter(
            (self._position.setdefault(name, len(self._position)) for name in points.names),
            dtype=np.uint32,
            count=len(points.names),
        )
        self.names = list(self._position)
        self._parts.append(
            _Points(
                self.names, remap[points.key_index], points.values, points.timestamps, points.steps
            )
        )

    @property
    def count(self) -> int:
        return sum(len(p) for p in self._parts)

    def packed(self) -> PackedMetrics | None:
        """One packed column set; names no point uses are dropped."""
        if not self._parts:
            return None
        key_index = np.concatenate([p.key_index for p in self._parts])
        names = self.names
        in_use = np.bincount(key_index, minlength=len(names)) > 0
        if not in_use.all():
            new_position = (np.cumsum(in_use) - 1).astype(np.uint32)
            key_index = new_position[key_index]
            names = [name for name, used in zip(names, in_use.tolist(), strict=True) if used]
        return pack(
            names,
            key_index,
            np.concatenate([p.values for p in self._parts]),
            np.concatenate([p.timestamps for p in self._parts]),
            np.concatenate([p.steps for p in self._parts]),
        )


@dataclass(frozen=True)
class RunBatch:
    """One run's checked data in an ingest request."""

    params: list[KeyValue]
    tags: list[KeyValue]
    packed_metrics: PackedMetrics | None


@dataclass
class IngestPlan:
    """What one request will do: runs to create, data to log, runs to end; all checked."""

    starts: dict[str, tuple[int | None, StartRun]]
    data: dict[str, RunBatch]
    ends: dict[str, EndRun]
    summary: IngestSummary


def plan_ingest(records: Sequence[IngestRecord]) -> IngestPlan:
    data, summary = _checked_data(records)
    starts: dict[str, tuple[int | None, StartRun]] = {}
    ends: dict[str, EndRun] = {}
    for index, record in enumerate(records):
        if record.start is not None:
            start = record.start
            if not (start.experiment_id or start.experiment_name):
                raise invalid(f"records[{index}].start needs an experiment_id or experiment_name.")
            experiment_id = (
                parse_experiment_id(start.experiment_id)
                if start.experiment_id is not None
                else None
            )
            starts.setdefault(record.run_id, (experiment_id, start))
        if record.end is not None:
            if record.end.status not in tracking.RUN_STATUSES:
                raise invalid(
                    f"records[{index}].end.status must be one of {list(tracking.RUN_STATUSES)}."
                )
            ends[record.run_id] = record.end
    runs = len(set(data) | set(starts) | set(ends))
    summary = IngestSummary(runs, summary.points, summary.params, summary.tags)
    return IngestPlan(starts, data, ends, summary)


def _checked_data(records: Sequence[IngestRecord]) -> tuple[dict[str, RunBatch], IngestSummary]:
    """Group records by run and check every value, before anything is written."""
    keys = KeyChecker()
    points_by_run: dict[str, _RunPoints] = defaultdict(_RunPoints)
    params: dict[str, dict[str, str]] = defaultdict(dict)
    tags: dict[str, dict[str, str]] = defaultdict(dict)
    points = n_params = n_tags = 0
    for index, record in enumerate(records):
        where = f"records[{index}]"
        validate_run_id(record.run_id, f"{where}.run_id")
        for part in record.points:
            checked = _checked(part, f"{where}.{part.field}")
            keys_field = "keys" if part.field == "metrics" else "names"
            keys.check(checked.names, f"{where}.{part.field}.{keys_field}")
            points_by_run[record.run_id].add(checked)
            points += len(checked)
            if points > MAX_POINTS_PER_REQUEST:
                raise invalid(
                    f"An ingest request can carry at most {MAX_POINTS_PER_REQUEST} metric "
                    f"points; got more."
                )
        for p in record.params:
            validate_entity_name(p.key, f"{where}.params.key", kind="param")
            value = check_length("Param value", MAX_PARAM_VAL_LENGTH, p.value, truncate=True)
            if params[record.run_id].setdefault(p.key, value) != value:
                raise invalid(
                    f"Duplicate parameter key {p.key!r} with different values "
                    f"for run {record.run_id}."
                )
            n_params += 1
        for t in record.tags:
            validate_entity_name(t.key, f"{where}.tags.key", kind="tag")
            tags[record.run_id][t.key] = check_length(
                "Tag value", MAX_TAG_VAL_LENGTH, t.value, truncate=True
            )
            n_tags += 1
    runs = {r for r, p in points_by_run.items() if p.count} | set(params) | set(tags)
    if len(runs) > MAX_RUNS_PER_REQUEST:
        raise invalid(
            f"An ingest request can address at most {MAX_RUNS_PER_REQUEST} runs; got {len(runs)}."
        )
    grouped = {
        run_id: RunBatch(
            [KeyValue(k, v) for k, v in params.get(run_id, {}).items()],
            [KeyValue(k, v) for k, v in tags.get(run_id, {}).items()],
            points_by_run[run_id].packed() if run_id in points_by_run else None,
        )
        for run_id in sorted(runs)
    }
    return grouped, IngestSummary(len(runs), points, n_params, n_tags)


def _not_authorized(run_id: str) -> EvtrackError:
    # The authorization was made on read models that had not caught up: retry after they do.
    return EvtrackError(
        ErrorCode.TEMPORARILY_UNAVAILABLE,
        f"Run {run_id} is not in the experiment this request was authorized for, or is not "
        "visible to authorization yet; retry shortly.",
        headers={"Retry-After": "1"},
    )


async def apply_ingest(
    uow: UnitOfWork,
    plan: IngestPlan,
    *,
    artifact_root: str,
    authorized: Mapping[str, int | None] | None = None,
) -> None:
    """Decide the whole request against the heads of the streams it touches, read at once.

    Every run's head is read (and held) in one statement and every experiment's in another;
    each run then gets its events (created, data logged, ended) decided in memory and
    appended with the version read, so a request that starts a thousand runs costs a few
    round trips, not a few per run.
    """
    run_ids = sorted(set(plan.starts) | set(plan.data) | set(plan.ends))
    heads = await uow.heads([agg.run_stream(r) for r in run_ids], lock=True)
    runs: dict[str, agg.RunState] = {}
    for run_id in run_ids:
        state = heads[agg.run_stream(run_id)].state
        if state is not None:
            runs[run_id] = agg.decode_run(state)
        elif run_id not in plan.starts:
            raise not_found(f"Run with id={run_id} not found")
    by_name: dict[str, int] = {}
    created_by_name: set[int] = set()
    wanted: dict[str, int] = {}
    for run_id, (experiment_id, start) in plan.starts.items():
        if run_id in runs:
            continue
        if experiment_id is None:
            assert start.experiment_name is not None
            name = start.experiment_name
            if name not in by_name:
                existed = await uow.name_owner(tracking.EXPERIMENT_NAMES, name) is not None
                by_name[name] = await tracking.experiment_id_for_name(
                    uow, name, artifact_root=artifact_root
                )
                if not existed:
                    created_by_name.add(by_name[name])
            experiment_id = by_name[name]
        wanted[run_id] = experiment_id
    if authorized is not None:
        for run_id in run_ids:
            actual = runs[run_id].experiment_id if run_id in runs else wanted[run_id]
            if run_id not in authorized:
                raise _not_authorized(run_id)
            expected = authorized[run_id]
            if expected is None and actual not in created_by_name:
                raise _not_authorized(run_id)
            if expected is not None and expected != actual:
                raise _not_authorized(run_id)
    experiment_ids = sorted({*wanted.values(), *(r.experiment_id for r in runs.values())})
    experiment_heads = await uow.heads([agg.experiment_stream(e) for e in experiment_ids])
    experiments: dict[int, agg.ExperimentState] = {}
    for experiment_id in experiment_ids:
        state = experiment_heads[agg.experiment_stream(experiment_id)].state
        if state is None:
            raise not_found(f"No Experiment with id={experiment_id} exists")
        experiments[experiment_id] = agg.decode_experiment(state)
    for run_id in run_ids:
        head = heads[agg.run_stream(run_id)]
        events: list[Event] = []
        if run_id in wanted:
            _, start = plan.starts[run_id]
            created, run = tracking.new_run(
                experiments[wanted[run_id]],
                run_id,
                start.user_id or "",
                start.run_name,
                start.start_time,
                [(t.key, t.value) for t in start.tags],
            )
            events.append(created)
        else:
            run = runs[run_id]
        loaded = tracking.LoadedRun(run, head.version, experiments[run.experiment_id])
        if (batch := plan.data.get(run_id)) is not None:
            data = tracking.RunData(None, batch.params, batch.tags, batch.packed_metrics)
            decided = tracking.decide_run_data(loaded, data)
            if decided is not None:
                events.append(decided[0])
                run.apply(decided[0])
        if (end := plan.ends.get(run_id)) is not None:
            updated = tracking.decide_update(loaded, end.status, end.end_time, None)
            events.append(updated)
            run.apply(updated)
        uow.append(
            agg.run_stream(run_id),
            events,
            expected_version=head.version,
            state=agg.encode_state(run),
        )

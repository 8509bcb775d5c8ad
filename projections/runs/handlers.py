"""Runs read model: run info, params, tags, latest metric values and inputs/outputs.

This is what runs/get renders and runs/search filters and orders on. Experiment deletes and
restores cascade to the experiment's runs here, as MLflow marks every run of the experiment.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

import msgspec
import numpy as np

from evtrack.events import (
    Event,
    ExperimentDeleted,
    ExperimentRestored,
    RunCreated,
    RunDataLogged,
    RunDeleted,
    RunInputsLogged,
    RunOutputsLogged,
    RunRestored,
    RunTagDeleted,
    RunUpdated,
)
from evtrack.events.arrays import MetricArrays, lexicographic_extreme, metric_arrays
from evtrack.projector import Conn, Projection, RecordedEvent, load_schema

RUN_NAME_TAG = "mlflow.runName"
DATASET_CONTEXT_TAG = "mlflow.data.context"

projection = Projection("runs", load_schema("evtrack.projections.runs"))


@projection.on_batch(RunCreated)
async def _created(conn: Conn, records: Sequence[RecordedEvent]) -> None:
    """Runs created by one ingest request arrive together: one statement for all of them."""
    runs = [_event(rec, RunCreated) for rec in records]
    await conn.execute(
        """INSERT INTO runs (run_id, experiment_id, run_name, user_id, status, start_time,
                             artifact_uri, lifecycle_stage)
           SELECT r, x, n, u, 'RUNNING', s, a, 'active'
           FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::bigint[],
                       $6::text[]) AS t(r, x, n, u, s, a)""",
        *_columns(
            [
                (e.run_id, e.experiment_id, e.run_name, e.user_id, e.start_time, e.artifact_uri)
                for e in runs
            ],
            6,
        ),
    )
    tags = {(e.run_id, t.key): t.value for e in runs for t in e.tags}
    # The names were just inserted with the runs: no rename pass (see _upsert_tags).
    await _insert_tags(conn, [(run, key, value) for (run, key), value in tags.items()])


@projection.on_batch(RunUpdated)
async def _updated(conn: Conn, records: Sequence[RecordedEvent]) -> None:
    """Consecutive updates folded per run (a later field wins), then one statement."""
    folded: dict[str, list[object]] = {}
    for rec in records:
        e = _event(rec, RunUpdated)
        fields = folded.setdefault(e.run_id, [None, None, None])
        for i, value in enumerate((e.status, e.end_time, e.run_name or None)):
            if value is not None:
                fields[i] = value
    await conn.execute(
        """UPDATE runs AS r
           SET status = COALESCE(t.s, r.status), end_time = COALESCE(t.e, r.end_time),
               run_name = COALESCE(t.n, r.run_name)
           FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[]) AS t(id, s, e, n)
           WHERE r.run_id = t.id""",
        *_columns([(run, *fields) for run, fields in folded.items()], 4),
    )
    renamed = [(run, RUN_NAME_TAG, str(f[2])) for run, f in folded.items() if f[2] is not None]
    await _upsert_tags(conn, renamed)


@projection.on(RunDeleted)
async def _deleted(conn: Conn, e: RunDeleted, rec: RecordedEvent) -> None:
    await conn.execute(
        "UPDATE runs SET lifecycle_stage = 'deleted', deleted_time = $2 WHERE run_id = $1",
        e.run_id,
        rec.recorded_at_ms,
    )


@projection.on(RunRestored)
async def _restored(conn: Conn, e: RunRestored, rec: RecordedEvent) -> None:
    await conn.execute(
        "UPDATE runs SET lifecycle_stage = 'active', deleted_time = NULL WHERE run_id = $1",
        e.run_id,
    )


@projection.on(ExperimentDeleted)
async def _experiment_deleted(conn: Conn, e: ExperimentDeleted, rec: RecordedEvent) -> None:
    await conn.execute(
        """UPDATE runs SET lifecycle_stage = 'deleted', deleted_time = $2
           WHERE experiment_id = $1""",
        e.experiment_id,
        rec.recorded_at_ms,
    )


@projection.on(ExperimentRestored)
async def _experiment_restored(conn: Conn, e: ExperimentRestored, rec: RecordedEvent) -> None:
    await conn.execute(
        """UPDATE runs SET lifecycle_stage = 'active', deleted_time = NULL
           WHERE experiment_id = $1""",
        e.experiment_id,
    )


@projection.on_batch(RunDataLogged)
async def _data_logged(conn: Conn, records: Sequence[RecordedEvent]) -> None:
    params: list[tuple[str, str, str]] = []
    tags: dict[tuple[str, str], str] = {}
    latest: dict[tuple[str, str], tuple[int, int, float, bool]] = {}
    for rec in records:
        e = rec.event
        assert isinstance(e, RunDataLogged)
        params.extend((e.run_id, p.key, p.value) for p in e.params)
        for t in e.tags:
            tags[(e.run_id, t.key)] = t.value
        arrays = metric_arrays(e)
        if arrays is None:
            continue
        for key, point in _latest_per_key(arrays).items():
            current = latest.get((e.run_id, key))
            if current is None or point[:3] > current[:3]:
                latest[(e.run_id, key)] = point
    if params:
        await conn.execute(
            """INSERT INTO params (run_id, key, value)
               SELECT * FROM unnest($1::text[], $2::text[], $3::text[])
               ON CONFLICT (run_id, key) DO NOTHING""",
            *_columns(params, 3),
        )
    if tags:
        await _upsert_tags(conn, [(run, key, value) for (run, key), value in tags.items()])
    if latest:
        rows = [(run, key, *point) for (run, key), point in latest.items()]
        await conn.execute(
            """INSERT INTO latest_metrics AS lm (run_id, key, step, timestamp, value, is_nan)
               SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[],
                                    $5::float8[], $6::bool[])
               ON CONFLICT (run_id, key) DO UPDATE
               SET step = excluded.step, timestamp = excluded.timestamp,
                   value = excluded.value, is_nan = excluded.is_nan
               WHERE (excluded.step, excluded.timestamp, excluded.value)
                     > (lm.step, lm.timestamp, lm.value)""",
            *_columns(rows, 6),
        )


def _latest_per_key(arrays: MetricArrays) -> dict[str, tuple[int, int, float, bool]]:
    """The greatest (step, timestamp, value) point of each key; NaN counts as 0, as stored.

    Each key's maximum is found with a few vectorised comparisons over its points, so a
    million-point batch costs no Python step per point.
    """
    out: dict[str, tuple[int, int, float, bool]] = {}
    for part in arrays.by_key():
        nans = np.isnan(part.values)
        stored = np.where(nans, 0.0, part.values)
        i = lexicographic_extreme((part.steps, part.timestamps, stored, nans), largest=True)
        out[part.key] = (
            int(part.steps[i]),
            int(part.timestamps[i]),
            float(stored[i]),
            bool(nans[i]),
        )
    return out


async def _upsert_tags(conn: Conn, rows: list[tuple[str, str, str]]) -> None:
    """Set tags; a ``mlflow.runName`` tag renames its run, as in MLflow."""
    if not rows:
        return
    await _insert_tags(conn, rows)
    renames = [(run, value) for run, key, value in rows if key == RUN_NAME_TAG]
    if renames:
        await conn.executemany("UPDATE runs SET run_name = $2 WHERE run_id = $1", renames)


@projection.on(RunTagDeleted)
async def _tag_deleted(conn: Conn, e: RunTagDeleted, rec: RecordedEvent) -> None:
    await conn.execute("DELETE FROM tags WHERE run_id = $1 AND key = $2", e.run_id, e.key)


@projection.on(RunInputsLogged)
async def _inputs(conn: Conn, e: RunInputsLogged, rec: RecordedEvent) -> None:
    for d in e.datasets:
        context = next((t.value for t in d.tags if t.key == DATASET_CONTEXT_TAG), None)
        await conn.execute(
            """INSERT INTO dataset_inputs (run_id, name, digest, source_type, source, schema,
                                           profile, context, tags)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9::jsonb)
               ON CONFLICT (run_id, name, digest) DO UPDATE
               SET tags = excluded.tags, context = excluded.context""",
            e.run_id,
            d.name,
            d.digest,
            d.source_type,
            d.source,
            d.schema,
            d.profile,
            context,
            msgspec.json.encode([{"key": t.key, "value": t.value} for t in d.tags]).decode(),
        )
    if e.model_ids:
        await conn.executemany(
            "INSERT INTO model_inputs VALUES ($1, $2) ON CONFLICT DO NOTHING",
            [(e.run_id, m) for m in e.model_ids],
        )


@projection.on(RunOutputsLogged)
async def _outputs(conn: Conn, e: RunOutputsLogged, rec: RecordedEvent) -> None:
    await conn.executemany(
        """INSERT INTO model_outputs VALUES ($1, $2, $3)
           ON CONFLICT (run_id, model_id) DO UPDATE SET step = excluded.step""",
        [(e.run_id, m.model_id, m.step) for m in e.models],
    )


async def _insert_tags(conn: Conn, rows: list[tuple[str, str, str]]) -> None:
    if rows:
        await conn.execute(
            """INSERT INTO tags (run_id, key, value)
               SELECT * FROM unnest($1::text[], $2::text[], $3::text[])
               ON CONFLICT (run_id, key) DO UPDATE SET value = excluded.value""",
            *_columns(rows, 3),
        )


E = TypeVar("E", bound=Event)


def _event(rec: RecordedEvent, kind: type[E]) -> E:
    event = rec.event
    assert isinstance(event, kind)
    return event


def _columns(rows: Sequence[tuple[object, ...]], width: int) -> list[list[object]]:
    return [[row[i] for row in rows] for i in range(width)]

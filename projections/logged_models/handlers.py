"""Logged models read model: what logged-models/get and logged-models/search read.

Besides the models' own events it takes the metric points of ``RunDataLogged`` events that
carry a ``model_id``: the client logs a model's metrics against the run (``log_model``
re-logs the run's metrics with the new model's id), and the model shows every such point in
its ``data.metrics``, with the run and dataset it was logged for.
"""

from __future__ import annotations

from collections.abc import Sequence

from evtrack.events import (
    LOGGED_MODEL_PENDING,
    KeyValue,
    LoggedModelCreated,
    LoggedModelDeleted,
    LoggedModelFinalized,
    LoggedModelParamsLogged,
    LoggedModelTagDeleted,
    LoggedModelTagsSet,
    RunDataLogged,
)
from evtrack.projector import Conn, Projection, RecordedEvent, load_schema

projection = Projection("logged_models", load_schema("evtrack.projections.logged_models"))


@projection.on(LoggedModelCreated)
async def _created(conn: Conn, e: LoggedModelCreated, rec: RecordedEvent) -> None:
    await conn.execute(
        """INSERT INTO logged_models (model_id, experiment_id, name, artifact_location,
                                      creation_timestamp_ms, last_updated_timestamp_ms,
                                      status, model_type, source_run_id)
           VALUES ($1, $2, $3, $4, $5, $5, $6, $7, $8)""",
        e.model_id,
        e.experiment_id,
        e.name,
        e.artifact_location,
        rec.recorded_at_ms,
        LOGGED_MODEL_PENDING,
        e.model_type,
        e.source_run_id,
    )
    await _upsert(conn, "logged_model_params", e.model_id, e.params, overwrite=False)
    await _upsert(conn, "logged_model_tags", e.model_id, e.tags, overwrite=True)


@projection.on(LoggedModelFinalized)
async def _finalized(conn: Conn, e: LoggedModelFinalized, rec: RecordedEvent) -> None:
    await conn.execute(
        """UPDATE logged_models
           SET status = $2, status_message = $3, last_updated_timestamp_ms = $4
           WHERE model_id = $1""",
        e.model_id,
        e.status,
        e.status_message,
        rec.recorded_at_ms,
    )


@projection.on(LoggedModelTagsSet)
async def _tags_set(conn: Conn, e: LoggedModelTagsSet, rec: RecordedEvent) -> None:
    await _upsert(conn, "logged_model_tags", e.model_id, e.tags, overwrite=True)


@projection.on(LoggedModelTagDeleted)
async def _tag_deleted(conn: Conn, e: LoggedModelTagDeleted, rec: RecordedEvent) -> None:
    await conn.execute(
        "DELETE FROM logged_model_tags WHERE model_id = $1 AND key = $2", e.model_id, e.key
    )


@projection.on(LoggedModelParamsLogged)
async def _params_logged(conn: Conn, e: LoggedModelParamsLogged, rec: RecordedEvent) -> None:
    await _upsert(conn, "logged_model_params", e.model_id, e.params, overwrite=False)


@projection.on(LoggedModelDeleted)
async def _deleted(conn: Conn, e: LoggedModelDeleted, rec: RecordedEvent) -> None:
    await conn.execute(
        """UPDATE logged_models SET deleted = true, last_updated_timestamp_ms = $2
           WHERE model_id = $1""",
        e.model_id,
        rec.recorded_at_ms,
    )


@projection.on_batch(RunDataLogged)
async def _model_metrics(conn: Conn, records: Sequence[RecordedEvent]) -> None:
    """Every point logged with a model id, once (identical points are logged once)."""
    columns: tuple[list[object], ...] = tuple([] for _ in range(9))
    for rec in records:
        e = rec.event
        assert isinstance(e, RunDataLogged)
        m = e.metrics
        if m is None or not m.model_ids:
            continue
        names = m.dataset_names or [None] * len(m)
        digests = m.dataset_digests or [None] * len(m)
        for i, model_id in enumerate(m.model_ids):
            if model_id is None:
                continue
            value = m.values[i]
            is_nan = value != value
            row = (
                model_id,
                m.keys[i],
                0.0 if is_nan else value,
                is_nan,
                m.timestamps[i],
                m.steps[i],
                e.run_id,
                names[i],
                digests[i],
            )
            for column, item in zip(columns, row, strict=True):
                column.append(item)
    if not columns[0]:
        return
    await conn.execute(
        """INSERT INTO logged_model_metrics (model_id, key, value, is_nan, timestamp, step,
                                             run_id, dataset_name, dataset_digest)
           SELECT * FROM unnest($1::text[], $2::text[], $3::float8[], $4::bool[],
                                $5::bigint[], $6::bigint[], $7::text[], $8::text[], $9::text[])
           ON CONFLICT DO NOTHING""",
        *columns,
    )


async def _upsert(
    conn: Conn, table: str, model_id: str, pairs: Sequence[KeyValue], *, overwrite: bool
) -> None:
    """Insert key/value rows; tags overwrite (last value wins), params keep the first."""
    if not pairs:
        return
    conflict = "DO UPDATE SET value = excluded.value" if overwrite else "DO NOTHING"
    await conn.execute(
        f"""INSERT INTO {table} (model_id, key, value)
            SELECT $1, * FROM unnest($2::text[], $3::text[])
            ON CONFLICT (model_id, key) {conflict}""",
        model_id,
        [p.key for p in pairs],
        [p.value for p in pairs],
    )

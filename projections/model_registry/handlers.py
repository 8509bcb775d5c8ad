"""Registry read model: registered models, versions, tags, aliases and promotion requests."""

from __future__ import annotations

from evtrack.events import (
    ModelAliasDeleted,
    ModelAliasSet,
    ModelVersionCreated,
    ModelVersionDeleted,
    ModelVersionDescriptionSet,
    ModelVersionStageChanged,
    ModelVersionTagDeleted,
    ModelVersionTagSet,
    RegisteredModelCreated,
    RegisteredModelDeleted,
    RegisteredModelDescriptionSet,
    RegisteredModelImported,
    RegisteredModelRenamed,
    RegisteredModelTagDeleted,
    RegisteredModelTagSet,
    TransitionApproved,
    TransitionCancelled,
    TransitionRejected,
    TransitionRequested,
)
from evtrack.projector import Conn, Projection, RecordedEvent, load_schema

projection = Projection("registry", load_schema("evtrack.projections.model_registry"))


async def _touch_model(conn: Conn, model_key: str, at: int) -> None:
    await conn.execute(
        "UPDATE registered_models SET last_updated_timestamp = $2 WHERE model_key = $1",
        model_key,
        at,
    )


@projection.on(RegisteredModelCreated)
async def _created(conn: Conn, e: RegisteredModelCreated, rec: RecordedEvent) -> None:
    await conn.execute(
        """INSERT INTO registered_models (model_key, name, creation_timestamp,
                                          last_updated_timestamp, description)
           VALUES ($1, $2, $3, $3, $4)""",
        e.model_key,
        e.name,
        rec.recorded_at_ms,
        e.description,
    )
    await conn.execute(
        "INSERT INTO model_names VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        e.name,
        e.model_key,
        rec.recorded_at_ms,
    )
    if e.tags:
        await conn.executemany(
            "INSERT INTO registered_model_tags VALUES ($1, $2, $3)",
            [(e.model_key, t.key, t.value) for t in e.tags],
        )


@projection.on(RegisteredModelRenamed)
async def _renamed(conn: Conn, e: RegisteredModelRenamed, rec: RecordedEvent) -> None:
    at = rec.recorded_at_ms
    await conn.execute(
        "UPDATE registered_models SET name = $2, last_updated_timestamp = $3 WHERE model_key = $1",
        e.model_key,
        e.name,
        at,
    )
    await conn.execute(
        """UPDATE model_versions SET name = $2, last_updated_timestamp = $3
           WHERE model_key = $1""",
        e.model_key,
        e.name,
        at,
    )
    await conn.execute(
        "INSERT INTO model_names VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        e.name,
        e.model_key,
        at,
    )


@projection.on(RegisteredModelDescriptionSet)
async def _described(conn: Conn, e: RegisteredModelDescriptionSet, rec: RecordedEvent) -> None:
    await conn.execute(
        """UPDATE registered_models SET description = $2, last_updated_timestamp = $3
           WHERE model_key = $1""",
        e.model_key,
        e.description,
        rec.recorded_at_ms,
    )


@projection.on(RegisteredModelTagSet)
async def _tag_set(conn: Conn, e: RegisteredModelTagSet, rec: RecordedEvent) -> None:
    await conn.execute(
        """INSERT INTO registered_model_tags VALUES ($1, $2, $3)
           ON CONFLICT (model_key, key) DO UPDATE SET value = excluded.value""",
        e.model_key,
        e.key,
        e.value,
    )


@projection.on(RegisteredModelTagDeleted)
async def _tag_deleted(conn: Conn, e: RegisteredModelTagDeleted, rec: RecordedEvent) -> None:
    await conn.execute(
        "DELETE FROM registered_model_tags WHERE model_key = $1 AND key = $2", e.model_key, e.key
    )


@projection.on(RegisteredModelDeleted)
async def _deleted(conn: Conn, e: RegisteredModelDeleted, rec: RecordedEvent) -> None:
    # MLflow deletes a registered model with everything in it; the history stays in the log.
    for table in (
        "registered_model_tags",
        "model_version_tags",
        "aliases",
        "model_versions",
        "transition_requests",
        "registered_models",
    ):
        await conn.execute(f"DELETE FROM {table} WHERE model_key = $1", e.model_key)


@projection.on(ModelVersionCreated)
async def _version_created(conn: Conn, e: ModelVersionCreated, rec: RecordedEvent) -> None:
    at = rec.recorded_at_ms
    await conn.execute(
        """INSERT INTO model_versions (model_key, name, version, creation_timestamp,
                                       last_updated_timestamp, description, source,
                                       storage_location, run_id, run_link, model_id)
           SELECT $1, name, $2, $3, $3, $4, $5, $6, $7, $8, $9
           FROM registered_models WHERE model_key = $1""",
        e.model_key,
        e.version,
        at,
        e.description,
        e.source,
        e.storage_location,
        e.run_id,
        e.run_link,
        e.model_id,
    )
    if e.tags:
        await conn.executemany(
            "INSERT INTO model_version_tags VALUES ($1, $2, $3, $4)",
            [(e.model_key, e.version, t.key, t.value) for t in e.tags],
        )
    await _touch_model(conn, e.model_key, at)


@projection.on(ModelVersionStageChanged)
async def _stage_changed(conn: Conn, e: ModelVersionStageChanged, rec: RecordedEvent) -> None:
    at = rec.recorded_at_ms
    await conn.execute(
        """UPDATE model_versions SET current_stage = $3, last_updated_timestamp = $4
           WHERE model_key = $1 AND version = $2""",
        e.model_key,
        e.version,
        e.to_stage,
        at,
    )
    await _touch_model(conn, e.model_key, at)


@projection.on(ModelVersionDescriptionSet)
async def _version_described(conn: Conn, e: ModelVersionDescriptionSet, rec: RecordedEvent) -> None:
    await conn.execute(
        """UPDATE model_versions SET description = $3, last_updated_timestamp = $4
           WHERE model_key = $1 AND version = $2""",
        e.model_key,
        e.version,
        e.description,
        rec.recorded_at_ms,
    )


@projection.on(ModelVersionTagSet)
async def _version_tag_set(conn: Conn, e: ModelVersionTagSet, rec: RecordedEvent) -> None:
    await conn.execute(
        """INSERT INTO model_version_tags VALUES ($1, $2, $3, $4)
           ON CONFLICT (model_key, version, key) DO UPDATE SET value = excluded.value""",
        e.model_key,
        e.version,
        e.key,
        e.value,
    )


@projection.on(ModelVersionTagDeleted)
async def _version_tag_deleted(conn: Conn, e: ModelVersionTagDeleted, rec: RecordedEvent) -> None:
    await conn.execute(
        "DELETE FROM model_version_tags WHERE model_key = $1 AND version = $2 AND key = $3",
        e.model_key,
        e.version,
        e.key,
    )


@projection.on(ModelVersionDeleted)
async def _version_deleted(conn: Conn, e: ModelVersionDeleted, rec: RecordedEvent) -> None:
    at = rec.recorded_at_ms
    await conn.execute(
        """UPDATE model_versions SET deleted = true, last_updated_timestamp = $3
           WHERE model_key = $1 AND version = $2""",
        e.model_key,
        e.version,
        at,
    )
    await conn.execute(
        """UPDATE transition_requests SET status = 'CANCELLED'
           WHERE model_key = $1 AND version = $2 AND status = 'PENDING'""",
        e.model_key,
        e.version,
    )
    await _touch_model(conn, e.model_key, at)


@projection.on(ModelAliasSet)
async def _alias_set(conn: Conn, e: ModelAliasSet, rec: RecordedEvent) -> None:
    await conn.execute(
        """INSERT INTO aliases VALUES ($1, $2, $3)
           ON CONFLICT (model_key, alias) DO UPDATE SET version = excluded.version""",
        e.model_key,
        e.alias,
        e.version,
    )


@projection.on(ModelAliasDeleted)
async def _alias_deleted(conn: Conn, e: ModelAliasDeleted, rec: RecordedEvent) -> None:
    await conn.execute(
        "DELETE FROM aliases WHERE model_key = $1 AND alias = $2", e.model_key, e.alias
    )


@projection.on(TransitionRequested)
async def _requested(conn: Conn, e: TransitionRequested, rec: RecordedEvent) -> None:
    await conn.execute(
        """INSERT INTO transition_requests (request_id, model_key, version, to_stage, status,
                                            requested_by, requested_at, comment,
                                            archive_existing_versions)
           VALUES ($1, $2, $3, $4, 'PENDING', $5, $6, $7, $8)""",
        e.request_id,
        e.model_key,
        e.version,
        e.to_stage,
        rec.actor,
        rec.recorded_at_ms,
        e.comment,
        e.archive_existing_versions,
    )


async def _decide(
    conn: Conn, request_id: str, status: str, rec: RecordedEvent, comment: str | None
) -> None:
    await conn.execute(
        """UPDATE transition_requests
           SET status = $2, decided_by = $3, decided_at = $4, decision_comment = $5
           WHERE request_id = $1""",
        request_id,
        status,
        rec.actor,
        rec.recorded_at_ms,
        comment,
    )


@projection.on(TransitionApproved)
async def _approved(conn: Conn, e: TransitionApproved, rec: RecordedEvent) -> None:
    await _decide(conn, e.request_id, "APPROVED", rec, e.comment)


@projection.on(TransitionRejected)
async def _rejected(conn: Conn, e: TransitionRejected, rec: RecordedEvent) -> None:
    await _decide(conn, e.request_id, "REJECTED", rec, e.comment)


@projection.on(TransitionCancelled)
async def _cancelled(conn: Conn, e: TransitionCancelled, rec: RecordedEvent) -> None:
    await _decide(conn, e.request_id, "CANCELLED", rec, None)


@projection.on(RegisteredModelImported)
async def _imported(conn: Conn, e: RegisteredModelImported, rec: RecordedEvent) -> None:
    """An imported model and its versions show the source's times, not the import's."""
    await conn.execute(
        """UPDATE registered_models SET creation_timestamp = $2, last_updated_timestamp = $3
           WHERE model_key = $1""",
        e.model_key,
        e.creation_timestamp,
        e.last_updated_timestamp,
    )
    if e.versions:
        await conn.execute(
            """UPDATE model_versions AS v
               SET creation_timestamp = t.c, last_updated_timestamp = t.u
               FROM unnest($2::bigint[], $3::bigint[], $4::bigint[]) AS t(n, c, u)
               WHERE v.model_key = $1 AND v.version = t.n""",
            e.model_key,
            [v.version for v in e.versions],
            [v.creation_timestamp for v in e.versions],
            [v.last_updated_timestamp for v in e.versions],
        )


__all__ = ["projection"]

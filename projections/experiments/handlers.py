"""Experiments read model: experiments/get, get-by-name and search."""

from __future__ import annotations

from evtrack.events import (
    ExperimentCreated,
    ExperimentDeleted,
    ExperimentImported,
    ExperimentRenamed,
    ExperimentRestored,
    ExperimentTagDeleted,
    ExperimentTagSet,
)
from evtrack.projector import Conn, Projection, RecordedEvent, load_schema

projection = Projection("experiments", load_schema("evtrack.projections.experiments"))


@projection.on(ExperimentCreated)
async def _created(conn: Conn, e: ExperimentCreated, rec: RecordedEvent) -> None:
    await conn.execute(
        """INSERT INTO experiments (experiment_id, name, artifact_location, lifecycle_stage,
                                    creation_time, last_update_time)
           VALUES ($1, $2, $3, 'active', $4, $4)""",
        e.experiment_id,
        e.name,
        e.artifact_location,
        rec.recorded_at_ms,
    )
    if e.tags:
        await conn.executemany(
            "INSERT INTO experiment_tags VALUES ($1, $2, $3)",
            [(e.experiment_id, t.key, t.value) for t in e.tags],
        )


@projection.on(ExperimentRenamed)
async def _renamed(conn: Conn, e: ExperimentRenamed, rec: RecordedEvent) -> None:
    await conn.execute(
        "UPDATE experiments SET name = $2, last_update_time = $3 WHERE experiment_id = $1",
        e.experiment_id,
        e.name,
        rec.recorded_at_ms,
    )


@projection.on(ExperimentDeleted)
async def _deleted(conn: Conn, e: ExperimentDeleted, rec: RecordedEvent) -> None:
    await _set_lifecycle(conn, e.experiment_id, "deleted", rec.recorded_at_ms)


@projection.on(ExperimentRestored)
async def _restored(conn: Conn, e: ExperimentRestored, rec: RecordedEvent) -> None:
    await _set_lifecycle(conn, e.experiment_id, "active", rec.recorded_at_ms)


async def _set_lifecycle(conn: Conn, experiment_id: int, stage: str, at: int) -> None:
    await conn.execute(
        """UPDATE experiments SET lifecycle_stage = $2, last_update_time = $3
           WHERE experiment_id = $1""",
        experiment_id,
        stage,
        at,
    )


@projection.on(ExperimentTagSet)
async def _tag_set(conn: Conn, e: ExperimentTagSet, rec: RecordedEvent) -> None:
    await conn.execute(
        """INSERT INTO experiment_tags VALUES ($1, $2, $3)
           ON CONFLICT (experiment_id, key) DO UPDATE SET value = excluded.value""",
        e.experiment_id,
        e.key,
        e.value,
    )


@projection.on(ExperimentTagDeleted)
async def _tag_deleted(conn: Conn, e: ExperimentTagDeleted, rec: RecordedEvent) -> None:
    await conn.execute(
        "DELETE FROM experiment_tags WHERE experiment_id = $1 AND key = $2", e.experiment_id, e.key
    )


@projection.on(ExperimentImported)
async def _imported(conn: Conn, e: ExperimentImported, rec: RecordedEvent) -> None:
    """An imported experiment shows the source's times, not those of the import."""
    await conn.execute(
        """UPDATE experiments SET creation_time = $2, last_update_time = $3
           WHERE experiment_id = $1""",
        e.experiment_id,
        e.creation_time,
        e.last_update_time,
    )

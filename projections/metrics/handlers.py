"""Metric history read model: every point of every metric, for get-history and charts."""

from __future__ import annotations

from collections.abc import Sequence

from evtrack.eventlog import Conn, RecordedEvent
from evtrack.events import RunDataLogged
from evtrack.projector import Projection, load_schema

projection = Projection("metrics", load_schema("evtrack.projections.metrics"))


@projection.on_batch(RunDataLogged)
async def _points(conn: Conn, records: Sequence[RecordedEvent]) -> None:
    runs: list[str] = []
    keys: list[str] = []
    steps: list[int] = []
    stamps: list[int] = []
    values: list[float] = []
    nans: list[bool] = []
    model_ids: list[str | None] = []
    dataset_names: list[str | None] = []
    dataset_digests: list[str | None] = []
    for rec in records:
        e = rec.event
        assert isinstance(e, RunDataLogged)
        m = e.metrics
        if m is None:
            continue
        n = len(m.keys)
        runs.extend([e.run_id] * n)
        keys.extend(m.keys)
        steps.extend(m.steps)
        stamps.extend(m.timestamps)
        for v in m.values:
            is_nan = v != v
            nans.append(is_nan)
            values.append(0.0 if is_nan else v)
        model_ids.extend(m.model_ids or [None] * n)
        dataset_names.extend(m.dataset_names or [None] * n)
        dataset_digests.extend(m.dataset_digests or [None] * n)
    if not runs:
        return
    await conn.execute(
        """INSERT INTO points (run_id, key, step, timestamp, value, is_nan, model_id,
                               dataset_name, dataset_digest)
           SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::float8[],
                                $6::bool[], $7::text[], $8::text[], $9::text[])
           ON CONFLICT DO NOTHING""",
        runs,
        keys,
        steps,
        stamps,
        values,
        nans,
        model_ids,
        dataset_names,
        dataset_digests,
    )

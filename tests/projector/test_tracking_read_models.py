"""Invariant 1: the tracking read models are folds of the log, and rebuilds answer the same."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import asyncpg
from _support.recorder import execute

from evtrack.domain import decode_run, fold_run, run_stream, tracking
from evtrack.eventlog import LOG_START, EventStore, read_after
from evtrack.events import (
    ExperimentDeleted,
    ExperimentRestored,
    KeyValue,
    Metadata,
    MetricColumns,
    RunCreated,
    RunDataLogged,
    RunDeleted,
    RunRestored,
    RunTagDeleted,
)
from evtrack.events.arrays import from_columns, metric_arrays, pack
from evtrack.projections.registry import all_projections
from evtrack.projector import Projection, ensure_current, rebuild

from ._helpers import drain_to_head

META = Metadata(actor="tester")


async def _catch_up(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        for projection in all_projections():
            await drain_to_head(conn, projection)


async def _workload(store: EventStore) -> list[str]:
    """Several writers log to shared runs at once, with deletes and restores in between."""
    rng = random.Random(7)
    root = "mlflow-artifacts:"
    await execute(
        store,
        lambda uow: tracking.ensure_default_experiment(uow, artifact_root=root),
        metadata=META,
        result_type=bool,
    )
    exp = await execute(
        store,
        lambda uow: tracking.create_experiment(
            uow, "fold", None, [("team", "ml")], artifact_root=root
        ),
        metadata=META,
        result_type=int,
    )
    run_ids = [
        await execute(
            store,
            lambda uow, i=i: tracking.create_run(uow, exp, "alice", f"run-{i}", 1000 + i, []),
            metadata=META,
            result_type=str,
        )
        for i in range(4)
    ]

    async def writer(w: int) -> None:
        for step in range(25):
            run_id = rng.choice(run_ids)
            n = rng.randint(1, 30)
            metrics = MetricColumns(
                keys=[rng.choice(["loss", "acc", f"w{w}"]) for _ in range(n)],
                values=[rng.choice([rng.random(), float("nan"), 1.0]) for _ in range(n)],
                timestamps=[rng.randint(0, 50) for _ in range(n)],
                steps=[rng.randint(0, 10) for _ in range(n)],
            )
            params = [KeyValue(f"p{w}-{step}", str(step))]
            tags = [KeyValue(rng.choice(["stage", "note"]), f"{w}-{step}")]
            if w % 2:  # half the writers log the bulk (packed) form of the same points
                a = from_columns(metrics)
                packed = pack(a.names, a.key_index, a.values, a.timestamps, a.steps)
                data = tracking.RunData(None, params, tags, packed_metrics=packed)
            else:
                data = tracking.RunData(metrics, params, tags)
            await execute(
                store,
                lambda uow, r=run_id, d=data: tracking.log_run_data(uow, r, d),
                metadata=META,
                result_type=type(None),
            )

    await asyncio.gather(*(writer(w) for w in range(6)))
    await execute(
        store,
        lambda uow: tracking.delete_run_tag(uow, run_ids[0], "stage"),
        metadata=META,
        result_type=type(None),
    )
    await execute(
        store,
        lambda uow: tracking.set_run_lifecycle(uow, run_ids[1], delete=True),
        metadata=META,
        result_type=type(None),
    )
    await execute(
        store,
        lambda uow: tracking.set_experiment_lifecycle(uow, exp, delete=True),
        metadata=META,
        result_type=type(None),
    )
    await execute(
        store,
        lambda uow: tracking.set_experiment_lifecycle(uow, exp, delete=False),
        metadata=META,
        result_type=type(None),
    )
    await execute(
        store,
        lambda uow: tracking.set_run_lifecycle(uow, run_ids[2], delete=True),
        metadata=META,
        result_type=type(None),
    )
    return run_ids


async def _whole_log(pool: asyncpg.Pool) -> list[Any]:
    async with pool.acquire() as conn:
        records, position = [], LOG_START
        while batch := await read_after(conn, position, 1000, None):
            records.extend(batch)
            position = batch[-1].position
        return records


def _fold(records: list[Any]) -> dict[str, Any]:
    """The expected read-model contents, computed straight from the log in log order."""
    params: dict[tuple[str, str], str] = {}
    tags: dict[tuple[str, str], str] = {}
    latest: dict[tuple[str, str], tuple[int, int, float, bool]] = {}
    points: set[tuple[str, str, int, int, float, bool]] = set()
    lifecycle: dict[str, str] = {}
    experiment_of: dict[str, int] = {}
    for rec in records:
        e = rec.event
        if isinstance(e, RunCreated):
            lifecycle[e.run_id] = "active"
            experiment_of[e.run_id] = e.experiment_id
            for t in e.tags:
                tags[(e.run_id, t.key)] = t.value
        elif isinstance(e, RunDataLogged):
            for p in e.params:
                params.setdefault((e.run_id, p.key), p.value)
            for t in e.tags:
                tags[(e.run_id, t.key)] = t.value
            if (m := metric_arrays(e)) is not None:
                keys = [m.names[i] for i in m.key_index.tolist()]
                columns = (m.values.tolist(), m.timestamps.tolist(), m.steps.tolist())
                for k, v, ts, st in zip(keys, *columns, strict=True):
                    nan = v != v
                    point = (st, ts, 0.0 if nan else v, nan)
                    points.add((e.run_id, k, st, ts, 0.0 if nan else v, nan))
                    if (e.run_id, k) not in latest or point[:3] > latest[(e.run_id, k)][:3]:
                        latest[(e.run_id, k)] = point
        elif isinstance(e, RunTagDeleted):
            tags.pop((e.run_id, e.key), None)
        elif isinstance(e, RunDeleted):
            lifecycle[e.run_id] = "deleted"
        elif isinstance(e, RunRestored):
            lifecycle[e.run_id] = "active"
        elif isinstance(e, (ExperimentDeleted, ExperimentRestored)):
            stage = "deleted" if isinstance(e, ExperimentDeleted) else "active"
            for run_id, exp in experiment_of.items():
                if exp == e.experiment_id:
                    lifecycle[run_id] = stage
    return {
        "params": params,
        "tags": tags,
        "latest": latest,
        "points": points,
        "lifecycle": lifecycle,
    }


async def _rows(pool: asyncpg.Pool) -> dict[str, list[tuple[Any, ...]]]:
    tables = {
        "params": "rm_runs.params",
        "tags": "rm_runs.tags",
        "latest": "rm_runs.latest_metrics",
        "runs": "rm_runs.runs",
    }
    return {
        n: [tuple(r.values()) for r in await pool.fetch(f"SELECT * FROM {t}")]
        for n, t in tables.items()
    }


async def _answers(pool: asyncpg.Pool) -> dict[str, list[Any]]:
    """Every row of every tracking read model, in a stable order."""
    tables = {
        "experiments": "rm_experiments.experiments",
        "experiment_tags": "rm_experiments.experiment_tags",
        "runs": "rm_runs.runs",
        "params": "rm_runs.params",
        "tags": "rm_runs.tags",
        "latest": "rm_runs.latest_metrics",
        "chunks": "rm_metrics.chunks",
        # rows counts overview rows, which depend on where projector batches ended
        "series": "(SELECT run_id, key, total, stride, kept, first_ts, first_step, first_val,"
        " last_ts, last_step, last_val FROM rm_metrics.series) AS s",
    }
    out = {}
    for name, table in tables.items():
        rows = await pool.fetch(f"SELECT * FROM {table}")
        # repr() makes NaN equal to NaN, so two identical models compare equal.
        out[name] = sorted(repr(tuple(r.values())) for r in rows)
    points = await pool.fetch(
        """SELECT c.run_id, c.key, u.step, u.ts,
                  CASE WHEN u.v = 'NaN' THEN 0 ELSE u.v END, u.v = 'NaN'
           FROM rm_metrics.chunks c, unnest(c.steps, c.timestamps, c.vals) AS u(step, ts, v)"""
    )
    out["points"] = sorted(tuple(r.values()) for r in points)
    # Overview rows are cut where projector batches ended; their concatenation is what counts.
    overview = await pool.fetch(
        """SELECT o.run_id, o.key,
                  array_agg(u.step ORDER BY o.first_index, u.n),
                  array_agg(u.ts ORDER BY o.first_index, u.n)
           FROM rm_metrics.overview o,
                unnest(o.steps, o.timestamps) WITH ORDINALITY AS u(step, ts, n)
           GROUP BY o.run_id, o.key"""
    )
    out["overview"] = sorted(repr(tuple(r.values())) for r in overview)
    return out


async def test_read_models_equal_a_fold_of_the_log_and_survive_rebuild(
    store: EventStore, pool: asyncpg.Pool
) -> None:
    async with pool.acquire() as conn:
        for projection in all_projections():
            await ensure_current(conn, projection)
    run_ids = await _workload(store)
    await _catch_up(pool)

    expected = _fold(await _whole_log(pool))
    answers = await _answers(pool)
    rows = await _rows(pool)
    assert {(r[0], r[1]): r[2] for r in rows["params"]} == expected["params"]
    assert {(r[0], r[1]): r[2] for r in rows["tags"]} == expected["tags"]
    assert {(r[0], r[1]): (r[4], r[3], r[2], r[5]) for r in rows["latest"]} == expected["latest"]
    assert set(answers["points"]) == expected["points"]
    assert {r[0]: r[8] for r in rows["runs"]} == expected["lifecycle"]
    assert expected["lifecycle"][run_ids[1]] == "active"  # restored with its experiment
    assert expected["lifecycle"][run_ids[2]] == "deleted"

    # The write model's snapshots are folds of their streams too.
    for run_id in run_ids:
        stream = await store.read_stream(run_stream(run_id))
        snapshot = await pool.fetchval(
            "SELECT state FROM streams WHERE stream_id = $1", run_stream(run_id)
        )
        assert decode_run(snapshot) == fold_run(r.event for r in stream)

    async with pool.acquire() as conn:
        for projection in all_projections():
            await rebuild(conn, projection, batch_size=37)
    assert await _answers(pool) == answers


async def test_rebuild_swaps_atomically_and_the_live_projector_continues(
    store: EventStore, pool: asyncpg.Pool
) -> None:
    projections: list[Projection] = all_projections()
    async with pool.acquire() as conn:
        for projection in projections:
            await ensure_current(conn, projection)
    await _workload(store)
    await _catch_up(pool)
    before = await _answers(pool)
    async with pool.acquire() as conn:
        await rebuild(conn, projections[1])
    assert await _answers(pool) == before
    # New events after the swap are applied on top of the rebuilt model.
    run_id = (await _rows(pool))["runs"][0][0]
    await execute(
        store,
        lambda uow: tracking.set_run_lifecycle(uow, run_id, delete=True),
        metadata=META,
        result_type=type(None),
    )
    await _catch_up(pool)
    assert (
        await pool.fetchval("SELECT lifecycle_stage FROM rm_runs.runs WHERE run_id = $1", run_id)
        == "deleted"
    )
    checkpoints = {r[0] for r in await pool.fetch("SELECT name FROM projection_checkpoints")}
    assert checkpoints == {p.name for p in projections}

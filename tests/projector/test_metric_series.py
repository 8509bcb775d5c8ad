"""The metric series read model at the array level: grouping, extremes, COPY and overviews."""

from __future__ import annotations

import math
import random

import asyncpg
import numpy as np
import pytest
from _support.recorder import execute

from evtrack.domain import tracking
from evtrack.eventlog import EventStore
from evtrack.events import KeyValue, Metadata, MetricColumns
from evtrack.events.arrays import from_columns, lexicographic_extreme, pack
from evtrack.projections.metrics.handlers import OVERVIEW_CAP, OVERVIEW_MAX_ROWS
from evtrack.projections.registry import all_projections
from evtrack.projector import binary_copy, ensure_current

from ._helpers import drain_to_head

META = Metadata(actor="tester")


def test_by_key_groups_points_in_logged_order_keys_in_first_appearance_order() -> None:
    columns = MetricColumns(
        keys=["b", "a", "b", "c", "a", "b"],
        values=[0.0, 1.0, 2.0, 3.0, 4.0, 5.0],
        timestamps=[10, 11, 12, 13, 14, 15],
        steps=[0, 1, 2, 3, 4, 5],
        model_ids=["m0", None, "m2", None, "m4", None],
    )
    parts = list(from_columns(columns).by_key())
    assert [p.key for p in parts] == ["b", "a", "c"]
    assert [p.values.tolist() for p in parts] == [[0.0, 2.0, 5.0], [1.0, 4.0], [3.0]]
    assert [p.timestamps.tolist() for p in parts] == [[10, 12, 15], [11, 14], [13]]
    assert [p.model_ids for p in parts] == [["m0", "m2", None], [None, "m4"], [None]]


def test_lexicographic_extreme_orders_by_columns_most_significant_first() -> None:
    rng = random.Random(3)
    for _ in range(200):
        n = rng.randint(1, 40)
        rows = [
            (rng.randint(0, 3), rng.randint(0, 3), rng.choice([0.5, 1.5, 2.5])) for _ in range(n)
        ]
        columns = [np.array([r[i] for r in rows]) for i in range(3)]
        assert rows[lexicographic_extreme(columns, largest=True)] == max(rows)
        assert rows[lexicographic_extreme(columns, largest=False)] == min(rows)


async def test_binary_copy_round_trips_every_column_kind(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        await conn.execute(
            """CREATE TEMP TABLE copied (t text, i4 int, i8 bigint, f8 float8,
                                         a8 bigint[], af float8[], at text[])"""
        )
        rows = binary_copy.BinaryRows(["t", "i4", "i8", "f8", "a8", "af", "at"])
        big = np.array([-(2**63), -1, 0, 2**63 - 1], dtype=np.int64)
        floats = np.array([math.nan, -1.7976931348623157e308, 0.1, -0.0, 5e-324])
        rows.add(
            binary_copy.text("héllo"),
            binary_copy.int4(-7),
            binary_copy.int8(2**40),
            binary_copy.float8(2.5),
            binary_copy.int8_array(big),
            binary_copy.float8_array(floats),
            binary_copy.text_array(["x", None, ""]),
        )
        empty = np.array([], dtype=np.int64)
        rows.add(None, None, None, None, binary_copy.int8_array(empty), None, None)
        await rows.copy_to(conn, "copied")
        got = await conn.fetch("SELECT * FROM copied ORDER BY t NULLS LAST")
    first = got[0]
    assert (first["t"], first["i4"], first["i8"], first["f8"]) == ("héllo", -7, 2**40, 2.5)
    assert first["a8"] == big.tolist()
    assert math.isnan(first["af"][0]) and first["af"][1:] == floats[1:].tolist()
    assert math.copysign(1.0, first["af"][3]) == -1.0
    assert first["at"] == ["x", None, ""]
    assert got[1]["a8"] == [] and got[1]["t"] is None and got[1]["af"] is None


@pytest.mark.parametrize("bulk", [False, True], ids=["lists", "packed"])
async def test_overview_keeps_every_stride_th_point_across_batches(
    store: EventStore, pool: asyncpg.Pool, bulk: bool
) -> None:
    """Whatever the batch sizes, the overview holds exactly the points whose arrival index is
    a multiple of its stride, the stride is the smallest power of two that fits the cap, and
    the series' first and last points are its extremes by (step, timestamp, value)."""
    root = "mlflow-artifacts:"
    await execute(
        store,
        lambda uow: tracking.ensure_default_experiment(uow, artifact_root=root),
        metadata=META,
        result_type=bool,
    )
    run_id = await execute(
        store,
        lambda uow: tracking.create_run(uow, 0, "alice", "overview", 1, []),
        metadata=META,
        result_type=str,
    )
    metrics = next(p for p in all_projections() if p.name == "metrics")
    rng = np.random.default_rng(11)
    arrived: dict[str, list[tuple[int, int, float]]] = {"loss": [], "acc": []}
    async with pool.acquire() as conn:
        await ensure_current(conn, metrics)
        for batch in range(45):
            n = int(rng.integers(1, 3000)) if batch % 3 else int(rng.integers(5000, 9000))
            keys = rng.choice(["loss", "acc"], size=n).tolist()
            steps = rng.integers(0, 50_000, size=n)
            values = np.where(rng.random(n) < 0.01, np.nan, rng.random(n))
            columns = MetricColumns(keys, values.tolist(), (steps + 7).tolist(), steps.tolist())
            for k, v, t, s in zip(
                keys, values.tolist(), (steps + 7).tolist(), steps.tolist(), strict=True
            ):
                arrived[k].append((s, t, v))
            if bulk:
                a = from_columns(columns)
                data = tracking.RunData(
                    None,
                    [],
                    [KeyValue("b", str(batch))],
                    packed_metrics=pack(a.names, a.key_index, a.values, a.timestamps, a.steps),
                )
            else:
                data = tracking.RunData(columns, [], [])
            await execute(
                store,
                lambda uow, d=data: tracking.log_run_data(uow, run_id, d),
                metadata=META,
                result_type=type(None),
            )
            if batch % 4 == 3:  # several events per projector batch, sometimes
                await drain_to_head(conn, metrics, batch_size=int(rng.integers(1, 4)))
        await drain_to_head(conn, metrics)
        for key, points in arrived.items():
            series = await conn.fetchrow(
                "SELECT * FROM rm_metrics.series WHERE run_id = $1 AND key = $2", run_id, key
            )
            stride = 1
            while math.ceil(len(points) / stride) > OVERVIEW_CAP:
                stride *= 2
            assert (series["total"], series["stride"]) == (len(points), stride)
            kept = await conn.fetch(
                """SELECT u.step, u.ts, u.v FROM rm_metrics.overview o,
                          unnest(o.steps, o.timestamps, o.vals) WITH ORDINALITY AS u(step, ts, v, n)
                   WHERE o.run_id = $1 AND o.key = $2 ORDER BY o.first_index, u.n""",
                run_id,
                key,
            )
            assert series["kept"] == len(kept)
            rows = await conn.fetchval(
                "SELECT count(*) FROM rm_metrics.overview WHERE run_id = $1 AND key = $2",
                run_id,
                key,
            )
            assert series["rows"] == rows <= OVERVIEW_MAX_ROWS
            assert [repr(tuple(r)) for r in kept] == [repr(p) for p in points[::stride]]

            def order(p: tuple[int, int, float]) -> tuple[int, int, float]:
                return p[0], p[1], math.inf if math.isnan(p[2]) else p[2]

            first = (series["first_step"], series["first_ts"], series["first_val"])
            last = (series["last_step"], series["last_ts"], series["last_val"])
            assert repr(first) == repr(min(points, key=order))
            assert repr(last) == repr(max(points, key=order))

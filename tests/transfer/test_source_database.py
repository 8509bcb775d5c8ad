"""``--source-database``: metric points read from an MLflow ``metrics`` table, SQLite or
PostgreSQL, come back as the source stores them (NaN from ``is_nan``, clamped infinities)."""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Callable
from pathlib import Path

import asyncpg
import pytest
from _support.aio import run_sync

from evtrack.transfer import open_point_source

DOUBLE_MAX = 1.7976931348623157e308
# (key, value, timestamp, step, is_nan) as MLflow stores them: NaN as 0 with is_nan set.
ROWS = [
    ("loss", 0.5, 10, 0, False),
    ("loss", 0.25, 20, 1, False),
    ("loss", 0.0, 30, 2, True),
    ("loss", DOUBLE_MAX, 40, 3, False),
    ("acc", -DOUBLE_MAX, 5, 7, False),
    ("acc", 1.0, 5, 7, False),
]
_CREATE = """CREATE TABLE metrics (key VARCHAR(250), value {double}, timestamp BIGINT,
             run_uuid VARCHAR(32), step BIGINT, is_nan BOOLEAN)"""


def _read(url: str) -> dict[str, list[tuple[float, int, int]]]:
    async def go() -> dict[str, list[tuple[float, int, int]]]:
        source = await open_point_source(url)
        try:
            series = await source.run_points("r1")
        finally:
            await source.close()
        return {
            s.key: sorted(
                zip(s.values.tolist(), s.timestamps.tolist(), s.steps.tolist(), strict=True),
                key=lambda p: (p[1], p[2], repr(p[0])),
            )
            for s in series
        }

    return run_sync(go)


def _check(found: dict[str, list[tuple[float, int, int]]]) -> None:
    assert sorted(found) == ["acc", "loss"]
    loss = found["loss"]
    assert [p[1:] for p in loss] == [(10, 0), (20, 1), (30, 2), (40, 3)]
    assert loss[0][0] == 0.5 and math.isnan(loss[2][0]) and loss[3][0] == DOUBLE_MAX
    assert sorted(p[0] for p in found["acc"]) == [-DOUBLE_MAX, 1.0]


def test_points_from_sqlite(tmp_path: Path) -> None:
    path = tmp_path / "mlflow.db"
    with sqlite3.connect(path) as db:
        db.execute(_CREATE.format(double="FLOAT"))
        db.executemany(
            "INSERT INTO metrics VALUES (?, ?, ?, ?, ?, ?)",
            [(k, v, t, "r1", s, n) for k, v, t, s, n in ROWS] + [("loss", 9.0, 1, "r2", 0, 0)],
        )
    _check(_read(f"sqlite:///{path}"))


def test_points_from_postgresql(make_database: Callable[[], str]) -> None:
    dsn = make_database()

    async def create() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(_CREATE.format(double="DOUBLE PRECISION"))
            await conn.executemany(
                "INSERT INTO metrics VALUES ($1, $2, $3, $4, $5, $6)",
                [(k, v, t, "r1", s, n) for k, v, t, s, n in ROWS],
            )
        finally:
            await conn.close()

    run_sync(create)
    _check(_read(dsn.replace("postgresql://", "postgresql+psycopg2://")))


def test_an_unknown_database_is_refused_with_what_to_use() -> None:
    with pytest.raises(ValueError, match="sqlite:///"):
        _read("mysql://db/mlflow")

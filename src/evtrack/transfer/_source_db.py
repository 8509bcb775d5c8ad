"""Metric points read straight from the source server's database (optional, read-only).

An MLflow server serves a metric history at some ten thousand points per second: it builds
an ORM object, an entity and a protobuf message per point. Where the operator can reach the
source's database, ``--source-database`` reads the points from its ``metrics`` table instead
(MLflow's schema: ``run_uuid, key, value, timestamp, step, is_nan``), a hundred times
faster; everything else still comes through the REST API. SQLite files and PostgreSQL are
supported. MLflow stores NaN as 0 with ``is_nan`` set; the value is NaN again here.
"""

from __future__ import annotations

import asyncio
import sqlite3
import urllib.parse
from collections import defaultdict
from collections.abc import Sequence
from typing import Any, Protocol

import asyncpg
import numpy as np

from evtrack.transfer._series import Series

_QUERY = "SELECT key, value, timestamp, step, is_nan FROM metrics WHERE run_uuid = {}"


class PointSource(Protocol):
    async def run_points(self, run_id: str) -> list[Series]: ...

    async def close(self) -> None: ...


def _series(rows: Sequence[Any]) -> list[Series]:
    by_key: dict[str, list[Any]] = defaultdict(list)
    for row in rows:
        by_key[row[0]].append(row)
    found = []
    for key, points in by_key.items():
        n = len(points)
        values = np.fromiter((p[1] for p in points), dtype=np.float64, count=n)
        nan = np.fromiter((bool(p[4]) for p in points), dtype=bool, count=n)
        values[nan] = np.nan
        found.append(
            Series(
                key,
                values,
                np.fromiter((p[2] for p in points), dtype=np.int64, count=n),
                np.fromiter((p[3] for p in points), dtype=np.int64, count=n),
            )
        )
    return found


class SqlitePoints:
    def __init__(self, path: str) -> None:
        self._conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
        self._lock = asyncio.Lock()

    async def run_points(self, run_id: str) -> list[Series]:
        async with self._lock:
            rows = await asyncio.to_thread(
                lambda: self._conn.execute(_QUERY.format("?"), (run_id,)).fetchall()
            )
        return _series(rows)

    async def close(self) -> None:
        self._conn.close()


_ORDER = "ORDER BY timestamp, step, value"
_PACKED_QUERY = f"""
SELECT key,
       string_agg(float8send(value), ''::bytea {_ORDER}) AS v,
       string_agg(int8send(timestamp), ''::bytea {_ORDER}) AS t,
       string_agg(int8send(step), ''::bytea {_ORDER}) AS s,
       string_agg(boolsend(is_nan), ''::bytea {_ORDER}) AS n
FROM metrics WHERE run_uuid = $1 GROUP BY key"""


class PostgresPoints:
    """Each series comes back as four byte strings PostgreSQL packs itself (big-endian
    ``float8send``/``int8send``), so no Python object is made per point."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def run_points(self, run_id: str) -> list[Series]:
        found = []
        for row in await self._pool.fetch(_PACKED_QUERY, run_id):
            values = np.frombuffer(row["v"], dtype=">f8").astype(np.float64)
            values[np.frombuffer(row["n"], dtype=np.bool_)] = np.nan
            found.append(
                Series(
                    row["key"],
                    values,
                    np.frombuffer(row["t"], dtype=">i8").astype(np.int64),
                    np.frombuffer(row["s"], dtype=">i8").astype(np.int64),
                )
            )
        return found

    async def close(self) -> None:
        await self._pool.close()


async def open_point_source(url: str) -> PointSource:
    """The reader for ``url``: ``sqlite:///path/mlflow.db`` or ``postgresql://...`` (the
    URI the source server was started with as ``--backend-store-uri``)."""
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme == "sqlite":
        path = url.split(":///", 1)[1] if ":///" in url else ""
        if not path:
            raise ValueError(f"not a SQLite file URI: {url!r} (use sqlite:///path/to/mlflow.db)")
        return SqlitePoints(path)
    if scheme.startswith("postgres"):
        dsn = "postgresql://" + url.split("://", 1)[1]
        pool = await asyncpg.create_pool(dsn, min_size=1, max_size=4)
        return PostgresPoints(pool)
    raise ValueError(
        f"unsupported source database {url!r}: use sqlite:///... or postgresql://... "
        "(or leave it out to read points through the REST API)"
    )

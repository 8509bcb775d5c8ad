"""Reads of the metric history read model (columnar chunks plus per-series overviews).

History pages follow MLflow's order (timestamp, step, value) and drop identical points, as
MLflow stores each distinct point once. Paging is by key, not offset: a page token names the
last point returned, and a page unnests only the chunks that can hold the points after it, so
the 40th page of a million-point series costs what the first does.
"""

from __future__ import annotations

import base64
import binascii
import math
from collections.abc import AsyncIterator
from typing import Any, TypeAlias

import asyncpg
import msgspec

from evtrack.errors import invalid
from evtrack.eventlog import Conn
from evtrack.wire import mlflow as wire

Executor: TypeAlias = "Conn | asyncpg.Pool[Any]"

_PAGE_SQL = """
    SELECT DISTINCT u.ts, u.step, u.v
    FROM rm_metrics.chunks c, unnest(c.timestamps, c.steps, c.vals) AS u(ts, step, v)
    WHERE c.run_id = $1 AND c.key = $2 AND c.seq = ANY($3::bigint[])
      AND ($4::bigint IS NULL OR (u.ts, u.step, u.v) > ($4, $5, $6))
      AND ($7::bigint IS NULL OR u.ts < $7)
    ORDER BY 1, 2, 3
    LIMIT $8
"""


class _Cursor(msgspec.Struct, array_like=True):
    ts: int
    step: int
    value: float


_token_encoder = msgspec.json.Encoder()
_token_decoder = msgspec.json.Decoder(_Cursor)


def _encode_token(point: tuple[int, int, float]) -> str:
    value = point[2]
    raw = _token_encoder.encode([point[0], point[1], "NaN" if math.isnan(value) else value])
    return base64.urlsafe_b64encode(raw).decode()


def _decode_token(token: str | None) -> _Cursor | None:
    if not token:
        return None
    try:
        raw = msgspec.json.decode(base64.urlsafe_b64decode(token.encode()))
        if isinstance(raw, list) and len(raw) == 3 and raw[2] == "NaN":
            raw[2] = math.nan
        return msgspec.convert(raw, _Cursor)
    except (ValueError, binascii.Error, msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise invalid(f"Invalid page token, could not base64-decode or parse: {token!r}") from exc


def _metric(key: str, ts: int, step: int, value: float, run_id: str | None = None) -> wire.Metric:
    return wire.Metric(
        key=key, value=wire.json_double(value), timestamp=ts, step=step, run_id=run_id
    )


async def metric_history_page(
    db: Executor, run_id: str, key: str, *, page_token: str | None, limit: int
) -> tuple[list[wire.Metric], str | None]:
    """One page of a series in MLflow's order, and the token of the next page (if any)."""
    cursor = _decode_token(page_token)
    after_ts = None if cursor is None else cursor.ts
    chunks = await db.fetch(
        """SELECT seq, n, min_ts FROM rm_metrics.chunks
           WHERE run_id = $1 AND key = $2 AND ($3::bigint IS NULL OR max_ts >= $3)
           ORDER BY min_ts, seq""",
        run_id,
        key,
        after_ts,
    )
    wanted = limit + 1
    while True:
        # Take chunks in order of their first timestamp until they hold enough points. Every
        # point before the next chunk's first timestamp is then among them.
        taken, count = [], 0
        for chunk in chunks:
            if count >= wanted:
                break
            taken.append(chunk["seq"])
            count += chunk["n"]
        bound = chunks[len(taken)]["min_ts"] if len(taken) < len(chunks) else None
        rows = await db.fetch(
            _PAGE_SQL,
            run_id,
            key,
            taken,
            after_ts,
            None if cursor is None else cursor.step,
            None if cursor is None else cursor.value,
            bound,
            wanted,
        )
        if len(rows) >= wanted or bound is None:
            break
        wanted_more = max(wanted - len(rows), 1)
        wanted = len(rows) + 2 * wanted_more + 1  # look further: duplicates or early bound
    page = rows[:limit]
    points = [_metric(key, r["ts"], r["step"], r["v"]) for r in page]
    more = len(rows) > limit
    token = _encode_token((page[-1]["ts"], page[-1]["step"], page[-1]["v"])) if more else None
    return points, token


async def stream_metric_history(
    pool: asyncpg.Pool[Any], run_id: str, key: str
) -> AsyncIterator[list[wire.Metric]]:
    """The whole series in MLflow's order, in pieces, read through a server-side cursor so a
    million points never sit in memory at once."""
    async with pool.acquire() as conn, conn.transaction():
        cursor = conn.cursor(
            """SELECT DISTINCT u.ts, u.step, u.v
               FROM rm_metrics.chunks c, unnest(c.timestamps, c.steps, c.vals) AS u(ts, step, v)
               WHERE c.run_id = $1 AND c.key = $2
               ORDER BY 1, 2, 3""",
            run_id,
            key,
            prefetch=10_000,
        )
        piece: list[wire.Metric] = []
        async for row in cursor:
            piece.append(_metric(key, row["ts"], row["step"], row["v"]))
            if len(piece) >= 10_000:
                yield piece
                piece = []
        if piece:
            yield piece

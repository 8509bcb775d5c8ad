"""History pages and the streamed full history, read straight from chunk rows.

Chunks are written here by hand, so their layout can be as awkward as real ingest makes it:
overlapping timestamp ranges, unsorted arrays, the same point in several chunks, NaN, ±inf,
-0.0 next to 0.0, one-point chunks next to large ones. Every answer is compared with a
reference computed in Python: MLflow's order (timestamp, step, value), each distinct point
once, NaN equal to NaN and after +inf, -0.0 equal to 0.0 (as PostgreSQL compares float8).
"""

from __future__ import annotations

import base64
import math
import random
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import msgspec
import pytest

from evtrack.errors import EvtrackError
from evtrack.eventlog import upgrade
from evtrack.projections.registry import all_projections
from evtrack.projector import ensure_current
from evtrack.queries import metrics as q
from evtrack.server import create_pool

Point = tuple[int, int, float]
SPECIALS = [math.nan, math.inf, -math.inf, -0.0, 0.0, 1.0, -1.0, 5e-324, -1.7976931348623157e308]


@pytest.fixture
async def pool(fresh_database_dsn: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(fresh_database_dsn, 4)
    async with pool.acquire() as conn:
        await upgrade(conn)
        await ensure_current(conn, next(p for p in all_projections() if p.name == "metrics"))
    try:
        yield pool
    finally:
        await pool.close()


class Series:
    """Chunk rows of one series, written in the order they are added (seq increasing)."""

    def __init__(self, pool: asyncpg.Pool, run_id: str, key: str = "m") -> None:
        self.pool, self.run_id, self.key = pool, run_id, key
        self.points: list[Point] = []
        self.seq = 1000

    async def add(self, points: list[Point]) -> None:
        self.seq += 1
        self.points += points
        ts, steps, vals = ([p[i] for p in points] for i in range(3))
        async with self.pool.acquire() as conn:
            await conn.execute(
                """INSERT INTO rm_metrics.chunks (run_id, key, seq, n, min_ts, max_ts, min_step,
                       max_step, timestamps, steps, vals)
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)""",
                self.run_id,
                self.key,
                self.seq,
                len(points),
                min(ts),
                max(ts),
                min(steps),
                max(steps),
                ts,
                steps,
                vals,
            )

    def expected(self) -> list[tuple[int, int, Any]]:
        """The series as MLflow returns it, values normalised for comparison."""
        return sorted({_comparable(p) for p in self.points}, key=_order)


def _comparable(p: Point) -> tuple[int, int, Any]:
    return p[0], p[1], "NaN" if math.isnan(p[2]) else p[2] + 0.0


def _order(p: tuple[int, int, Any]) -> tuple[int, int, int, float]:
    return (p[0], p[1], 1, 0.0) if p[2] == "NaN" else (p[0], p[1], 0, p[2])


def _seen(metrics: list[q.HistoryPoint]) -> list[tuple[int, int, Any]]:
    """What the wire objects say, in the reference's terms (NaN and ±inf arrive as text)."""
    words = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
    return [
        _comparable((m.timestamp, m.step, words[m.value] if isinstance(m.value, str) else m.value))
        for m in metrics
    ]


async def _pages(series: Series, limit: int) -> tuple[list[list[q.HistoryPoint]], list[str]]:
    pages, tokens, token = [], [], None
    while True:
        page, token = await q.metric_history_page(
            series.pool, series.run_id, series.key, page_token=token, limit=limit
        )
        pages.append(page)
        if token is None:
            return pages, tokens
        tokens.append(token)
        assert len(pages) < 10_000


async def _streamed(series: Series) -> list[q.HistoryPoint]:
    out: list[q.HistoryPoint] = []
    async for piece in q.stream_metric_history(series.pool, series.run_id, series.key):
        assert 0 < len(piece) <= q.STREAM_PIECE_POINTS
        out += piece
    return out


async def _messy_series(pool: asyncpg.Pool, seed: int, chunks: int = 40) -> Series:
    rng = random.Random(seed)
    series = Series(pool, f"run{seed}")
    for _ in range(chunks):
        size = rng.choice([1, 1, 1, 2, 5, rng.randint(10, 40), rng.randint(60, 150)])
        start, span = rng.randint(0, 100), rng.choice([0, 3, 20, 100])
        points: list[Point] = []
        for _ in range(size):
            if series.points and rng.random() < 0.2:
                points.append(rng.choice(series.points))  # the same point again
            else:
                value = rng.choice(SPECIALS) if rng.random() < 0.3 else rng.randint(0, 6) / 4
                points.append((start + rng.randint(0, span), rng.randint(0, 4), value))
        await series.add(points)
    return series


@pytest.mark.parametrize("seed", [1, 2])
async def test_pages_of_overlapping_chunks_with_duplicates_and_nan(
    pool: asyncpg.Pool, seed: int
) -> None:
    series = await _messy_series(pool, seed)
    expected = series.expected()
    assert len(expected) < len(series.points)  # duplicates were written
    for limit in (3, 50, len(expected) - 1, len(expected), 25_000):
        pages, tokens = await _pages(series, limit)
        assert all(0 < len(p) <= limit for p in pages)
        assert all(len(p) == limit for p in pages[:-1])
        assert _seen([m for p in pages for m in p]) == expected, limit
        assert len(tokens) == len(pages) - 1  # the last page has none


async def test_streamed_history_equals_paged_history(
    pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    series = await _messy_series(pool, 3)
    monkeypatch.setattr(q, "FIRST_METADATA_BATCH", 0)  # chunks listed in several batches
    pages, _ = await _pages(series, 5)
    monkeypatch.setattr(q, "STREAM_PIECE_POINTS", 37)
    streamed = await _streamed(series)
    assert _seen(streamed) == _seen([m for p in pages for m in p]) == series.expected()


async def test_too_much_overlap_falls_back_to_postgres_merging(
    pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    series = await _messy_series(pool, 4)
    monkeypatch.setattr(q, "MAX_LOADED_POINTS", 150)
    monkeypatch.setattr(q, "STREAM_PIECE_POINTS", 64)
    pages, _ = await _pages(series, 40)
    assert _seen([m for p in pages for m in p]) == series.expected()
    assert _seen(await _streamed(series)) == series.expected()


async def test_tokens_are_stable_and_resume_inside_large_chunks(
    pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Large sorted chunks, as native ingest writes them: a page token names where each chunk
    it cut through resumes, and asking for the same token twice gives the same page."""
    monkeypatch.setattr(q, "MIN_RESUMED_CHUNK", 100)
    series = Series(pool, "sorted")
    for c in range(4):
        await series.add([(1000 + i, i, float(i % 7)) for i in range(c * 500, (c + 1) * 500)])
    await series.add([(1000 + i, i, float(i % 7)) for i in range(0, 2000, 97)])  # duplicates
    pages, tokens = await _pages(series, 300)
    assert _seen([m for p in pages for m in p]) == series.expected()
    assert len(series.expected()) == 2000
    skips = [msgspec.json.decode(base64.urlsafe_b64decode(t))[3] for t in tokens]
    assert skips[0][0][1] > 0  # resumes inside the first chunk
    for token, page in zip(tokens, pages[1:], strict=True):
        again, _ = await q.metric_history_page(
            pool, series.run_id, series.key, page_token=token, limit=300
        )
        assert again == page


async def test_later_points_join_the_pages_still_to_come(pool: asyncpg.Pool) -> None:
    series = Series(pool, "growing")
    await series.add([(10 + i, i, 0.5) for i in range(10)])
    first, token = await q.metric_history_page(pool, "growing", "m", page_token=None, limit=4)
    await series.add([(15, 100, 1.0), (40, 0, math.nan), (5, 0, 0.0)])  # (5, ...) is behind
    rest: list[q.HistoryPoint] = []
    while token:
        page, token = await q.metric_history_page(pool, "growing", "m", page_token=token, limit=4)
        rest += page
    expected = [p for p in series.expected() if _order(p) > _order(_seen(first)[-1])]
    assert _seen(rest) == expected


async def test_nan_and_infinity_on_page_boundaries(pool: asyncpg.Pool) -> None:
    series = Series(pool, "edges")
    await series.add([(1, 1, v) for v in (math.nan, math.inf, -math.inf, 2.0, math.nan)])
    await series.add([(1, 1, math.inf), (1, 1, -0.0), (1, 1, 0.0), (0, 0, math.nan)])
    pages, _ = await _pages(series, 1)
    values = [m.value for p in pages for m in p]
    assert values == ["NaN", "-Infinity", 0.0, 2.0, "Infinity", "NaN"]
    assert _seen([m for p in pages for m in p]) == series.expected()


async def test_empty_and_unknown_series(pool: asyncpg.Pool) -> None:
    page, token = await q.metric_history_page(pool, "nope", "m", page_token=None, limit=10)
    assert page == [] and token is None
    streamed = [p async for p in q.stream_metric_history(pool, "nope", "m")]
    assert streamed == []


async def test_bad_tokens_are_invalid_parameters(pool: asyncpg.Pool) -> None:
    for token in ("garbage", base64.urlsafe_b64encode(b'[1, 2, "x"]').decode()):
        with pytest.raises(EvtrackError) as err:
            await q.metric_history_page(pool, "r", "m", page_token=token, limit=10)
        assert "Invalid page token" in str(err.value)


async def test_tokens_without_resume_points_still_work(pool: asyncpg.Pool) -> None:
    series = Series(pool, "legacy")
    await series.add([(i, 0, float(i)) for i in range(10)])
    token = base64.urlsafe_b64encode(b"[4, 0, 4.0]").decode()
    page, next_token = await q.metric_history_page(pool, "legacy", "m", page_token=token, limit=3)
    assert [m.timestamp for m in page] == [5, 6, 7] and next_token

"""Read models compared with a fresh rebuild from the log (invariant 1).

:func:`snapshot` reads every table of every projection's schema as sorted rows, so two
snapshots compare equal exactly when the read models hold the same data. Two things depend
on where projector batches happened to end rather than on the log, and are compared by what
they mean instead: the metric overview's rows (compared as each series' concatenated points)
and the series' count of those rows.
"""

from __future__ import annotations

import subprocess
import sys
import time
from typing import Any

import asyncpg
from _support.aio import run_sync

from evtrack.projections.registry import all_projections

_BY_MEANING = {
    ("rm_metrics", "overview"): """
        SELECT o.run_id, o.key,
               array_agg(u.step ORDER BY o.first_index, u.n),
               array_agg(u.ts ORDER BY o.first_index, u.n),
               array_agg(u.v ORDER BY o.first_index, u.n)
        FROM rm_metrics.overview o,
             unnest(o.steps, o.timestamps, o.vals) WITH ORDINALITY AS u(step, ts, v, n)
        GROUP BY o.run_id, o.key""",
    ("rm_metrics", "series"): """
        SELECT run_id, key, total, stride, kept, first_ts, first_step, first_val,
               last_ts, last_step, last_val
        FROM rm_metrics.series""",
}


def snapshot(dsn: str) -> dict[str, list[str]]:
    """``schema.table`` -> its rows (``repr``, so NaN equals NaN), sorted."""

    async def read() -> dict[str, list[str]]:
        conn = await asyncpg.connect(dsn)
        try:
            out: dict[str, list[str]] = {}
            for projection in all_projections():
                schema = projection.schema_name
                tables = await conn.fetch(
                    """SELECT table_name FROM information_schema.tables
                       WHERE table_schema = $1 AND table_type = 'BASE TABLE'""",
                    schema,
                )
                assert tables, f"projection {projection.name} has no tables in {schema}"
                for (table,) in tables:
                    sql = _BY_MEANING.get((schema, table), f'SELECT * FROM "{schema}"."{table}"')
                    rows = await conn.fetch(sql)
                    out[f"{schema}.{table}"] = sorted(repr(tuple(r.values())) for r in rows)
            return out
        finally:
            await conn.close()

    return run_sync(read)


def differences(live: dict[str, list[str]], rebuilt: dict[str, list[str]]) -> list[str]:
    """What differs, table by table, a few rows each (empty: equal)."""
    out = []
    for table in sorted(set(live) | set(rebuilt)):
        a, b = set(live.get(table, [])), set(rebuilt.get(table, []))
        if a != b or len(live.get(table, [])) != len(rebuilt.get(table, [])):
            out.append(
                f"{table}: live {len(live.get(table, []))} rows, rebuilt "
                f"{len(rebuilt.get(table, []))}; only live {sorted(a - b)[:3]}, "
                f"only rebuilt {sorted(b - a)[:3]}"
            )
    return out


def rows(snap: dict[str, list[str]]) -> int:
    return sum(len(r) for r in snap.values())


def wait_caught_up(dsn: str, timeout: float = 60) -> None:
    """Until every projection's checkpoint has passed the newest event in the log."""

    async def behind() -> list[str]:
        conn = await asyncpg.connect(dsn)
        try:
            head = await conn.fetchrow(
                """SELECT transaction_id::text::bigint AS t, global_position AS g FROM events
                   ORDER BY transaction_id DESC, global_position DESC LIMIT 1"""
            )
            checkpoints = {
                r["name"]: (r["t"], r["g"])
                for r in await conn.fetch(
                    """SELECT name, transaction_id::text::bigint AS t, global_position AS g
                       FROM projection_checkpoints"""
                )
            }
        finally:
            await conn.close()
        if head is None:
            return []
        return [
            p.name
            for p in all_projections()
            if checkpoints.get(p.name, (0, 0)) < (head["t"], head["g"])
        ]

    deadline = time.monotonic() + timeout
    while lagging := run_sync(behind):
        assert time.monotonic() < deadline, f"read models still behind the log: {lagging}"
        time.sleep(0.1)


def rebuild_all(dsn: str) -> None:
    """``evtrack projections rebuild all``: replay the log into fresh schemas, swap them in."""
    done = subprocess.run(
        [sys.executable, "-m", "evtrack", "projections", "rebuild", "all", "--database-url", dsn],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def compare_with_rebuild(dsn: str) -> dict[str, Any]:
    """Snapshot the live read models, rebuild them all from the log, snapshot again; the
    two must be equal. Returns the figures for the report.

    Then makes sure the comparison can fail: with one metric chunk deleted from the (now
    rebuilt) read model, the snapshots must differ. That row is put back by nothing: callers
    use this last.
    """
    live = snapshot(dsn)
    rebuild_all(dsn)
    rebuilt = snapshot(dsn)
    diff = differences(live, rebuilt)
    assert not diff, "live read models differ from a rebuild:\n" + "\n".join(diff)

    async def lose_a_chunk() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(
                "DELETE FROM rm_metrics.chunks WHERE ctid = "
                "(SELECT ctid FROM rm_metrics.chunks LIMIT 1)"
            )
        finally:
            await conn.close()

    run_sync(lose_a_chunk)
    assert differences(snapshot(dsn), rebuilt), "the comparison cannot see a lost row"
    return {"tables": len(live), "rows": rows(live)}

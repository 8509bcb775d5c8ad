"""``evtrack export`` and ``evtrack import evtrack``: the log out to a directory and back.

An evtrack server is seeded through the official client, exported, loaded into a fresh
database and artifact store, and a server there answers every read as the first did; the
log itself comes back event for event, actors and times included.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
from _support.aio import run_sync
from _support.server import EvtrackServer

from ._dataset import seed, snapshot
from .conftest import evtrack_cli
from .test_import_mlflow import _assert_same


async def _log(dsn: str) -> list[tuple[Any, ...]]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            """SELECT stream_id, stream_position, event_type, schema_version, payload, actor,
                      metadata::text, recorded_at
               FROM events ORDER BY transaction_id, global_position"""
        )
        heads = await conn.fetch("SELECT stream_id, version, state FROM streams ORDER BY 1")
        return [tuple(r) for r in rows] + [tuple(h) for h in heads]
    finally:
        await conn.close()


def test_export_then_import_gives_identical_answers_and_log(
    evtrack_server: EvtrackServer,
    evtrack_server_factory: Callable[..., EvtrackServer],
    make_database: Callable[[], str],
    tmp_path: Path,
) -> None:
    seed(evtrack_server.url)
    expected = snapshot(evtrack_server.url)
    source_env = {
        "EVTRACK_DATABASE_URL": evtrack_server.dsn,
        "EVTRACK_ARTIFACTS_URI": str(evtrack_server.artifacts_root),
    }
    out = tmp_path / "export"
    done = evtrack_cli("export", "--to", str(out), "--no-progress", env=source_env)
    assert done.returncode == 0, done.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["format"] == "evtrack-export" and manifest["format_version"] == 1
    assert manifest["artifacts"]["files"] >= 4

    dsn = make_database()
    artifacts = tmp_path / "restored-artifacts"
    target_env = {"EVTRACK_DATABASE_URL": dsn, "EVTRACK_ARTIFACTS_URI": str(artifacts)}
    loaded = evtrack_cli("import", "evtrack", str(out), "--no-progress", env=target_env)
    assert loaded.returncode == 0, loaded.stderr
    assert run_sync(lambda: _log(dsn)) == run_sync(lambda: _log(evtrack_server.dsn))

    # Loading again finds the whole export already there and adds nothing.
    again = evtrack_cli("import", "evtrack", str(out), "--no-progress", env=target_env)
    assert again.returncode == 0, again.stderr
    assert run_sync(lambda: _log(dsn)) == run_sync(lambda: _log(evtrack_server.dsn))

    restored = evtrack_server_factory(dsn=dsn, artifacts_root=artifacts)
    _assert_same(snapshot(restored.url), expected)

    # A database with a log of its own is refused, and keeps its log.
    other = make_database()
    busy = evtrack_server_factory(dsn=other, artifacts_root=tmp_path / "other-artifacts")
    before = run_sync(lambda: _log(other))
    refused = evtrack_cli(
        "import", "evtrack", str(out), "--no-progress", env={"EVTRACK_DATABASE_URL": busy.dsn}
    )
    assert refused.returncode == 1
    assert "empty database" in refused.stderr
    assert run_sync(lambda: _log(other)) == before

"""``evtrack import mlflow``: a seeded reference server, copied, reads the same everywhere.

The source is the pip-installed ``mlflow server`` seeded through the official client
(``_dataset.seed``); every read a user has through ``MlflowClient`` is compared between the
source and the evtrack server the import wrote into (``_dataset.snapshot``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from _support.aio import run_sync
from _support.server import EvtrackServer

from evtrack.application import CommandExecutor, Context
from evtrack.domain.commands import Command
from evtrack.domain.import_commands import ImportRunPoints
from evtrack.transfer import ImportOptions, import_mlflow, open_point_source, open_target

from ._dataset import snapshot
from .conftest import SeededSource, evtrack_cli


def _assert_same(got: Any, expected: Any, path: str = "") -> None:
    """Equal, or an assertion naming the innermost part that differs."""
    if isinstance(expected, dict) and isinstance(got, dict):
        assert got.keys() == expected.keys(), path
        for key in expected:
            _assert_same(got[key], expected[key], f"{path}/{key}")
    elif isinstance(expected, list | tuple) and isinstance(got, list | tuple):
        assert len(got) == len(expected), path
        for i, (g, e) in enumerate(zip(got, expected, strict=True)):
            _assert_same(g, e, f"{path}[{i}]")
    else:
        assert got == expected, path


async def _fetch(dsn: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        return list(await conn.fetch(sql, *args))
    finally:
        await conn.close()


def _events(dsn: str) -> list[asyncpg.Record]:
    return run_sync(
        lambda: _fetch(
            dsn,
            "SELECT stream_id, event_type, actor, metadata::text AS meta FROM events "
            "ORDER BY global_position",
        )
    )


def test_import_copies_every_read_keeps_ids_and_adds_nothing_when_repeated(
    seeded_source: SeededSource, evtrack_server: EvtrackServer
) -> None:
    from mlflow import MlflowClient

    env = {
        "EVTRACK_DATABASE_URL": evtrack_server.dsn,
        "EVTRACK_ARTIFACTS_URI": str(evtrack_server.artifacts_root),
    }
    # The server is running meanwhile: the import writes where it reads.
    done = evtrack_cli("import", "mlflow", "--from", seeded_source.url, "--no-progress", env=env)
    assert done.returncode == 0, done.stderr
    assert "registered models" in done.stdout

    _assert_same(snapshot(evtrack_server.url), seeded_source.expected)

    events = _events(evtrack_server.dsn)
    imported = [e for e in events if e["actor"] != "evtrack"]
    assert imported, "the import appended nothing"
    assert {e["actor"] for e in imported} == {f"import:{seeded_source.url}"}
    assert all(f'"source": "{seeded_source.url}"' in e["meta"] for e in imported)
    types = {e["event_type"] for e in imported}
    assert {"ExperimentCreated", "RunCreated", "RunDataLogged", "ModelVersionCreated"} <= types

    # Experiments created afterwards never take an imported id.
    highest = max(int(e[0]) for e in seeded_source.expected["experiments"])
    created = MlflowClient(evtrack_server.url).create_experiment("after-import")
    assert int(created) > highest

    again = evtrack_cli("import", "mlflow", "--from", seeded_source.url, "--no-progress", env=env)
    assert again.returncode == 0, again.stderr
    assert len(_events(evtrack_server.dsn)) == len(events) + 1  # only "after-import"
    assert f"0 runs copied ({len(seeded_source.expected['runs'])} already" in again.stdout


class _CrashAfter:
    """The real executor, but the process "dies" right after the ``n``-th chunk of points
    committed, before the import could note it: the resumed import sends it again."""

    def __init__(self, inner: CommandExecutor, n: int) -> None:
        self.inner = inner
        self.left = n

    async def execute(self, command: Command, context: Context) -> Any:
        result = await self.inner.execute(command, context)
        if isinstance(command, ImportRunPoints) and command.points is not None:
            self.left -= 1
            if self.left == 0:
                raise KeyboardInterrupt
        return result


def test_an_interrupted_import_resumes_without_duplicates(
    seeded_source: SeededSource,
    make_database: Callable[[], str],
    evtrack_server_factory: Callable[..., EvtrackServer],
    tmp_path: Path,
) -> None:
    dsn = make_database()
    artifacts = tmp_path / "artifacts"

    async def run(crash_after: int | None) -> None:
        points = await open_point_source(f"sqlite:///{seeded_source.database}")
        try:
            async with open_target(dsn, str(artifacts)) as target:
                commands: Any = target.commands
                if crash_after is not None:
                    commands = _CrashAfter(target.commands, crash_after)
                options = ImportOptions(progress=False, parallel_runs=1)
                await import_mlflow(seeded_source.url, commands, target.artifacts, options, points)
        finally:
            await points.close()

    with pytest.raises(KeyboardInterrupt):
        run_sync(lambda: run(crash_after=3))
    run_sync(lambda: run(crash_after=None))
    count = len(_events(dsn))
    run_sync(lambda: run(crash_after=None))
    assert len(_events(dsn)) == count

    # Each run's points are in the log once: one RunDataLogged for its points, one for its
    # params (an interrupted chunk sent again was answered from its idempotency key).
    runs = seeded_source.expected["runs"]
    expected = sum(bool(r["params"]) + bool(r["metrics"]) for r in runs.values())
    logged = [e for e in _events(dsn) if e["event_type"] == "RunDataLogged"]
    assert len(logged) == expected

    server = evtrack_server_factory(dsn=dsn, artifacts_root=artifacts)
    _assert_same(snapshot(server.url), seeded_source.expected)

"""``evtrack import`` and ``evtrack export``: run a transfer and say how it went."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Callable
from pathlib import Path

from evtrack.config import Settings


def _say(message: str) -> None:
    print(f"evtrack: {message}", file=sys.stderr)


def run_transfer_command(
    args: argparse.Namespace, resolve_database_url: Callable[[str | None], str]
) -> int:
    from evtrack.transfer import ArchiveError, SourceError

    if args.command == "import" and args.import_command == "mlflow" and not args.source:
        _say("import mlflow needs --from URL (or EVTRACK_IMPORT_FROM)")
        return 2
    dsn = resolve_database_url(args.database_url)
    artifacts_uri = Settings(artifacts_uri=args.artifacts_uri).resolved_artifacts_uri
    try:
        if args.command == "export":
            return asyncio.run(_export(args, dsn, artifacts_uri))
        if args.import_command == "evtrack":
            return asyncio.run(_import_evtrack(args, dsn, artifacts_uri))
        return asyncio.run(_import_mlflow(args, dsn, artifacts_uri))
    except (ArchiveError, SourceError, ValueError) as exc:
        _say(str(exc))
        return 1
    except OSError as exc:
        _say(f"{exc}")
        return 1
    except KeyboardInterrupt:
        _say("interrupted; run the same command again to resume")
        return 130


async def _import_mlflow(args: argparse.Namespace, dsn: str, artifacts_uri: str) -> int:
    from evtrack.transfer import ImportOptions, import_mlflow, open_point_source, open_target

    options = ImportOptions(
        parallel_runs=max(1, args.parallel_runs),
        source_concurrency=max(1, args.source_concurrency),
        artifacts=not args.no_artifacts,
        registry=not args.no_registry,
        progress=not args.no_progress,
    )
    points = await open_point_source(args.source_database) if args.source_database else None
    started = time.monotonic()
    try:
        async with open_target(dsn, None if args.no_artifacts else artifacts_uri) as target:
            report = await import_mlflow(
                args.source, target.commands, target.artifacts, options, points
            )
    finally:
        if points is not None:
            await points.close()
    elapsed = time.monotonic() - started
    print(
        f"imported from {args.source} in {elapsed:.1f} s: {report.experiments} experiments, "
        f"{report.runs} runs copied ({report.runs_unchanged} already up to date), "
        f"{report.points:,} metric points ({report.points / max(elapsed, 1e-9):,.0f}/s), "
        f"{report.artifact_files} artifact files ({report.artifact_bytes:,} bytes), "
        f"{report.models} registered models"
    )
    if report.errors:
        _say(f"{len(report.errors)} items could not be copied:")
        for error in report.errors:
            print(f"  {error}", file=sys.stderr)
        return 1
    return 0


async def _export(args: argparse.Namespace, dsn: str, artifacts_uri: str) -> int:
    from evtrack.artifacts import open_artifact_store
    from evtrack.transfer import export_log

    directory = Path(args.directory)
    if args.no_artifacts:
        report = await export_log(dsn, None, directory, progress=not args.no_progress)
    else:
        async with open_artifact_store(artifacts_uri) as store:
            report = await export_log(dsn, store, directory, progress=not args.no_progress)
    print(
        f"exported {report.events:,} events and {report.artifact_files} artifact files "
        f"({report.artifact_bytes:,} bytes) to {directory}"
    )
    return 0


async def _import_evtrack(args: argparse.Namespace, dsn: str, artifacts_uri: str) -> int:
    from evtrack.artifacts import open_artifact_store
    from evtrack.transfer import import_log

    directory = Path(args.directory)
    async with open_artifact_store(artifacts_uri) as store:
        report = await import_log(dsn, store, directory, progress=not args.no_progress)
    print(
        f"loaded {report.events:,} events and {report.artifact_files} artifact files "
        f"({report.artifact_bytes:,} bytes) from {directory}"
    )
    return 0

"""``evtrack export --to DIR`` and ``evtrack import evtrack DIR``: the log in a directory.

The format is documented in ``docs/export-format.md`` (version :data:`FORMAT_VERSION`): a
``manifest.json`` written last (an export without one is incomplete), the events in
MessagePack chunks in log order, the write side's bookkeeping, and a copy of the artifact
store. Loading goes into an empty database only, and resumes after the events already
loaded when it was interrupted.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import msgspec
from tqdm import tqdm

from evtrack import __version__
from evtrack.artifacts import ArtifactStore, LocalArtifactStore
from evtrack.eventlog import (
    ArchivedEvent,
    LogReader,
    WriteModel,
    append_archived,
    last_restored,
    restore_write_model,
    upgrade,
)

FORMAT = "evtrack-export"
FORMAT_VERSION = 1
CHUNK_EVENTS = 5000
CHUNK_BYTES = 64 * 1024 * 1024
LOAD_BATCH = 1000


class ArchiveError(Exception):
    """The directory is not a usable export, or the database cannot take it."""


@dataclass
class ArchiveReport:
    events: int = 0
    artifact_files: int = 0
    artifact_bytes: int = 0


def _bar(total: int | None, desc: str, unit: str, enabled: bool, **kw: Any) -> tqdm[Any]:
    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, disable=not enabled, **kw)


async def _walk(store: ArtifactStore, folder: str = "") -> AsyncIterator[tuple[str, int | None]]:
    for entry in await store.list(folder):
        path = f"{folder}/{entry.path}" if folder else entry.path
        if entry.is_dir:
            async for found in _walk(store, path):
                yield found
        else:
            yield path, entry.file_size


async def _copy_tree(
    source: ArtifactStore, target: ArtifactStore, report: ArchiveReport, bar: tqdm[Any]
) -> None:
    """Every file of ``source`` into ``target``; files already there with their size are
    skipped (uploads are atomic, so a present file is whole)."""
    sizes: dict[str, dict[str, int | None]] = {}
    async for path, size in _walk(source):
        folder, _, name = path.rpartition("/")
        if folder not in sizes:
            sizes[folder] = {e.path: e.file_size for e in await target.list(folder)}
        if size is not None and sizes[folder].get(name) == size:
            continue
        _, chunks = await source.open(path)

        async def counted(chunks: AsyncIterator[bytes] = chunks) -> AsyncIterator[bytes]:
            async for chunk in chunks:
                bar.update(len(chunk))
                yield chunk

        report.artifact_bytes += await target.put(path, counted())
        report.artifact_files += 1


async def export_log(
    dsn: str, artifacts: ArtifactStore | None, directory: Path, *, progress: bool = True
) -> ArchiveReport:
    """Write the log at ``dsn`` (and the artifacts, if a store is given) to ``directory``."""
    if directory.exists() and any(directory.iterdir()):
        raise ArchiveError(f"{directory} is not empty; export into a new directory")
    (directory / "events").mkdir(parents=True, exist_ok=True)
    report = ArchiveReport()
    chunks: list[dict[str, Any]] = []
    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            reader = LogReader(conn)
            total = await reader.count()
            buffer: list[ArchivedEvent] = []
            size = 0

            def flush() -> None:
                nonlocal buffer, size
                if not buffer:
                    return
                name = f"events/{len(chunks) + 1:06d}.msgpack"
                data = msgspec.msgpack.encode(buffer)
                (directory / name).write_bytes(data)
                chunks.append(
                    {
                        "file": name,
                        "events": len(buffer),
                        "sha256": hashlib.sha256(data).hexdigest(),
                    }
                )
                buffer, size = [], 0

            with _bar(total, "events", "ev", progress) as bar:
                async for page in reader.events():
                    for event in page:
                        buffer.append(event)
                        size += len(event.payload)
                        if len(buffer) >= CHUNK_EVENTS or size >= CHUNK_BYTES:
                            flush()
                    report.events += len(page)
                    bar.update(len(page))
                flush()
            model = await reader.write_model()
    finally:
        await conn.close()
    model_data = msgspec.msgpack.encode(model)
    (directory / "write_model.msgpack").write_bytes(model_data)
    if artifacts is not None:
        target = LocalArtifactStore(directory / "artifacts")
        await target.start()
        try:
            with _bar(None, "artifacts", "B", progress, unit_scale=True, unit_divisor=1024) as bar:
                await _copy_tree(artifacts, target, report, bar)
        finally:
            await target.close()
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "evtrack_version": __version__,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "events": report.events,
        "event_chunks": chunks,
        "write_model": {
            "file": "write_model.msgpack",
            "sha256": hashlib.sha256(model_data).hexdigest(),
        },
        "artifacts": (
            {"dir": "artifacts", "files": report.artifact_files, "bytes": report.artifact_bytes}
            if artifacts is not None
            else None
        ),
    }
    (directory / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return report


def read_manifest(directory: Path) -> dict[str, Any]:
    path = directory / "manifest.json"
    try:
        manifest: dict[str, Any] = json.loads(path.read_text())
    except FileNotFoundError:
        raise ArchiveError(
            f"{path} is missing: not an evtrack export, or one that did not finish"
        ) from None
    except ValueError as exc:
        raise ArchiveError(f"{path} is not valid JSON: {exc}") from None
    if manifest.get("format") != FORMAT:
        raise ArchiveError(f"{path}: not an evtrack export (format {manifest.get('format')!r})")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ArchiveError(
            f"{path}: export format version {manifest.get('format_version')!r}; this evtrack "
            f"reads version {FORMAT_VERSION}"
        )
    return manifest


def _checked(directory: Path, entry: dict[str, Any]) -> bytes:
    data: bytes = (directory / str(entry["file"])).read_bytes()
    if hashlib.sha256(data).hexdigest() != entry["sha256"]:
        raise ArchiveError(f"{entry['file']} does not match its checksum in the manifest")
    return data


async def import_log(
    dsn: str, artifacts: ArtifactStore | None, directory: Path, *, progress: bool = True
) -> ArchiveReport:
    """Load the export in ``directory`` into the empty database at ``dsn`` (resuming a load
    that was cut short), then copy its artifacts into ``artifacts``."""
    manifest = read_manifest(directory)
    report = ArchiveReport()
    model = msgspec.msgpack.decode(_checked(directory, manifest["write_model"]), type=WriteModel)
    conn = await asyncpg.connect(dsn)
    try:
        await upgrade(conn)
        skip, last = await last_restored(conn)
        if skip:
            await _check_resumable(directory, manifest, skip, last)
        with _bar(manifest["events"], "events", "ev", progress, initial=skip) as bar:
            seen = 0
            for entry in manifest["event_chunks"]:
                if seen + entry["events"] <= skip:
                    seen += entry["events"]
                    continue
                events = msgspec.msgpack.decode(
                    _checked(directory, entry), type=list[ArchivedEvent]
                )
                start = max(0, skip - seen)
                seen += len(events)
                for i in range(start, len(events), LOAD_BATCH):
                    batch = events[i : i + LOAD_BATCH]
                    await append_archived(conn, batch)
                    report.events += len(batch)
                    bar.update(len(batch))
        await restore_write_model(conn, model)
    finally:
        await conn.close()
    if artifacts is not None and manifest.get("artifacts"):
        source = LocalArtifactStore(directory / manifest["artifacts"]["dir"])
        await source.start()
        try:
            with _bar(None, "artifacts", "B", progress, unit_scale=True, unit_divisor=1024) as bar:
                await _copy_tree(source, artifacts, report, bar)
        finally:
            await source.close()
    return report


async def _check_resumable(
    directory: Path,
    manifest: dict[str, Any],
    count: int,
    last: tuple[str, int, bytes, int] | None,
) -> None:
    """A database that holds events may only be the same export's load, cut short."""
    if count <= manifest["events"]:
        seen = 0
        for entry in manifest["event_chunks"]:
            if seen + entry["events"] >= count:
                events = msgspec.msgpack.decode(
                    _checked(directory, entry), type=list[ArchivedEvent]
                )
                e = events[count - seen - 1]
                if (e.stream_id, e.stream_position, e.payload, e.recorded_at_us) == last:
                    return
                break
            seen += entry["events"]
    raise ArchiveError(
        f"the database already holds {count} events that are not this export's: "
        "import an export into an empty database"
    )

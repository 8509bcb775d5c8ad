"""Is the artifact store usable: for the status page, which shows it next to the database."""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from pathlib import Path
from typing import Any

from evtrack.artifacts._local import LocalArtifactStore
from evtrack.artifacts._s3 import S3ArtifactStore
from evtrack.artifacts._store import ArtifactStore

LOW_SPACE_FRACTION = 0.05
"""Below this share of free disk, a local store is reported as running out of space."""


def _local(root: Path) -> dict[str, Any]:
    existing = root
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent  # the root is made at start; be kind if it was removed
    usage = shutil.disk_usage(existing)
    writable = root.is_dir() and os.access(root, os.W_OK | os.X_OK)
    low = usage.free < usage.total * LOW_SPACE_FRACTION
    return {
        "ok": writable and usage.free > 0,
        "kind": "local",
        "location": str(root),
        "free_bytes": usage.free,
        "total_bytes": usage.total,
        "warning": "low disk space" if low else None,
        "error": None if writable else f"{root} is not a writable directory",
    }


async def artifact_health(store: ArtifactStore) -> dict[str, Any]:
    """Whether ``store`` answers: a local root's free space and writability, or one small
    listing request to S3. Never raises for the store's own failures: they are the answer."""
    began = time.perf_counter()
    if isinstance(store, LocalArtifactStore):
        found = await asyncio.to_thread(_local, store.root)
    elif isinstance(store, S3ArtifactStore):
        try:
            await store.probe()
            found = {"ok": True, "kind": "s3", "location": store.location, "error": None}
        except Exception as exc:
            found = {
                "ok": False,
                "kind": "s3",
                "location": store.location,
                "error": f"{type(exc).__name__}: {exc}"[:300],
            }
    else:
        await store.list("")
        found = {"ok": True, "kind": type(store).__name__, "error": None}
    found["latency_ms"] = round((time.perf_counter() - began) * 1000, 2)
    return found

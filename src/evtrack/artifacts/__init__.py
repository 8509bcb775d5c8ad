"""Artifact storage: path safety, the storage-neutral store interface, and the local store.

The HTTP layer (``evtrack.api.artifacts``) only sees ``ArtifactStore``; which backend sits
behind it (a local directory here, S3 later) is the app's choice.
"""

from evtrack.artifacts._factory import (
    artifact_store_cleanup_ctx,
    artifact_store_for,
    close_artifact_store,
    open_artifact_store,
    start_artifact_store,
)
from evtrack.artifacts._health import artifact_health
from evtrack.artifacts._local import LocalArtifactStore
from evtrack.artifacts._paths import (
    INVALID_PATH_MESSAGE,
    contained,
    invalid_path,
    normalize_artifact_path,
    normalize_upload_path,
)
from evtrack.artifacts._s3 import S3ArtifactStore
from evtrack.artifacts._store import CHUNK_SIZE, ArtifactStore, FileInfo

__all__ = [
    "CHUNK_SIZE",
    "INVALID_PATH_MESSAGE",
    "ArtifactStore",
    "FileInfo",
    "LocalArtifactStore",
    "S3ArtifactStore",
    "artifact_health",
    "artifact_store_cleanup_ctx",
    "artifact_store_for",
    "close_artifact_store",
    "contained",
    "invalid_path",
    "normalize_artifact_path",
    "normalize_upload_path",
    "open_artifact_store",
    "start_artifact_store",
]

"""Server settings, from command-line flags first, then ``EVTRACK_*`` environment variables."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


def default_data_dir() -> Path:
    base = os.environ.get("EVTRACK_DATA_DIR")
    if base:
        return Path(base)
    xdg = os.environ.get("XDG_DATA_HOME")
    return (Path(xdg) if xdg else Path.home() / ".local" / "share") / "evtrack"


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 5000
    # None: start the embedded PostgreSQL in the data directory.
    database_url: str | None = None
    # Where artifacts live: a local directory (default: <data dir>/artifacts).
    artifacts_uri: str | None = None
    # Run the projectors inside the server process (the default). Turn off when dedicated
    # `evtrack projections run` workers own the read models.
    run_projectors: bool = True
    # How long a read waits for the read models to catch up with the caller's writes.
    read_wait_timeout_s: float = 10.0
    # How long a key derived from a request body protects against a retried request.
    derived_key_ttl_s: float = 600.0
    # Connection pool size per server process.
    pool_size: int = 20
    # Stages a model version may only enter through an approved transition request.
    approval_required_stages: tuple[str, ...] = ()
    # Whether an approver must be someone other than the requester.
    distinct_approver: bool = True
    # Grace period for in-flight requests on shutdown.
    shutdown_timeout_s: float = 30.0

    @property
    def artifacts_root(self) -> Path:
        uri = self.artifacts_uri or str(default_data_dir() / "artifacts")
        if uri.startswith("file://"):
            uri = uri[len("file://") :]
        return Path(uri).expanduser().resolve()


def env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(f"EVTRACK_{name}", default)

"""Server settings, from command-line flags first, then ``EVTRACK_*`` environment variables."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


def default_data_dir() -> Path:
    """evtrack's local state (embedded PostgreSQL, default artifact store): see ``data_root``."""
    from evtrack._embedded_postgres import data_root

    return data_root()


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
    # Past it the read is refused with 503 and Retry-After rather than answered stale.
    read_wait_timeout_s: float = 10.0
    # Readiness (/ready): red when a read model is more than this many events behind the log,
    # or behind without progress for this many seconds.
    ready_max_lag_events: int = 10_000
    ready_stall_after_s: float = 30.0
    # How long a key derived from a request body protects against a retried request.
    derived_key_ttl_s: float = 600.0
    # How long a client's explicit Idempotency-Key keeps its first answer. The evtrack client
    # may resend a spool days after writing it, so this is generous.
    idempotency_retention_s: float = 7 * 24 * 3600.0
    # How often a server prunes expired idempotency keys (one server at a time).
    idempotency_prune_interval_s: float = 3600.0
    # Connection pool size per server process.
    pool_size: int = 20
    # Stages a model version may only enter through an approved transition request.
    approval_required_stages: tuple[str, ...] = ()
    # Whether an approver must be someone other than the requester.
    distinct_approver: bool = True
    # Native ingestion back-pressure: requests in flight at once, how long a request may
    # queue for a slot, and how far (in events) the read models may lag before 429s.
    ingest_max_in_flight: int = 16
    ingest_queue_wait_s: float = 2.0
    ingest_max_lag_events: int = 50_000
    # The MLflow web UI bundle served at /: a directory holding its index.html. None: the one
    # inside the installed mlflow package (the `ui` extra); without it, / explains how to get it.
    ui_dir: str | None = None
    # Grace period for in-flight requests on shutdown.
    shutdown_timeout_s: float = 30.0
    # Authentication: off by default (one fixed local user). With it on, every route but
    # health, readiness, version and server-info needs Basic credentials or a token.
    auth: bool = False
    # What a user may do on a resource nobody granted them anything on (MLflow's names).
    default_permission: str = "READ"
    # The first admin, created on the first start with auth on and no admin yet.
    admin_username: str = "admin"
    admin_password: str | None = None
    # Behind an authenticating proxy: trust this header's user name, only from these peers.
    auth_proxy_header: str | None = None
    auth_trusted_proxies: tuple[str, ...] = ()
    # Names requests may be addressed to (Host header; Origin of writes): "host",
    # "host:port", "*.example.com" or "*". None: the default for the bound address, see
    # evtrack.api._allowed_hosts (loopback names; on other addresses also IP literals).
    allowed_hosts: tuple[str, ...] | None = None
    # Origins (scheme://host[:port]) whose pages may call the API from a browser (CORS).
    cors_allowed_origins: tuple[str, ...] = ()
    # Bytes of request bodies buffered at once, server-wide, and how long a request waits
    # for its share before a 503.
    max_buffered_body_bytes: int = 256 * 1024 * 1024
    body_budget_wait_s: float = 5.0
    # A body has body_timeout_s, plus one second per body_min_rate bytes received (0: no
    # rate floor, only a pause of body_timeout_s between reads times out); slower, it is
    # answered 408 and the connection closed.
    body_timeout_s: float = 20.0
    body_min_rate: float = 500.0
    # A connection that sends nothing, or waits between requests, is closed after this.
    keepalive_timeout_s: float = 15.0
    # A request head must be complete this long after its first byte.
    header_timeout_s: float = 10.0
    # Client connections held at once; None: as many as the descriptor limit allows.
    max_connections: int | None = None
    # Requests per second per user (principal, else client address); 0: no limit. Bursts
    # of rate_limit_burst (None: twice the rate) are allowed.
    rate_limit: float = 0.0
    rate_limit_burst: int | None = None

    @property
    def resolved_artifacts_uri(self) -> str:
        """Where artifacts live: a local directory or ``s3://bucket/prefix``."""
        return self.artifacts_uri or str(default_data_dir() / "artifacts")


_DURATION_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str) -> float:
    """Seconds from ``"600"``, ``"90s"``, ``"30m"``, ``"12h"`` or ``"7d"``."""
    text = text.strip().lower()
    unit = _DURATION_UNITS.get(text[-1:]) if text else None
    try:
        value = float(text[:-1] if unit is not None else text) * (unit or 1.0)
    except ValueError:
        raise ValueError(f"not a duration: {text!r} (use e.g. 600, 90s, 30m, 12h or 7d)") from None
    if value < 0:
        raise ValueError(f"a duration cannot be negative: {text!r}")
    return value


def env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(f"EVTRACK_{name}", default)


class StartupRefused(Exception):
    """The server will not start as configured; the message says what to set."""


def check_auth_settings(settings: Settings) -> None:
    """Refuse settings that cannot work, before anything starts (ValueError says why)."""
    import ipaddress

    from evtrack.permissions import ACCESS_LEVELS

    if settings.default_permission not in ACCESS_LEVELS:
        raise ValueError(f"unknown default permission {settings.default_permission!r}")
    for entry in settings.auth_trusted_proxies:
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError:
            raise ValueError(f"not an address or network: {entry!r}") from None
    if settings.auth_proxy_header and not settings.auth_trusted_proxies:
        raise ValueError(
            "--auth-proxy-header needs --auth-trusted-proxies: a user header is only trusted "
            "from the proxy that sets it"
        )
    if settings.auth_proxy_header and not settings.auth:
        raise ValueError("--auth-proxy-header needs --auth")


_SIZE_UNITS = {"k": 1024, "m": 1024**2, "g": 1024**3}


def parse_size(text: str) -> int:
    """Bytes from ``"268435456"``, ``"256M"``, ``"256MiB"``, ``"64k"`` or ``"1G"``."""
    cleaned = text.strip().lower().removesuffix("ib").removesuffix("b")
    unit = _SIZE_UNITS.get(cleaned[-1:]) if cleaned else None
    try:
        value = float(cleaned[:-1] if unit is not None else cleaned) * (unit or 1)
    except ValueError:
        raise ValueError(f"not a size: {text!r} (use e.g. 268435456, 256M or 1G)") from None
    if value < 1:
        raise ValueError(f"a size must be positive: {text!r}")
    return int(value)


def parse_list(text: str | None) -> tuple[str, ...]:
    """Comma-separated entries, blanks dropped."""
    return tuple(e.strip() for e in (text or "").split(",") if e.strip())

"""The composition root: the one place that wires evtrack's parts into a running server.

Settings choose the database, the artifact store and whether projectors run in this process;
this module builds the pool, the recorder, the projector runtime and its doorbell, the
application services and the artifact store, hands them to the HTTP layer, and tears them down
in reverse order. Nothing else constructs these parts, so each layer can be read, and tested,
against interfaces only.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import random
from collections.abc import AsyncIterator

import asyncpg
import msgspec
import structlog
from aiohttp import web

from evtrack.access import AccessControl, hash_password
from evtrack.api import (
    ACCESS,
    ARTIFACT_STORE,
    AUTH_CONFIG,
    INGEST_GATE,
    RECENT_ERRORS,
    SERVICES,
    UI_FILES,
    AuthConfig,
    IngestGate,
    IngestLimits,
    Services,
    build_app,
    locate_ui_bundle,
    ui_files,
)
from evtrack.application import (
    CommandExecutor,
    Context,
    EventFeed,
    Freshness,
    Readiness,
    StatusBoard,
)
from evtrack.artifacts import (
    artifact_health,
    artifact_store_for,
    close_artifact_store,
    start_artifact_store,
)
from evtrack.config import Settings, StartupRefused
from evtrack.domain import Rules
from evtrack.domain.auth_commands import EnsureFirstAdmin
from evtrack.domain.commands import EnsureDefaultExperiment
from evtrack.domain.registry import PromotionPolicy
from evtrack.errors import EvtrackError
from evtrack.eventlog import EventStore, database_unavailable, prune_idempotency_keys, upgrade
from evtrack.permissions import access_level
from evtrack.projections.registry import all_projections, projection_named
from evtrack.projector import Doorbell, ProjectorRuntime

log = structlog.get_logger("evtrack.server")

SERVER_CONTEXT = Context(principal="evtrack", client="evtrack-server")


async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec(
        "jsonb",
        encoder=lambda v: v if isinstance(v, str) else msgspec.json.encode(v).decode(),
        decoder=msgspec.json.decode,
        schema="pg_catalog",
    )


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Nothing to reset when a connection returns to the pool.

    asyncpg's default reset sends a query (UNLISTEN, RESET ALL, advisory unlock, ...) on every
    release: a round trip per request. Request handlers never change session state on pooled
    connections (settings are SET LOCAL, inside transactions), and asyncpg itself still rolls
    back a transaction left open.
    """


class _QuietOutageRetries(logging.Filter):
    """Drop asyncpg's pool warnings that only repeat a database outage.

    While the database is down, asyncpg's pool tries to reopen its minimum connections every
    1, 2, 4... seconds and logs a traceback each time. The outage itself is logged once (by
    the API's OutageLog and by each projector); those tracebacks would flood the log with
    what it already says. Other warnings of the pool pass.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return exc is None or not database_unavailable(exc)


_POOL_LOG_FILTER = _QuietOutageRetries()


async def create_pool(dsn: str, size: int) -> asyncpg.Pool:
    pool_log = logging.getLogger("asyncpg.pool")
    if _POOL_LOG_FILTER not in pool_log.filters:
        pool_log.addFilter(_POOL_LOG_FILTER)
    pool: asyncpg.Pool = await asyncpg.create_pool(
        dsn, min_size=2, max_size=size, init=_init_connection, reset=_keep_session
    )
    return pool


async def prune_idempotency_keys_periodically(pool: asyncpg.Pool, settings: Settings) -> None:
    """Prune expired idempotency keys now and then every ``idempotency_prune_interval_s``
    (with jitter, so API nodes started together do not all try at once; only one prunes at
    a time anyway). A failure (database restarting) is logged and retried next time."""
    interval = settings.idempotency_prune_interval_s
    await asyncio.sleep(random.uniform(0, min(60.0, interval)))
    while True:
        try:
            pruned = await prune_idempotency_keys(
                pool,
                derived_ttl_s=settings.derived_key_ttl_s,
                explicit_retention_s=settings.idempotency_retention_s,
            )
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning("idempotency.prune_failed", error=str(exc))
        else:
            if pruned.ran:
                log.info("idempotency.pruned", deleted=pruned.deleted)
        await asyncio.sleep(interval * random.uniform(0.9, 1.1))


def auth_config(settings: Settings) -> AuthConfig:
    return AuthConfig(
        enabled=settings.auth,
        proxy_header=settings.auth_proxy_header,
        trusted_proxies=tuple(
            ipaddress.ip_network(p, strict=False) for p in settings.auth_trusted_proxies
        ),
    )


async def bootstrap_first_admin(commands: CommandExecutor, settings: Settings) -> None:
    """With auth on, make sure an admin exists: the first start creates it from the
    operator's settings; without a password there, the server refuses to start."""
    password = settings.admin_password
    try:
        created = await commands.execute(
            EnsureFirstAdmin(
                username=settings.admin_username,
                password_hash=await hash_password(password) if password else None,
            ),
            SERVER_CONTEXT,
        )
    except EvtrackError as exc:
        raise StartupRefused(exc.message) from None
    if created:
        log.info("auth.first_admin_created", username=settings.admin_username)


def _attach_ui(app: web.Application, settings: Settings) -> None:
    """MLflow's web UI at / when its bundle is found (see ``Settings.ui_dir``)."""
    bundle = locate_ui_bundle(settings.ui_dir)
    files = ui_files(bundle)
    if files is None:
        log.warning(
            "ui.missing",
            ui_dir=settings.ui_dir,
            hint="MLflow's web UI is not installed: pip install 'evtrack[ui]'"
            if settings.ui_dir is None
            else "no index.html in --ui-dir",
        )
        return
    app[UI_FILES] = files
    log.info("ui.bundle", path=str(files.bundle.root), mlflow_version=files.bundle.mlflow_version)


def create_app(settings: Settings, dsn: str) -> web.Application:
    """The whole server; the database must be reachable at ``dsn`` when it starts."""
    app = build_app(settings)
    app[AUTH_CONFIG] = auth_config(settings)
    _attach_ui(app, settings)
    app[INGEST_GATE] = IngestGate(
        IngestLimits(
            max_in_flight=settings.ingest_max_in_flight,
            queue_wait_s=settings.ingest_queue_wait_s,
            max_projection_lag_events=settings.ingest_max_lag_events,
        )
    )

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        pool = await create_pool(dsn, settings.pool_size)
        async with pool.acquire() as conn:
            await upgrade(conn)
        projections = all_projections()
        runtime = ProjectorRuntime(dsn, projections) if settings.run_projectors else None
        store = EventStore(pool, derived_key_ttl_s=settings.derived_key_ttl_s)
        doorbell = Doorbell(pool, runtime)
        policy = PromotionPolicy(
            approval_required=frozenset(settings.approval_required_stages),
            distinct_approver=settings.distinct_approver,
        )
        freshness = Freshness(store, runtime, settings.read_wait_timeout_s)
        access = AccessControl(
            pool,
            freshness,
            default_permission=access_level(settings.default_permission),
            connect=(lambda: asyncpg.connect(dsn)) if settings.auth else None,
        )
        access_types = projection_named("auth").event_types

        def on_commit(types: frozenset[str]) -> None:
            doorbell.ring(types)
            if types & access_types:
                access.invalidate()  # this process's own change: no waiting for a NOTIFY

        commands = CommandExecutor(store, rules=Rules(promotion=policy), on_commit=on_commit)
        await commands.execute(EnsureDefaultExperiment(), SERVER_CONTEXT)
        if settings.auth:
            await bootstrap_first_admin(commands, settings)
        if runtime is not None:
            await runtime.start()
        await access.start()
        app[ACCESS] = access

        def ingest_lag() -> int:
            return 0 if runtime is None else runtime.lag_behind(store.last_appended_position)

        readiness = Readiness(
            store,
            [p.name for p in projections],
            max_lag=settings.ready_max_lag_events,
            stall_after_s=settings.ready_stall_after_s,
        )
        artifact_store = artifact_store_for(settings.resolved_artifacts_uri)
        await start_artifact_store(artifact_store)
        app[ARTIFACT_STORE] = artifact_store
        status = StatusBoard(
            store, readiness, RECENT_ERRORS, lambda: artifact_health(artifact_store)
        )
        app[SERVICES] = Services(
            settings=settings,
            pool=pool,
            commands=commands,
            freshness=freshness,
            readiness=readiness,
            feed=EventFeed(store, runtime),
            policy=policy,
            ingest_lag=ingest_lag,
            status=status,
        )
        pruning = asyncio.create_task(prune_idempotency_keys_periodically(pool, settings))
        log.info("server.started", artifacts_uri=settings.resolved_artifacts_uri)
        yield
        pruning.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pruning
        await status.stop()
        await close_artifact_store(artifact_store)
        await access.stop()
        if runtime is not None:
            await runtime.stop()
        await pool.close()

    app.cleanup_ctx.append(lifecycle)
    return app


__all__ = ["create_app", "create_pool", "prune_idempotency_keys_periodically"]

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
import logging
import random
from collections.abc import AsyncIterator

import asyncpg
import msgspec
import structlog
from aiohttp import web

from evtrack.api import (
    ARTIFACT_STORE,
    INGEST_GATE,
    SERVICES,
    IngestGate,
    IngestLimits,
    Services,
    build_app,
)
from evtrack.application import CommandExecutor, Context, EventFeed, Freshness, Readiness
from evtrack.artifacts import artifact_store_for, close_artifact_store, start_artifact_store
from evtrack.config import Settings
from evtrack.domain import Rules
from evtrack.domain.commands import EnsureDefaultExperiment
from evtrack.domain.registry import PromotionPolicy
from evtrack.eventlog import EventStore, database_unavailable, prune_idempotency_keys, upgrade
from evtrack.projections.registry import all_projections
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


def create_app(settings: Settings, dsn: str) -> web.Application:
    """The whole server; the database must be reachable at ``dsn`` when it starts."""
    app = build_app()
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
        commands = CommandExecutor(store, rules=Rules(promotion=policy), on_commit=doorbell.ring)
        await commands.execute(EnsureDefaultExperiment(), SERVER_CONTEXT)
        if runtime is not None:
            await runtime.start()

        def ingest_lag() -> int:
            return 0 if runtime is None else runtime.lag_behind(store.last_appended_position)

        app[SERVICES] = Services(
            settings=settings,
            pool=pool,
            commands=commands,
            freshness=Freshness(store, runtime, settings.read_wait_timeout_s),
            readiness=Readiness(
                store,
                [p.name for p in projections],
                max_lag=settings.ready_max_lag_events,
                stall_after_s=settings.ready_stall_after_s,
            ),
            feed=EventFeed(store, runtime),
            policy=policy,
            ingest_lag=ingest_lag,
        )
        artifact_store = artifact_store_for(settings.resolved_artifacts_uri)
        await start_artifact_store(artifact_store)
        app[ARTIFACT_STORE] = artifact_store
        pruning = asyncio.create_task(prune_idempotency_keys_periodically(pool, settings))
        log.info("server.started", artifacts_uri=settings.resolved_artifacts_uri)
        yield
        pruning.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pruning
        await close_artifact_store(artifact_store)
        if runtime is not None:
            await runtime.stop()
        await pool.close()

    app.cleanup_ctx.append(lifecycle)
    return app


__all__ = ["create_app", "create_pool", "prune_idempotency_keys_periodically"]

"""What the request handlers share: the application's services and the read side's pool."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import asyncpg
from aiohttp import web

from evtrack.application import CommandExecutor, EventFeed, Freshness, Readiness, StatusBoard
from evtrack.config import Settings
from evtrack.domain.registry import PromotionPolicy


@dataclass
class Services:
    settings: Settings
    pool: asyncpg.Pool  # read models, for queries
    commands: CommandExecutor
    freshness: Freshness
    readiness: Readiness
    feed: EventFeed
    policy: PromotionPolicy
    ingest_lag: Callable[[], int]  # events the slowest local read model is behind; 0 if none
    status: StatusBoard  # the console's live status snapshots


SERVICES = web.AppKey("services", Services)

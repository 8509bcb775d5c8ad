"""The recorder contract on the PostgreSQL recorder."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest

from evtrack.eventlog import PostgresRecorder

from .recorder_contract import MakeRecorder, RecorderContract


class TestPostgresRecorder(RecorderContract):
    @pytest.fixture
    def make_recorder(self, pool: asyncpg.Pool) -> MakeRecorder:
        def make(**options: Any) -> PostgresRecorder:
            return PostgresRecorder(pool, **options)

        return make

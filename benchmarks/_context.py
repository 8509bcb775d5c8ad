"""What every workload gets: the servers, their databases, options and shared results."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _common import Row
from _servers import Server, Sql


@dataclass
class Context:
    args: argparse.Namespace
    mlflow: Server
    evtrack: Server
    workdir: Path
    # The third contender; None when its binary is missing or --no-fasttrackml was given
    # (``fml_absent`` then says why, for the notes).
    fasttrackml: Server | None = None
    fml_absent: str = ""
    rows: list[Row] = field(default_factory=list)
    # Numbers one workload leaves for another (e.g. MLflow's (a) throughput for (b)), and
    # RSS summaries for (f).
    shared: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    _sql: dict[str, Sql] = field(default_factory=dict)

    def servers(self) -> list[Server]:
        """Every server that speaks MLflow's REST API, in the order workloads visit them."""
        peers = [self.mlflow] + ([self.fasttrackml] if self.fasttrackml else [])
        return [*peers, self.evtrack]

    def sql(self, server: Server) -> Sql:
        if server.name not in self._sql:
            self._sql[server.name] = Sql(server.db_url)
        return self._sql[server.name]

    def close(self) -> None:
        for sql in self._sql.values():
            sql.close()
        self._sql.clear()

    def note(self, text: str) -> None:
        self.notes.append(text)

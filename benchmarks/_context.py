"""What every workload gets: the two servers, their databases, options and shared results."""

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
    rows: list[Row] = field(default_factory=list)
    # Numbers one workload leaves for another (e.g. MLflow's (a) throughput for (b)), and
    # RSS summaries for (f).
    shared: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    _sql: dict[str, Sql] = field(default_factory=dict)

    def servers(self) -> list[Server]:
        return [self.mlflow, self.evtrack]

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

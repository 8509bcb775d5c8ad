"""The reference ``mlflow server``, seeded once through the official client for this package."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.parse
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from mlflow_compat._support import ReferenceServer

from ._dataset import seed, snapshot


@dataclass(frozen=True)
class SeededSource:
    url: str
    database: Path  # the reference server's sqlite file
    ids: dict[str, str]
    expected: dict[str, Any]  # snapshot() of the source


@pytest.fixture(scope="package")
def seeded_source(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeededSource]:
    ref = ReferenceServer(tmp_path_factory.mktemp("mlflow-source"))
    ref.start()
    try:
        ids = seed(ref.url)
        port = urllib.parse.urlsplit(ref.url).port
        yield SeededSource(ref.url, ref.workdir / f"mlflow-{port}.db", ids, snapshot(ref.url))
    finally:
        ref.stop()


def evtrack_cli(
    *args: str, env: Mapping[str, str], timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """``python -m evtrack ARGS`` with ``env`` added to this process's environment."""
    full = {**os.environ, **env, "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [sys.executable, "-m", "evtrack", *args],
        env=full,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )

"""Fixtures for the client tests (helpers are in ``_helpers``)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def spool(tmp_path: Path) -> Path:
    path = tmp_path / "spool"
    path.mkdir()
    return path

"""No serious accessibility violations on any console page, light or dark, as axe-core judges.

axe-core comes from the npm registry, pinned by ``tests/console/axe/package-lock.json``;
``.ci/run`` installs it with ``npm ci``. To run this locally: ``npm ci --prefix
tests/console/axe``. It is injected into each page as a test tool (the page's own policy
would refuse an injected script, so this context bypasses it; every other test keeps it).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from ._seed import MODEL, Seeded
from .conftest import Browsing

AXE = Path(__file__).parent / "axe" / "node_modules" / "axe-core" / "axe.min.js"
SERIOUS = ("serious", "critical")


@pytest.fixture(scope="module")
def axe() -> Path:
    if not AXE.exists():
        message = f"{AXE} is missing: npm ci --prefix tests/console/axe (.ci/run does)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return AXE


def _violations(page: Any, axe: Path) -> list[str]:
    page.add_script_tag(path=str(axe))
    found: list[dict[str, Any]] = page.evaluate(
        """async () => (await axe.run(document, {resultTypes: ['violations']})).violations"""
    )
    return [
        f"{v['impact']} {v['id']}: {v['help']} at "
        + "; ".join(", ".join(node["target"]) for node in v["nodes"][:5])
        for v in found
        if v["impact"] in SERIOUS
    ]


@pytest.mark.parametrize("dark", [False, True], ids=["light", "dark"])
def test_console_pages_have_no_serious_violations(
    browsing: Browsing, seeded: Seeded, axe: Path, dark: bool
) -> None:
    pages = {
        "home": "/console/",
        "models": "/console/models",
        "model": f"/console/model?name={MODEL}",
        "as-of": f"/console/model?name={MODEL}&at={seeded.before_phase_two_ms}",
        "requests": "/console/requests",
        "status": "/console/status",
        "feed": "/console/feed",
        "explorer": f"/console/explorer?run_id={seeded.long_run_id}&key=loss",
        "explorer-form": "/console/explorer",
    }
    problems = []
    watched = browsing.page(seeded.admin, dark=dark, bypass_csp=True)
    for name, path in pages.items():
        watched.goto(path)
        if name == "explorer":
            watched.page.wait_for_selector('#chart[data-state="drawn"]')
        problems += [f"{name}: {v}" for v in _violations(watched.page, axe)]
    manager = browsing.page(seeded.alice, dark=dark, bypass_csp=True)
    manager.goto("/console/requests")  # with its approve and reject buttons
    problems += [f"requests (manager): {v}" for v in _violations(manager.page, axe)]
    assert not problems, "\n".join(problems)

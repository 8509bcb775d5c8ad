"""Browser tests of MLflow's web UI served by evtrack.

Playwright for Python drives Debian's Chromium (``apt-get install chromium``; ``.ci/run``
installs it): never a browser build downloaded by ``playwright install``. One browser, one
browser context (so the UI's bundle is fetched once) and one seeded evtrack server per test
module; each test opens its own page.

Every page is watched while a test uses it: an API answer with status >= 400, a request that
fails, an uncaught exception or a console error fails the test (see :class:`Watch` for the few
the reference server shows too). Each test leaves a screenshot in ``$EVTRACK_TEST_SCREENSHOTS``
(``.ci/run`` keeps them as CI artifacts) or in pytest's temporary directory.

The server serves the UI of the installed mlflow package (the test extra's release). To test
another release's UI before it joins the ``ui`` extra's range, point the servers at its build:
``EVTRACK_UI_DIR=/path/to/mlflow/server/js/build pytest tests/ui`` (``pip download --no-deps
mlflow==X`` and unzip ``mlflow/server/js/build`` from the wheel); the seeding client stays.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from _support.server import EvtrackServer, module_server

from ._seed import Seeded, seed

CHROMIUM = os.environ.get("EVTRACK_TEST_CHROMIUM", "/usr/bin/chromium")
NAVIGATION_TIMEOUT_MS = 30_000
EXPECT_TIMEOUT_MS = 20_000

# Answers and messages the reference server's UI shows as well, so they are not evtrack's
# failures. Each one is named with its reason.
ALLOWED_ANSWERS = {
    # Without authentication the reference answers 404 too; the UI reads it as "no login".
    ("GET", "/ajax-api/2.0/mlflow/users/current", 404),
}
ALLOWED_CONSOLE = [
    # The Traces tab's empty state embeds a video from mlflow.org. evtrack's UI policy keeps
    # media to its own origin (no third-party requests from users' browsers; CI is offline).
    re.compile(r"Loading media from '?\s*'?https://mlflow\.org/.*Content Security Policy"),
    # A benign browser notice some layouts trigger; not an error of the page.
    re.compile(r"ResizeObserver loop"),
]


@dataclass
class Watch:
    """What went wrong on a page: failing answers, failed requests, errors."""

    base_url: str
    allowed: set[tuple[str, str, int]] = field(default_factory=lambda: set(ALLOWED_ANSWERS))
    allowed_console: list[re.Pattern[str]] = field(default_factory=lambda: list(ALLOWED_CONSOLE))
    problems: list[str] = field(default_factory=list)
    api_calls: list[tuple[str, str, int]] = field(default_factory=list)  # method, path, status

    def on_response(self, response: Any) -> None:
        url: str = response.url
        if not url.startswith(self.base_url):
            return
        path = url[len(self.base_url) :].split("?", 1)[0]
        method = response.request.method
        if path.startswith(("/api/", "/ajax-api/")):
            self.api_calls.append((method, path, response.status))
        if response.status >= 400 and (method, path, response.status) not in self.allowed:
            self.problems.append(f"{response.status} {method} {url}")

    def on_request_failed(self, request: Any) -> None:
        failure = request.failure or ""
        if "ERR_ABORTED" in failure:  # the UI cancelled it (navigation, a newer query)
            return
        self.problems.append(f"request failed: {request.method} {request.url} ({failure})")

    def on_console(self, message: Any) -> None:
        if message.type != "error":
            return
        text: str = message.text
        location = (message.location or {}).get("url", "")
        if "Failed to load resource" in text:
            # The answer itself is judged in on_response (with its method and allow-list).
            return
        if any(pattern.search(text) for pattern in self.allowed_console):
            return
        self.problems.append(f"console error: {text[:500]} (at {location})")

    def on_page_error(self, error: Any) -> None:
        self.problems.append(f"uncaught exception: {error}")

    def allow(self, method: str, path: str, status: int) -> None:
        """Accept this answer in one test (say why at the call: the reference gives it too)."""
        self.allowed.add((method, path, status))

    def allow_console(self, pattern: str) -> None:
        """Accept console errors matching ``pattern`` in one test (say why at the call)."""
        self.allowed_console.append(re.compile(pattern))

    def called(self, method: str, path: str) -> list[int]:
        """Statuses of the calls to ``method path`` seen so far."""
        return [s for m, p, s in self.api_calls if m == method and p == path]


class UiPage:
    """A browser page on the MLflow UI of the test's evtrack server, with its :class:`Watch`."""

    def __init__(
        self, page: Any, server: EvtrackServer, seeded: Seeded, shots: Path, shared: dict[str, Any]
    ) -> None:
        self.page = page
        self.shared = shared  # state of the browser context, e.g. whether the panel is closed
        self.server = server
        self.seeded = seeded
        self.shots = shots
        self.watch = Watch(server.url)
        page.on("response", self.watch.on_response)
        page.on("requestfailed", self.watch.on_request_failed)
        page.on("console", self.watch.on_console)
        page.on("pageerror", self.watch.on_page_error)
        page.set_default_timeout(EXPECT_TIMEOUT_MS)
        page.set_default_navigation_timeout(NAVIGATION_TIMEOUT_MS)

    def open(self, route: str) -> Any:
        """Load the UI at ``route`` (its hash route, e.g. ``/experiments/1``)."""
        self.page.goto(f"{self.server.url}/#{route}")
        self._close_assistant_panel()
        return self.page

    def _close_assistant_panel(self) -> None:
        # MLflow 3.17 opens its (unconfigured) AI-assistant panel on the first visit; closing
        # it gives the pages the whole window, and the UI remembers that in the browser
        # context. So only the first page of a context waits for the panel to show up.
        close = self.page.locator('[data-component-id="mlflow.assistant.chat_panel.close"]')
        if not self.shared.get("assistant_closed"):
            try:
                close.wait_for(state="visible", timeout=5000)
            except Exception:
                return
            self.shared["assistant_closed"] = True
        if close.is_visible():
            close.click()

    def text(self, value: str | re.Pattern[str]) -> Any:
        return self.page.get_by_text(value).first

    def expect_text(self, *values: str | re.Pattern[str]) -> None:
        from playwright.sync_api import expect

        for value in values:
            expect(self.text(value)).to_be_visible()

    def screenshot(self, name: str) -> Path:
        path = self.shots / f"{name}.png"
        self.page.screenshot(path=str(path))
        return path

    def assert_clean(self) -> None:
        assert not self.watch.problems, "the UI hit failures:\n" + "\n".join(self.watch.problems)


def _launch_browser() -> tuple[Any, Any]:
    if not Path(CHROMIUM).is_file():
        pytest.fail(
            f"no Chromium at {CHROMIUM}: install Debian's package (apt-get install -y chromium) "
            "or set EVTRACK_TEST_CHROMIUM; the tests never download a browser build",
            pytrace=False,
        )
    from playwright.sync_api import sync_playwright

    playwright = sync_playwright().start()
    try:
        browser = playwright.chromium.launch(executable_path=CHROMIUM)
    except BaseException:
        playwright.stop()
        raise
    return playwright, browser


@pytest.fixture(scope="module")
def ui_server(
    postgres_admin_dsn: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[EvtrackServer]:
    yield from module_server(postgres_admin_dsn, tmp_path_factory, "ui-server")


@pytest.fixture(scope="module")
def seeded(ui_server: EvtrackServer, tmp_path_factory: pytest.TempPathFactory) -> Seeded:
    return seed(ui_server.url, tmp_path_factory.mktemp("spool"))


@pytest.fixture(scope="module")
def browser_context() -> Iterator[tuple[Any, dict[str, Any]]]:
    playwright, browser = _launch_browser()
    try:
        context = browser.new_context(viewport={"width": 1440, "height": 900})
        yield context, {}
        context.close()
    finally:
        browser.close()
        playwright.stop()


@pytest.fixture(scope="session")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    configured = os.environ.get("EVTRACK_TEST_SCREENSHOTS")
    path = Path(configured) if configured else tmp_path_factory.mktemp("screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture
def ui(
    request: pytest.FixtureRequest,
    browser_context: tuple[Any, dict[str, Any]],
    ui_server: EvtrackServer,
    seeded: Seeded,
    screenshots: Path,
) -> Iterator[UiPage]:
    context, shared = browser_context
    page = context.new_page()
    ui_page = UiPage(page, ui_server, seeded, screenshots, shared)
    try:
        yield ui_page
    finally:
        try:
            ui_page.screenshot(f"{request.module.__name__.rsplit('.', 1)[-1]}-{request.node.name}")
        finally:
            page.close()

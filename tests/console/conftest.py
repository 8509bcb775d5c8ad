"""Browser tests of the evtrack console at ``/console/``.

Playwright for Python drives Debian's Chromium (``/usr/bin/chromium``, which ``.ci/run``
installs with apt-get): never a browser build downloaded by ``playwright install``. Each
module shares one browser; the whole package shares one seeded ``evtrack server --auth`` (the
page tests and the JSON route tests). Each test opens pages in a browser context signed in as
one user (HTTP Basic, as the browser's own prompt would).

Every page is watched: a console error (a CSP violation included), an uncaught exception or
a failed request fails the test. Screenshots go to ``$EVTRACK_TEST_SCREENSHOTS`` (CI keeps
them as artifacts) or to pytest's temporary directory.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from _support import postgres as pgsupport
from _support.server import EvtrackServer, start_server

from ._seed import Account, Seeded, seed

CHROMIUM = os.environ.get("EVTRACK_TEST_CHROMIUM", "/usr/bin/chromium")
ADMIN = Account("admin", "admin-secret-Pw1")
TIMEOUT_MS = 15_000


def launch_browser() -> Iterator[Any]:
    sync_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium (.ci/run does)")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    yield from launch_browser()


@pytest.fixture(scope="session")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    configured = os.environ.get("EVTRACK_TEST_SCREENSHOTS")
    folder = Path(configured) if configured else tmp_path_factory.mktemp("screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@dataclass
class Watched:
    """A page and what went wrong on it."""

    page: Any
    base_url: str
    problems: list[str] = field(default_factory=list)

    def goto(self, path: str) -> Any:
        response = self.page.goto(f"{self.base_url}{path}")
        return response

    def check(self) -> None:
        assert not self.problems, "\n".join(self.problems)


@dataclass
class Browsing:
    """Opens console pages as a given user, in light or dark mode."""

    browser: Any
    server: EvtrackServer
    shots: Path
    contexts: list[Any] = field(default_factory=list)

    def page(
        self,
        who: Account | None,
        *,
        dark: bool = False,
        allow: tuple[int, ...] = (),
        bypass_csp: bool = False,
    ) -> Watched:
        options: dict[str, Any] = {
            "color_scheme": "dark" if dark else "light",
            "viewport": {"width": 1280, "height": 900},
            # Only for injecting a test tool (axe-core) into a page; never for the pages' own
            # code, which must run under the policy.
            "bypass_csp": bypass_csp,
        }
        if who is not None:
            options["http_credentials"] = {"username": who.name, "password": who.password}
        context = self.browser.new_context(**options)
        context.set_default_timeout(TIMEOUT_MS)
        self.contexts.append(context)
        page = context.new_page()
        watched = Watched(page, self.server.url)

        def on_console(message: Any) -> None:
            if message.type == "error" and "Failed to load resource" not in message.text:
                watched.problems.append(f"console error: {message.text}")

        def on_response(response: Any) -> None:
            if response.status >= 400 and response.status not in allow:
                watched.problems.append(
                    f"{response.status} {response.request.method} {response.url}"
                )

        def on_failed(request: Any) -> None:
            failure = request.failure or ""
            if "ERR_ABORTED" not in failure:  # pages abort their own streams when they close
                watched.problems.append(f"request failed: {request.url} ({failure})")

        page.on("console", on_console)
        page.on("pageerror", lambda error: watched.problems.append(f"uncaught: {error}"))
        page.on("response", on_response)
        page.on("requestfailed", on_failed)
        return watched

    def shot(self, watched: Watched, name: str) -> Path:
        path = self.shots / f"console-{name}.png"
        watched.page.screenshot(path=str(path), full_page=True)
        return path

    def close(self) -> None:
        for context in self.contexts:
            context.close()
        self.contexts.clear()


@pytest.fixture(scope="package")
def console_server(
    postgres_admin_dsn: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[EvtrackServer]:
    """``evtrack server --auth --require-approval Production`` on its own database."""
    name = pgsupport.new_database_name()
    dsn = pgsupport.create_database(postgres_admin_dsn, name)
    work = tmp_path_factory.mktemp("console-server")
    server = start_server(
        dsn=dsn,
        artifacts_root=work / "artifacts",
        log_dir=work / "logs",
        cwd=work,
        extra_args=("--auth", "--require-approval", "Production"),
        env={"EVTRACK_ADMIN_PASSWORD": ADMIN.password},
    )
    try:
        yield server
    finally:
        server.stop()
        pgsupport.drop_database(postgres_admin_dsn, name)


@pytest.fixture(scope="package")
def seeded(console_server: EvtrackServer, tmp_path_factory: pytest.TempPathFactory) -> Seeded:
    return seed(console_server.url, ADMIN, tmp_path_factory.mktemp("spool"))


@pytest.fixture
def browsing(browser: Any, console_server: EvtrackServer, screenshots: Path) -> Iterator[Browsing]:
    session = Browsing(browser, console_server, screenshots)
    try:
        yield session
    finally:
        session.close()

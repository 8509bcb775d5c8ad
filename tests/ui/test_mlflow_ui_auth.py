"""MLflow's web UI on a server with ``--auth``: the browser is asked for credentials, a user
with READ browses the data, and that user's edits are refused."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from _support.server import EvtrackServer
from auth.conftest import ADMIN, ADMIN_PASSWORD, auth_server
from playwright.sync_api import expect

from .conftest import CHROMIUM, UiPage, _launch_browser

EXPERIMENT = f"ui-auth-{uuid.uuid4().hex[:6]}"
READER = ("reader", "reader-Pw-1")


@pytest.fixture(scope="module")
def secured_ui(
    postgres_admin_dsn: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[EvtrackServer]:
    yield from auth_server(postgres_admin_dsn, tmp_path_factory)


@pytest.fixture(scope="module")
def experiment_id(secured_ui: EvtrackServer) -> str:
    admin = (ADMIN, ADMIN_PASSWORD)
    api = f"{secured_ui.url}/api/2.0/mlflow"
    created = requests.post(f"{api}/experiments/create", json={"name": EXPERIMENT}, auth=admin)
    assert created.status_code == 200, created.text
    experiment = created.json()["experiment_id"]
    run = requests.post(
        f"{api}/runs/create",
        json={"experiment_id": experiment, "run_name": "admins-run"},
        auth=admin,
    ).json()["run"]["info"]["run_id"]
    requests.post(
        f"{api}/runs/log-metric",
        json={"run_id": run, "key": "loss", "value": 0.5, "timestamp": 1, "step": 0},
        auth=admin,
    ).raise_for_status()
    user = {"username": READER[0], "password": READER[1]}
    requests.post(f"{api}/users/create", json=user, auth=admin).raise_for_status()
    return str(experiment)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    playwright, browser = _launch_browser()
    try:
        yield browser
    finally:
        browser.close()
        playwright.stop()


def test_the_browser_is_asked_for_credentials(secured_ui: EvtrackServer, browser: Any) -> None:
    from playwright.sync_api import Error

    context = browser.new_context()
    try:
        page = context.new_page()
        # Headless Chromium cannot show the sign-in dialog: the challenge ends the navigation.
        with pytest.raises(Error, match="ERR_INVALID_AUTH_CREDENTIALS"):
            page.goto(f"{secured_ui.url}/")
        answer = context.request.get(f"{secured_ui.url}/")
        assert answer.status == 401
        assert answer.headers["www-authenticate"].startswith("Basic")
    finally:
        context.close()


def test_a_reader_browses_and_cannot_edit(
    secured_ui: EvtrackServer, experiment_id: str, browser: Any, tmp_path: Path
) -> None:
    assert Path(CHROMIUM).is_file()
    context = browser.new_context(
        http_credentials={"username": READER[0], "password": READER[1]},
        viewport={"width": 1440, "height": 900},
    )
    try:
        ui = UiPage(context.new_page(), secured_ui, None, tmp_path, {})  # type: ignore[arg-type]
        page = ui.open(f"/experiments/{experiment_id}/runs")
        expect(page.locator(".ag-root").get_by_text("admins-run", exact=True)).to_be_visible()
        assert ui.watch.called("GET", "/ajax-api/2.0/mlflow/users/current") == [200]
        ui.assert_clean()
        ui.screenshot("mlflow-ui-auth-reader")
        # An edit sent from the page, with the browser's credentials, as the UI sends it.
        status = page.evaluate(
            """async (id) => (await fetch('/ajax-api/2.0/mlflow/experiments/set-experiment-tag',
                 {method: 'POST', headers: {'Content-Type': 'application/json'},
                  body: JSON.stringify({experiment_id: id, key: 'k', value: 'v'})})).status""",
            experiment_id,
        )
        assert status == 403
    finally:
        context.close()
    tags = (
        requests.get(
            f"{secured_ui.url}/api/2.0/mlflow/experiments/get",
            params={"experiment_id": experiment_id},
            auth=(ADMIN, ADMIN_PASSWORD),
            timeout=10,
        )
        .json()["experiment"]
        .get("tags", [])
    )
    assert not [t for t in tags if t["key"] == "k"]

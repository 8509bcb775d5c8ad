"""MLflow's web UI against evtrack, in a real browser: every page renders the seeded data with
no failing call, and edits made in the UI are recorded as events like any others.

The page tests only read. The write tests change only the objects seeded for them (the runs
``scratch`` and ``scratch-doomed``, the model ``ui-scratch-model``), so the tests of this
module pass in any order.
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import quote

import requests
from playwright.sync_api import expect

from ._seed import (
    DOOMED_MODEL,
    EXPERIMENT,
    EXPERIMENT_DESCRIPTION,
    HTML_REPORT,
    MODEL,
    MODEL_DESCRIPTION,
    NATIVE_POINTS,
    NOTES_TEXT,
    SCRATCH_EXPERIMENT,
    SCRATCH_MODEL,
)
from .conftest import UiPage

API = "/api/2.0/mlflow"
AUDIT = "/api/2.0/evtrack/audit"


def _get(ui: UiPage, path: str, **params: Any) -> Any:
    response = requests.get(f"{ui.server.url}{path}", params=params, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def _events(ui: UiPage, path: str, **params: Any) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = _get(ui, path, **params)["events"]
    return events


def _from_browser(event: dict[str, Any]) -> bool:
    """The event was made by a request of the browser (its client is the browser's agent)."""
    return "Chrome" in (event.get("client") or "")


def _experiment_route(ui: UiPage, tail: str = "") -> str:
    return f"/experiments/{ui.seeded.experiment_id}{tail}"


def _registry_ui(ui: UiPage, *, new: bool) -> None:
    """Switch the registry pages to the new UI (aliases) or the classic one (stages)."""
    switch = ui.page.get_by_role("switch", name="New model registry UI")
    if (switch.get_attribute("aria-checked") == "true") == new:
        return
    switch.click()
    if not new:  # turning it off asks for a confirmation
        ui.page.get_by_role("dialog").get_by_role("button", name="Disable").click()
    expect(switch).to_have_attribute("aria-checked", "true" if new else "false")


def _confirm(page: Any, button: str) -> None:
    """Press ``button`` in the confirmation dialog that asks for it, and see it close."""
    dialog = page.get_by_role("dialog").filter(has=page.get_by_role("button", name=button))
    dialog.get_by_role("button", name=button).click()
    expect(dialog).to_be_hidden()


# --------------------------------------------------------------------------- pages


def test_experiments_list(ui: UiPage) -> None:
    ui.open("/experiments")
    ui.expect_text(EXPERIMENT, "Default", EXPERIMENT_DESCRIPTION)
    assert 200 in ui.watch.called("GET", "/ajax-api/2.0/mlflow/experiments/search"), ui.watch
    ui.assert_clean()


def test_runs_table_search_and_dataset_filter(ui: UiPage) -> None:
    page = ui.open(_experiment_route(ui, "/runs"))
    table = page.locator(".ag-root")
    for name in ("train-alpha", "train-beta", "native-long"):
        expect(table.get_by_text(name, exact=True)).to_be_visible()
    expect(table.get_by_text("train-alpha-features (", exact=False)).to_be_visible()

    # The Datasets filter lists what search-datasets found in the runs' inputs.
    page.get_by_test_id("datasets-select-dropdown").click()
    for name in ui.seeded.dataset_names:
        expect(page.get_by_test_id(f"dataset-dropdown-{name}")).to_be_visible()
    assert ui.watch.called("POST", "/ajax-api/2.0/mlflow/experiments/search-datasets") == [200]
    page.keyboard.press("Escape")

    search = page.get_by_test_id("search-box")
    search.fill('params.lr = "0.1"')
    search.press("Enter")
    expect(table.get_by_text("train-alpha", exact=True)).to_have_count(0)
    expect(table.get_by_text("train-beta", exact=True)).to_be_visible()
    ui.assert_clean()


def test_chart_view(ui: UiPage) -> None:
    page = ui.open(_experiment_route(ui, "/runs?compareRunsMode=CHART"))
    cards = page.get_by_test_id("experiment-view-compare-runs-card")
    expect(cards.filter(has_text="loss").first).to_be_visible()
    expect(cards.filter(has_text="accuracy").first).to_be_visible()
    expect(cards.first.locator(".js-plotly-plot")).to_be_visible()
    assert ui.watch.called("GET", "/ajax-api/2.0/mlflow/metrics/get-history-bulk-interval")
    ui.assert_clean()


def test_run_overview(ui: UiPage) -> None:
    run_id = ui.seeded.run_ids["train-alpha"]
    ui.open(_experiment_route(ui, f"/runs/{run_id}"))
    ui.expect_text("train-alpha", run_id, "train-alpha-features (", "vision", MODEL)
    page = ui.page
    expect(page.get_by_role("cell", name="lr", exact=True)).to_be_visible()
    expect(page.get_by_role("cell", name="0.01", exact=True)).to_be_visible()
    ui.assert_clean()


def test_metric_charts(ui: UiPage) -> None:
    alpha, native = ui.seeded.run_ids["train-alpha"], ui.seeded.run_ids["native-long"]
    page = ui.open(_experiment_route(ui, f"/runs/{native}/model-metrics"))
    expect(page.locator(".js-plotly-plot").first).to_be_visible()
    assert 200 in ui.watch.called("GET", "/ajax-api/2.0/mlflow/metrics/get-history-bulk-interval")

    # The metric page: the whole 2,000-point history of the native run next to an mlflow run.
    query = (
        f"?runs={json.dumps([alpha, native])}&metric={quote(json.dumps('loss'))}"
        f"&experiments={json.dumps([ui.seeded.experiment_id])}"
        f"&plot_metric_keys={quote(json.dumps(['loss']))}"
    )
    ui.open(f"/metric{query}")
    ui.expect_text(f"(step={NATIVE_POINTS - 1})", "(step=19)")
    expect(page.locator(".js-plotly-plot").first).to_be_visible()
    ui.assert_clean()


def test_artifacts_text_and_image_preview(ui: UiPage) -> None:
    run_id = ui.seeded.run_ids["train-alpha"]
    page = ui.open(_experiment_route(ui, f"/runs/{run_id}/artifacts"))
    page.get_by_text("notes.txt", exact=True).first.click()
    ui.expect_text(NOTES_TEXT)
    page.get_by_text("plots", exact=True).first.click()
    page.get_by_text("gradient.png", exact=True).first.click()
    image = page.locator("img[src^='blob:']").first
    expect(image).to_be_visible()
    loaded = "img => img.complete && img.naturalWidth > 0"
    page.wait_for_function(loaded, arg=image.element_handle())
    assert image.evaluate("img => [img.naturalWidth, img.naturalHeight]") == [64, 48]
    ui.assert_clean()


def test_html_artifact_preview_shows_the_page_but_runs_none_of_its_scripts(ui: UiPage) -> None:
    """The UI previews an HTML artifact in a blob: frame, which inherits the UI's policy: the
    page shows, its inline script is refused (the reference server, with no policy, runs it)."""
    assert "<script>" in HTML_REPORT
    ui.watch.allow_console(r"Executing inline script violates the following Content Security")
    run_id = ui.seeded.run_ids["train-alpha"]
    page = ui.open(_experiment_route(ui, f"/runs/{run_id}/artifacts"))
    page.get_by_text("report.html", exact=True).first.click()
    frame = page.frame_locator("iframe.mlflow-html-iframe")
    expect(frame.get_by_text("Static report heading")).to_be_visible()
    expect(frame.get_by_text("script ran")).to_have_count(0)
    ui.assert_clean()


def test_compare_runs(ui: UiPage) -> None:
    alpha, beta = ui.seeded.run_ids["train-alpha"], ui.seeded.run_ids["train-beta"]
    ui.open(
        f"/compare-runs?runs={json.dumps([alpha, beta])}"
        f"&experiments={json.dumps([ui.seeded.experiment_id])}"
    )
    ui.expect_text(re.compile(r"Comparing 2 Runs"), alpha, beta, "train-alpha", "train-beta")
    expect(ui.page.get_by_role("cell", name="0.01", exact=True)).to_be_visible()
    expect(ui.page.get_by_role("cell", name="0.1", exact=True)).to_be_visible()
    ui.assert_clean()


def test_logged_models(ui: UiPage) -> None:
    model_id = ui.seeded.model_ids["train-alpha"]
    page = ui.open(_experiment_route(ui, "/models"))
    expect(page.get_by_role("link", name="model", exact=True).first).to_be_visible()
    assert ui.watch.called("POST", "/ajax-api/2.0/mlflow/logged-models/search")
    ui.open(_experiment_route(ui, f"/models/{model_id}"))
    ui.expect_text(model_id, "train-alpha", "Ready")
    ui.assert_clean()


def test_model_registry_stages_and_aliases(ui: UiPage) -> None:
    page = ui.open("/models")
    expect(page.get_by_role("link", name=MODEL, exact=True)).to_be_visible()

    ui.open(f"/models/{MODEL}")
    ui.expect_text(MODEL_DESCRIPTION, "Version 1", "Version 2", "champion")
    _registry_ui(ui, new=False)  # the stage view
    versions = page.locator("table, [role=table]").filter(has_text="Version 1").first
    expect(versions.get_by_text("Production", exact=True)).to_be_visible()
    expect(versions.get_by_text("Staging", exact=True)).to_be_visible()

    ui.open(f"/models/{MODEL}/versions/1")
    ui.expect_text("Version 1", "train-alpha")
    expect(page.get_by_text("Production", exact=True).first).to_be_visible()
    _registry_ui(ui, new=True)
    ui.expect_text("champion")
    ui.assert_clean()


def test_genai_overview_traces_and_datasets_show_their_empty_states(ui: UiPage) -> None:
    """evtrack keeps no traces or evaluation datasets: the GenAI pages get valid empty
    answers and show their empty states, not errors or endless spinners."""
    ui.open(_experiment_route(ui, "/overview/usage"))
    ui.expect_text(re.compile("No data available"))
    ui.open(_experiment_route(ui, "/traces"))
    ui.expect_text(re.compile("tracing", re.IGNORECASE))
    ui.open(_experiment_route(ui, "/datasets"))
    ui.expect_text(re.compile("evaluation dataset", re.IGNORECASE))
    for path in ("traces/metrics", "traces/search", "datasets/search"):
        statuses = ui.watch.called("POST", f"/ajax-api/3.0/mlflow/{path}")
        assert statuses and set(statuses) == {200}, (path, statuses)
    ui.assert_clean()


# --------------------------------------------------------------------------- writes


def test_tag_edit_in_the_ui_is_an_event(ui: UiPage) -> None:
    run_id = ui.seeded.run_ids["scratch"]
    page = ui.open(_experiment_route(ui, f"/runs/{run_id}"))
    page.get_by_role("button", name=re.compile(r"^(Add|Edit) tags$")).click()
    dialog = page.get_by_role("dialog")
    key = dialog.locator("input").first
    key.fill("reviewed")
    key.press("Enter")
    dialog.get_by_label("Value").fill("by-browser")
    dialog.get_by_role("button", name="Add tag").click()
    dialog.get_by_role("button", name="Save tags").click()
    expect(dialog).to_be_hidden()
    ui.expect_text("by-browser")

    tags = _get(ui, f"{API}/runs/get", run_id=run_id)["run"]["data"]["tags"]
    assert {"key": "reviewed", "value": "by-browser"} in tags
    last = _events(ui, f"{AUDIT}/runs/history", run_id=run_id)[-1]
    assert last["type"] == "RunDataLogged"
    assert last["change"]["tags"] == [["reviewed", "by-browser"]]
    assert _from_browser(last), last
    ui.assert_clean()


def test_run_rename_description_and_delete_in_the_ui(ui: UiPage) -> None:
    run_id = ui.seeded.run_ids["scratch-doomed"]
    page = ui.open(_experiment_route(ui, f"/runs/{run_id}"))

    page.get_by_test_id("overflow-menu-trigger").click()
    page.get_by_role("menuitem", name="Rename").click()
    page.get_by_test_id("rename-modal-input").fill("renamed-in-browser")
    page.get_by_role("dialog").get_by_role("button", name="Save").click()
    ui.expect_text("renamed-in-browser")

    page.get_by_role("button", name="Edit description").click()
    page.get_by_test_id("text-area").fill("Described in the browser")
    page.get_by_test_id("editable-note-save-button").click()
    ui.expect_text("Described in the browser")

    page.get_by_test_id("overflow-menu-trigger").click()
    page.get_by_role("menuitem", name="Delete").click()
    _confirm(page, "Delete")

    info = _get(ui, f"{API}/runs/get", run_id=run_id)["run"]
    assert info["info"]["run_name"] == "renamed-in-browser"
    assert info["info"]["lifecycle_stage"] == "deleted"
    tags = {t["key"]: t["value"] for t in info["data"]["tags"]}
    assert tags["mlflow.note.content"] == "Described in the browser"
    events = _events(ui, f"{AUDIT}/runs/history", run_id=run_id)
    by_browser = [e["type"] for e in events if _from_browser(e)]
    assert "RunDeleted" in by_browser, by_browser
    assert len(by_browser) >= 3, by_browser  # rename, description, delete
    ui.assert_clean()


def test_experiment_edit_and_delete_in_the_ui(ui: UiPage) -> None:
    # The edit dialog checks that the new name is free: a 404, as on the reference server.
    ui.watch.allow("GET", "/ajax-api/2.0/mlflow/experiments/get-by-name", 404)
    experiment_id = ui.seeded.scratch_experiment_id
    page = ui.open(f"/experiments/{experiment_id}/runs")
    ui.expect_text(SCRATCH_EXPERIMENT)
    page.get_by_test_id("overflow-menu-trigger").click()
    page.get_by_role("menuitem", name="Edit experiment").click()
    dialog = page.get_by_role("dialog").filter(has_text="Experiment name")
    dialog.locator("input").first.fill("experiment-renamed-in-browser")
    dialog.get_by_test_id("text-area").fill("Experiment described in the browser")
    dialog.get_by_role("button", name="Save").click()
    expect(dialog).to_be_hidden()
    ui.expect_text("experiment-renamed-in-browser")

    page.get_by_test_id("overflow-menu-trigger").click()
    page.get_by_role("menuitem", name="Delete").click()
    _confirm(page, "Delete")

    experiment = _get(ui, f"{API}/experiments/get", experiment_id=experiment_id)["experiment"]
    assert experiment["name"] == "experiment-renamed-in-browser"
    assert experiment["lifecycle_stage"] == "deleted"
    tags = {t["key"]: t["value"] for t in experiment.get("tags", [])}
    assert tags["mlflow.note.content"] == "Experiment described in the browser"
    history = _events(ui, f"{AUDIT}/experiments/history", experiment_id=experiment_id)
    by_browser = [e["type"] for e in history if _from_browser(e)]
    assert by_browser == ["ExperimentRenamed", "ExperimentTagSet", "ExperimentDeleted"]
    ui.assert_clean()


def test_registry_edits_in_the_ui_are_events(ui: UiPage) -> None:
    page = ui.open(f"/models/{SCRATCH_MODEL}")
    page.get_by_test_id("descriptionEditButton").click()
    page.get_by_test_id("text-area").fill("Described in the browser")
    page.get_by_test_id("editable-note-save-button").click()
    ui.expect_text("Described in the browser")

    ui.open(f"/models/{SCRATCH_MODEL}/versions/1")
    _registry_ui(ui, new=False)
    page.get_by_text("None", exact=True).first.click()  # the stage, a dropdown
    page.get_by_role("menuitem").filter(has_text="Staging").click()
    dialog = page.get_by_role("dialog").filter(has_text="Stage transition")
    dialog.get_by_role("button", name="OK").click()
    expect(dialog).to_be_hidden()
    expect(page.get_by_text("Staging", exact=True).first).to_be_visible()

    _registry_ui(ui, new=True)
    page.get_by_role("button", name="Add").first.click()
    dialog = page.get_by_role("dialog").filter(has_text="aliases")
    alias_input = dialog.locator("input").first
    alias_input.fill("candidate")
    alias_input.press("Enter")
    dialog.get_by_role("button", name="Save aliases").click()
    expect(dialog).to_be_hidden()
    ui.expect_text("candidate")

    model = _get(ui, f"{API}/registered-models/get", name=SCRATCH_MODEL)["registered_model"]
    assert model["description"] == "Described in the browser"
    version = _get(ui, f"{API}/model-versions/get", name=SCRATCH_MODEL, version="1")
    assert version["model_version"]["current_stage"] == "Staging"
    assert version["model_version"]["aliases"] == ["candidate"]
    history = _events(ui, f"{AUDIT}/registered-models/history", name=SCRATCH_MODEL)
    by_browser = [e["type"] for e in history if _from_browser(e)]
    assert by_browser == [
        "RegisteredModelDescriptionSet",
        "ModelVersionStageChanged",
        "ModelAliasSet",
    ], by_browser
    ui.assert_clean()


def test_registered_model_delete_in_the_ui(ui: UiPage) -> None:
    page = ui.open(f"/models/{DOOMED_MODEL}")
    ui.expect_text(DOOMED_MODEL)
    page.get_by_test_id("overflow-menu-trigger").click()
    page.get_by_role("menuitem", name="Delete").click()
    _confirm(page, "Delete")

    gone = requests.get(
        f"{ui.server.url}{API}/registered-models/get", params={"name": DOOMED_MODEL}, timeout=30
    )
    assert gone.status_code == 404, gone.text
    history = _events(ui, f"{AUDIT}/registered-models/history", name=DOOMED_MODEL)
    assert history[-1]["type"] == "RegisteredModelDeleted"
    assert _from_browser(history[-1]), history[-1]
    ui.assert_clean()

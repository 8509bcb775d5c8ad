"""The console in a real browser: each page renders its data, the live parts move, the
approval buttons work for a user allowed to decide and are refused for another."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime

import msgspec
import numpy as np
import requests

from ._seed import LONG_POINTS, MODEL, OTHER_MODEL, SPIKE_STEP, SPIKE_VALUE, Seeded
from .conftest import Browsing, Watched

# The scripted history of MODEL (see _seed.seed), oldest first.
SCRIPTED = [
    "RegisteredModelCreated",
    "ModelVersionCreated",
    "ModelVersionCreated",
    "ModelVersionCreated",
    "ModelVersionStageChanged",  # v1 -> Staging
    "TransitionRequested",  # v1 -> Production, by alice
    "TransitionApproved",  # by the admin
    "ModelVersionStageChanged",  # v1 -> Production
    "ModelAliasSet",  # champion -> v1
    "ModelVersionStageChanged",  # v2 -> Staging
    "TransitionRequested",  # v2 -> Production (pending, for alice)
    "TransitionRequested",  # v3 -> Production
    "TransitionRejected",
    "TransitionRequested",  # v3 -> Archived
    "TransitionCancelled",
    "TransitionRequested",  # v3 -> Staging (pending, for bob)
    "ModelAliasSet",  # champion -> v2
    "ModelAliasSet",  # challenger -> v3
]


def _dataset(watched: Watched, selector: str) -> dict[str, str]:
    found: dict[str, str] = watched.page.locator(selector).evaluate("e => ({...e.dataset})")
    return found


def _state(watched: Watched) -> dict[str, str]:
    """What the as-of panel shows: stage or alias -> its versions text."""
    rows = watched.page.locator("#stages tr[data-stage], #aliases tr[data-alias]")
    shown: dict[str, str] = rows.evaluate_all(
        """rows => Object.fromEntries(rows.map(r => [
            r.dataset.stage || '@' + r.dataset.alias, r.querySelector('td').textContent]))"""
    )
    return shown


def test_home_and_model_list(browsing: Browsing, seeded: Seeded) -> None:
    home = browsing.page(seeded.bob)
    home.goto("/console/")
    assert home.page.locator("h1").inner_text() == "evtrack console"
    assert "Signed in as bob" in home.page.locator(".who").inner_text()
    # The status page is an admin's: not offered to bob.
    assert home.page.locator('a[href="/console/status"]').count() == 0
    home.page.get_by_role("link", name=re.compile("^Models")).first.click()
    home.page.wait_for_url(re.compile(r"/console/models$"))
    row = home.page.locator(f'tr[data-model="{MODEL}"]')
    text = row.inner_text()
    assert "@champion → v2" in text and "@challenger → v3" in text, text
    assert "Production: v1" in text, text
    assert home.page.locator(f'tr[data-model="{OTHER_MODEL}"]').count() == 1
    browsing.shot(home, "models")
    home.check()


def test_timeline_lists_the_scripted_promotions(browsing: Browsing, seeded: Seeded) -> None:
    watched = browsing.page(seeded.admin)
    watched.goto(f"/console/model?name={MODEL}")
    events = watched.page.locator("#timeline li.event")
    types = events.evaluate_all("items => items.map(i => i.dataset.type)")
    assert list(reversed(types))[: len(SCRIPTED)] == SCRIPTED  # newest first on the page
    text = watched.page.locator("#timeline").inner_text()
    for line in (
        "v1: None → Staging by admin",
        "Requested v1 → Production by alice",
        "ready for prod",
        "Approved the request for v1 by admin",
        "looks good",
        "v1: Staging → Production (approved request) by admin",
        "@champion → v1 by admin",
        "Rejected the request for v3 by admin",
        "not before Staging",
        "Cancelled the request for v3 by alice",
        "@champion → v2 (was v1) by admin",
    ):
        assert line in text, line
    browsing.shot(watched, "model-timeline")
    # Every event, tags and descriptions included, on request.
    watched.page.get_by_role("link", name="Show every event").click()
    watched.page.wait_for_url(re.compile("all=true"))
    assert watched.page.locator("#timeline li.event").count() >= len(SCRIPTED)
    watched.check()


def test_as_of_picker_shows_each_instant(browsing: Browsing, seeded: Seeded) -> None:
    watched = browsing.page(seeded.bob, dark=True)
    watched.goto(f"/console/model?name={MODEL}")
    now = _state(watched)
    assert now["@champion"] == "v2" and now["@challenger"] == "v3", now

    # Right after the first stage change: v1 in Staging, nothing else.
    first_stage_change = watched.page.locator(
        '#timeline li.event[data-type="ModelVersionStageChanged"]'
    ).last
    first_stage_change.get_by_role("link").click()
    watched.page.wait_for_url(re.compile("at="))
    assert _state(watched) == {"Staging": "v1", "Production": "—", "Archived": "—"}

    # Between the two phases, picked with the date-time input: v1 is in Production and is
    # the champion; v2 is not in Staging yet and there is no challenger.
    moment = datetime.fromtimestamp(seeded.before_phase_two_ms / 1000, tz=UTC)
    watched.page.fill("#at", moment.replace(tzinfo=None).isoformat(timespec="milliseconds"))
    watched.page.get_by_role("button", name="Show").click()
    watched.page.wait_for_url(re.compile("at=.*T"))
    assert _state(watched) == {
        "Staging": "—",
        "Production": "v1",
        "Archived": "—",
        "@champion": "v1",
    }
    # The timeline marks what happened after that instant: the nine events of phase two.
    assert watched.page.locator("#timeline li.later").count() == 9
    browsing.shot(watched, "model-as-of-dark")
    watched.check()


def _approve_route_status(watched: Watched, request_id: str) -> int:
    """What the approve route answers this page's user (the call the button makes)."""
    status: int = watched.page.evaluate(
        """async ([name, id]) => (await fetch(
            '/api/2.0/evtrack/registry/transition-requests/approve',
            {method: 'POST', headers: {'Content-Type': 'application/json'},
             body: JSON.stringify({name: name, request_id: id})})).status""",
        [MODEL, request_id],
    )
    return status


def test_a_reader_sees_the_queue_but_may_not_decide(browsing: Browsing, seeded: Seeded) -> None:
    watched = browsing.page(seeded.bob, allow=(403,))
    watched.goto("/console/requests")
    row = watched.page.locator(f'tr[data-request="{seeded.request_for_bob}"]')
    assert "try v3" in row.inner_text()
    assert row.locator("button").count() == 0
    assert "needs MANAGE" in row.inner_text()
    assert _approve_route_status(watched, seeded.request_for_bob) == 403
    browsing.shot(watched, "requests-reader")
    watched.check()
    listed = seeded.call(
        seeded.admin,
        "GET",
        "evtrack/registry/transition-requests/list",
        name=MODEL,
        status="PENDING",
    ).json()["transition_requests"]
    assert seeded.request_for_bob in {r["request_id"] for r in listed}


def test_a_manager_approves_from_the_queue(browsing: Browsing, seeded: Seeded) -> None:
    watched = browsing.page(seeded.alice)
    watched.goto("/console/requests")
    browsing.shot(watched, "requests-manager")
    row = watched.page.locator(f'tr[data-request="{seeded.request_for_alice}"]')
    row.locator("input.comment").fill("ship it")
    row.get_by_role("button", name=re.compile("^Approve")).click()
    watched.page.wait_for_selector(
        f'tr[data-request="{seeded.request_for_alice}"][data-decided="approve"]'
    )
    assert "Approved" in watched.page.locator("#queue-status").inner_text()
    version = seeded.call(
        seeded.alice, "GET", "mlflow/model-versions/get", name=MODEL, version="2"
    ).json()
    assert version["model_version"]["current_stage"] == "Production"
    # The decision is in the timeline, by alice, with her comment.
    watched.goto(f"/console/model?name={MODEL}")
    newest = watched.page.locator('#timeline li.event[data-type="TransitionApproved"]').first
    assert "by alice" in newest.inner_text() and "ship it" in newest.inner_text()
    watched.check()


def test_signing_in_is_required(seeded: Seeded) -> None:
    """A browser without credentials is challenged (headless Chromium cannot show the
    prompt, so this asks as the browser's first request does)."""
    response = requests.get(f"{seeded.url}/console/requests", timeout=30)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Basic")
    assert response.headers["Content-Type"].startswith("text/html")  # a page, for a person
    assert "not authenticated" in response.text


def _ingest(seeded: Seeded, run_id: str, points: int) -> None:
    record = {
        "run_id": run_id,
        "packed": {
            "names": ["throughput"],
            "key_index": np.zeros(points, dtype="<u4").tobytes(),
            "values": np.random.default_rng(0).random(points).astype("<f8").tobytes(),
            "timestamps": np.full(points, int(time.time() * 1000), dtype="<i8").tobytes(),
            "steps": np.arange(points, dtype="<i8").tobytes(),
        },
    }
    response = requests.post(
        f"{seeded.url}/api/2.0/evtrack/ingest",
        data=msgspec.msgpack.encode([record]),
        headers={"Content-Type": "application/msgpack"},
        auth=seeded.admin.auth,
        timeout=60,
    )
    assert response.status_code == 200, response.text


def _points_per_s(watched: Watched) -> float:
    text = watched.page.locator('[data-field="ingest.points_per_s"]').inner_text()
    return 0.0 if text == "—" else float(text.replace(",", ""))


def test_status_page_is_live(browsing: Browsing, seeded: Seeded) -> None:
    watched = browsing.page(seeded.admin)
    watched.goto("/console/status")
    page = watched.page
    rows = page.locator("#read-models tr[data-read-model]")
    assert set(rows.evaluate_all("rs => rs.map(r => r.dataset.readModel)")) >= {
        "runs",
        "metrics",
        "registry",
    }
    assert "ok" in page.locator('[data-field="database.ok"]').inner_text()
    assert "ok" in page.locator('[data-field="artifacts.ok"]').inner_text()
    first = int(_dataset(watched, "main")["sequence"])
    # The live channel delivers a snapshot a second: never two seconds old.
    for _ in range(12):
        page.wait_for_timeout(250)
        assert _dataset(watched, "main")["stale"] == "false"
    assert int(_dataset(watched, "main")["sequence"]) >= first + 2

    _ingest(seeded, seeded.run_id, 100_000)
    acknowledged = time.monotonic()
    page.wait_for_function(
        """() => parseFloat(document.querySelector('[data-field="ingest.points_per_s"]')
                 .textContent.replace(/,/g, '')) >= 10000""",
        timeout=2000,
    )
    shown_after = time.monotonic() - acknowledged
    assert shown_after <= 2.0, shown_after
    assert _points_per_s(watched) >= 10_000
    browsing.shot(watched, "status")
    watched.check()


def _wait_live(watched: Watched) -> None:
    watched.page.wait_for_selector('main[data-connection="live"]')


def _streams(watched: Watched) -> list[str]:
    found: list[str] = watched.page.locator("#feed tbody tr").evaluate_all(
        "rows => rows.map(r => r.dataset.stream)"
    )
    return found


def test_feed_filters_by_type_live(browsing: Browsing, seeded: Seeded) -> None:
    watched = browsing.page(seeded.admin)
    watched.goto("/console/feed?types=ModelAliasSet")
    page = watched.page
    types = page.locator("#feed tbody tr").evaluate_all("rows => rows.map(r => r.dataset.type)")
    assert len(types) >= 3 and set(types) == {"ModelAliasSet"}, types
    _wait_live(watched)
    seeded.call(
        seeded.admin,
        "POST",
        "mlflow/registered-models/set-tag",
        {"name": MODEL, "key": "team", "value": "growth"},
    )
    seeded.call(
        seeded.admin,
        "POST",
        "mlflow/registered-models/alias",
        {"name": MODEL, "alias": "candidate", "version": "1"},
    )
    page.wait_for_function(
        "() => document.querySelector('#feed tbody tr').textContent.includes('candidate')"
    )
    types = page.locator("#feed tbody tr").evaluate_all("rows => rows.map(r => r.dataset.type)")
    assert set(types) == {"ModelAliasSet"}, types
    browsing.shot(watched, "feed")
    watched.check()


def test_feed_filters_by_experiment_and_model(browsing: Browsing, seeded: Seeded) -> None:
    by_experiment = browsing.page(seeded.admin)
    by_experiment.goto(f"/console/feed?experiment_id={seeded.other_experiment_id}")
    by_model = browsing.page(seeded.admin, dark=True)
    by_model.goto(f"/console/feed?model={OTHER_MODEL}")
    _wait_live(by_experiment)
    _wait_live(by_model)

    # Writes to the other experiment's and the other model's neighbours come first: had
    # they passed the filters, they would be on the pages before the ones that should.
    seeded.call(
        seeded.admin,
        "POST",
        "mlflow/runs/log-parameter",
        {"run_id": seeded.run_id, "key": "noise", "value": "1"},
    )
    seeded.call(
        seeded.admin,
        "POST",
        "mlflow/registered-models/set-tag",
        {"name": MODEL, "key": "noise", "value": "1"},
    )
    run = seeded.call(
        seeded.admin, "POST", "mlflow/runs/create", {"experiment_id": seeded.other_experiment_id}
    ).json()["run"]["info"]["run_id"]
    seeded.call(
        seeded.admin, "POST", "mlflow/runs/log-parameter", {"run_id": run, "key": "k", "value": "v"}
    )
    seeded.call(
        seeded.admin,
        "POST",
        "mlflow/registered-models/set-tag",
        {"name": OTHER_MODEL, "key": "owner", "value": "risk"},
    )

    by_experiment.page.wait_for_function(
        f"() => [...document.querySelectorAll('#feed tbody tr')]"
        f".some(r => r.dataset.stream === 'run-{run}' && r.dataset.type === 'RunDataLogged')"
    )
    streams = set(_streams(by_experiment))
    assert streams <= {f"experiment-{seeded.other_experiment_id}", f"run-{run}"}, streams
    assert f"run-{run}" in streams

    by_model.page.wait_for_function(
        "() => [...document.querySelectorAll('#feed tbody tr')]"
        ".some(r => r.dataset.type === 'RegisteredModelTagSet')"
    )
    streams = set(_streams(by_model))
    assert len(streams) == 1, streams  # the other model's one stream; never MODEL's
    assert "key=owner value=risk" in by_model.page.locator("#feed tbody tr").first.inner_text()
    browsing.shot(by_model, "feed-model-dark")
    by_experiment.check()
    by_model.check()


_INK = """([r, g, b]) => {
    const canvas = document.getElementById('chart');
    const ratio = canvas.width / canvas.clientWidth;
    const [left, top, width, height] = canvas.dataset.plot.split(',').map(Number);
    const x0 = Math.round(left * ratio), y0 = Math.round(top * ratio);
    const w = Math.round(width * ratio), h = Math.round(height * ratio);
    // The top tenth of the plot: only a value near the maximum reaches it.
    const band = Math.max(1, Math.round(h / 10));
    const pixels = canvas.getContext('2d').getImageData(x0, y0, w, band).data;
    const columns = new Set();
    for (let y = 0; y < band; y += 1) {
        for (let x = 0; x < w; x += 1) {
            const i = (y * w + x) * 4;
            const near = Math.abs(pixels[i] - r) + Math.abs(pixels[i + 1] - g)
                + Math.abs(pixels[i + 2] - b);
            if (near < 60) columns.add(x);
        }
    }
    return {columns: [...columns].sort((a, b) => a - b), width: w};
}"""


def _line_color(watched: Watched) -> list[int]:
    color: list[int] = watched.page.evaluate(
        """() => {
            const probe = document.createElement('div');
            probe.style.color = getComputedStyle(document.documentElement)
                .getPropertyValue('--plot-line');
            document.body.append(probe);
            const rgb = getComputedStyle(probe).color.match(/\\d+/g).map(Number);
            probe.remove();
            return rgb.slice(0, 3);
        }"""
    )
    return color


def _explore(watched: Watched, low: int, high: int) -> dict[str, str]:
    shown: dict[str, str] = watched.page.evaluate(
        "([lo, hi]) => document.getElementById('chart').explore(lo, hi)", [low, high]
    )
    return shown


def test_explorer_draws_a_million_points_and_keeps_the_spike(
    browsing: Browsing, seeded: Seeded
) -> None:
    for dark in (False, True):
        watched = browsing.page(seeded.admin, dark=dark)
        watched.goto(f"/console/explorer?run_id={seeded.long_run_id}&key=loss")
        page = watched.page
        page.wait_for_selector('#chart[data-state="drawn"]')
        shown = _dataset(watched, "#chart")
        assert shown["mode"] == "buckets"
        assert int(shown["points"]) == LONG_POINTS + 1
        assert float(shown["maxValue"]) == SPIKE_VALUE
        assert int(shown["maxStep"]) == SPIKE_STEP

        # On the canvas: exactly one narrow column of ink reaches the top of the plot, where
        # the spike's step is.
        ink = page.evaluate(_INK, _line_color(watched))
        columns = ink["columns"]
        assert columns, "nothing drawn near the maximum"
        assert columns[-1] - columns[0] <= 3, columns
        expected = (SPIKE_STEP / (LONG_POINTS - 1)) * ink["width"]
        assert abs(columns[0] - expected) <= 3, (columns, expected)
        browsing.shot(watched, f"explorer-{'dark' if dark else 'light'}")
        watched.check()

    # Zoomed to a window that fits: the raw points, the spike among them.
    zoomed = _explore(watched, SPIKE_STEP - 200, SPIKE_STEP + 200)
    assert zoomed["mode"] == "raw"
    assert int(zoomed["points"]) == 402  # 401 steps, and the spike's second value
    assert float(zoomed["maxValue"]) == SPIKE_VALUE
    browsing.shot(watched, "explorer-zoomed-dark")

    # Keyboard: 0 shows the whole series, + halves the window around its middle.
    canvas = watched.page.locator("#chart")
    canvas.focus()
    canvas.press("0")
    watched.page.wait_for_function(
        f"() => document.getElementById('chart').dataset.windowEnd === '{LONG_POINTS - 1}'"
        " && document.getElementById('chart').dataset.state === 'drawn'"
    )
    canvas.press("+")
    watched.page.wait_for_function(
        f"() => Number(document.getElementById('chart').dataset.windowEnd) < {LONG_POINTS - 1}"
        " && document.getElementById('chart').dataset.state === 'drawn'"
    )
    after = _dataset(watched, "#chart")
    width = int(after["windowEnd"]) - int(after["windowStart"])
    assert abs(width - (LONG_POINTS - 1) / 2) <= 2, after
    watched.check()


def test_pages_carry_no_inline_code(browsing: Browsing, seeded: Seeded) -> None:
    """The policy forbids inline script and style; a page that needed them would log a
    violation (a console error, which fails every test above). Check the markup too."""
    paths = [
        "/console/",
        "/console/models",
        f"/console/model?name={MODEL}",
        "/console/requests",
        "/console/status",
        "/console/feed",
        f"/console/explorer?run_id={seeded.long_run_id}",
    ]
    for path in paths:
        response = requests.get(f"{seeded.url}{path}", auth=seeded.admin.auth, timeout=30)
        assert response.status_code == 200, (path, response.text[:300])
        policy = response.headers["Content-Security-Policy"]
        assert "script-src 'self'" in policy and "unsafe" not in policy, policy
        assert not re.search(r"<script(?![^>]*\ssrc=)", response.text), path
        assert " style=" not in response.text and "<style" not in response.text, path
        for tag in re.findall(r"<[^>]+>", response.text):
            assert not re.search(r"\son[a-z]+=", tag), (path, tag)  # no inline handlers

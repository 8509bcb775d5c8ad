"""The console's targets (issue 10), in headless Debian Chromium on this machine:

- the timeline of a model with 1,000 transitions: <= 500 ms (navigation to load);
- the explorer: a 1,000,000-point metric drawn in <= 1 s, a zoom redrawn in <= 300 ms;
- at most 150 KB of gzipped JavaScript on a console page.

    python benchmarks/console.py [--database-url URL] [--repeat 5] [--out FILE.md]

It starts ``evtrack server`` on a fresh database, records the transitions through the MLflow
REST routes and the million points through native ingest (with one spike), waits for the
read models, then opens the pages in Chromium (``/usr/bin/chromium``, never a downloaded
build) and reads the timings the pages themselves take (Navigation Timing; the explorer's
``data-drawn-at``). Needs the test extra (playwright) and psycopg2 (the bench extra).
"""

from __future__ import annotations

import argparse
import gzip
import re
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import say
from _servers import Databases, evtrack_server, python_executable

POINTS = 1_000_000
SPIKE_STEP = 777_777
TRANSITIONS = 1000
CHROMIUM = "/usr/bin/chromium"


def _call(session: requests.Session, url: str, method: str, path: str, body: Any) -> Any:
    response = session.request(method, f"{url}/api/2.0/{path}", json=body, timeout=60)
    if response.status_code != 200:
        raise RuntimeError(f"{path}: {response.status_code} {response.text[:300]}")
    return response.json()


def seed(url: str) -> tuple[str, str]:
    """A model with TRANSITIONS stage changes, and a run with a POINTS-point metric."""
    session = requests.Session()
    name = f"bench-{uuid.uuid4().hex[:6]}"
    experiment = _call(session, url, "POST", "mlflow/experiments/create", {"name": name})
    run = _call(
        session,
        url,
        "POST",
        "mlflow/runs/create",
        {"experiment_id": experiment["experiment_id"]},
    )["run"]["info"]["run_id"]
    _call(session, url, "POST", "mlflow/registered-models/create", {"name": name})
    for _ in range(2):
        _call(
            session,
            url,
            "POST",
            "mlflow/model-versions/create",
            {"name": name, "source": f"runs:/{run}/model", "run_id": run},
        )
    started = time.monotonic()
    stages = ("Staging", "Production", "Archived", "Staging")
    for i in range(TRANSITIONS):
        _call(
            session,
            url,
            "POST",
            "mlflow/model-versions/transition-stage",
            {"name": name, "version": str(1 + i % 2), "stage": stages[i % 4]},
        )
    say(f"{TRANSITIONS} transitions in {time.monotonic() - started:.1f} s")
    values = np.random.default_rng(7).random(POINTS)
    values[SPIKE_STEP] = 100.0
    started = time.monotonic()
    for part in range(4):
        piece = slice(part * POINTS // 4, (part + 1) * POINTS // 4)
        steps = np.arange(POINTS, dtype="<i8")[piece]
        record = {
            "run_id": run,
            "packed": {
                "names": ["loss"],
                "key_index": np.zeros(len(steps), dtype="<u4").tobytes(),
                "values": values[piece].astype("<f8").tobytes(),
                "timestamps": (1_700_000_000_000 + steps).astype("<i8").tobytes(),
                "steps": steps.tobytes(),
            },
        }
        response = session.post(
            f"{url}/api/2.0/evtrack/ingest",
            data=msgspec.msgpack.encode([record]),
            headers={"Content-Type": "application/msgpack"},
            timeout=120,
        )
        if response.status_code != 200:
            raise RuntimeError(response.text[:300])
    say(f"{POINTS:,} points ingested in {time.monotonic() - started:.1f} s")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        listed = session.get(
            f"{url}/api/2.0/evtrack/metrics/series", params={"run_id": run}, timeout=60
        ).json()
        if listed["series"] and listed["series"][0]["points"] == POINTS:
            break
        time.sleep(0.2)
    return name, run


def _navigation_ms(page: Any) -> float:
    timing: float = page.evaluate(
        "() => performance.getEntriesByType('navigation')[0].loadEventEnd"
    )
    return timing


def measure(url: str, model: str, run: str, repeat: int) -> list[tuple[str, float, str, bool]]:
    from playwright.sync_api import sync_playwright

    rows: list[tuple[str, float, str, bool]] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM)
        page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()

        timeline = []
        for _ in range(repeat):
            page.goto(f"{url}/console/model?name={model}&all=true")
            timeline.append(_navigation_ms(page))
        shown = page.locator("#timeline li.event").count()
        best = statistics.median(timeline)
        rows.append(
            (
                f"timeline of {shown:,} events: navigation to load, median",
                best,
                "<= 500",
                best <= 500,
            )
        )

        drawn, fetched = [], []
        for _ in range(repeat):
            page.goto(f"{url}/console/explorer?run_id={run}&key=loss")
            page.wait_for_selector('#chart[data-state="drawn"]', timeout=60_000)
            data = page.locator("#chart").evaluate("c => ({...c.dataset})")
            drawn.append(float(data["drawnAt"]))
            fetched.append(float(data["totalMs"]))
        best = statistics.median(drawn)
        rows.append(
            (
                f"explorer {POINTS:,} points: navigation to drawn, median",
                best,
                "<= 1000",
                best <= 1000,
            )
        )
        rows.append(
            ("explorer: buckets fetched and drawn, median", statistics.median(fetched), "", True)
        )

        windows = {
            "half the series": (0, POINTS // 2),
            "a tenth": (SPIKE_STEP - POINTS // 20, SPIKE_STEP + POINTS // 20),
            "a hundredth": (SPIKE_STEP - POINTS // 200, SPIKE_STEP + POINTS // 200),
            "raw points (1,001 steps)": (SPIKE_STEP - 500, SPIKE_STEP + 500),
        }
        for label, (low, high) in windows.items():
            times = []
            for _ in range(repeat):
                page.evaluate("() => document.getElementById('chart').explore(0, 999999)")
                times.append(
                    page.evaluate(
                        """async ([lo, hi]) => {
                            const t = performance.now();
                            await document.getElementById('chart').explore(lo, hi);
                            return performance.now() - t; }""",
                        [low, high],
                    )
                )
            best = statistics.median(times)
            rows.append((f"zoom to {label}: redrawn, median", best, "<= 300", best <= 300))

        for path in ("/console/status", "/console/feed", f"/console/explorer?run_id={run}"):
            html = requests.get(f"{url}{path}", timeout=60).text
            scripts = set(re.findall(r'<script type="module" src="([^"]+)"', html))
            scripts.add("/console/static/live.js")
            size = sum(
                len(gzip.compress(requests.get(f"{url}{s}", timeout=60).content)) for s in scripts
            )
            rows.append(
                (
                    f"gzipped JavaScript on {path.split('?')[0]} (KB)",
                    size / 1000,
                    "<= 150",
                    size <= 150_000,
                )
            )
        browser.close()
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--out", type=Path, help="also write the table here (Markdown)")
    args = parser.parse_args()
    databases = Databases(args.database_url)
    with tempfile.TemporaryDirectory() as work:
        server = evtrack_server(
            databases.create(f"bench_console_{uuid.uuid4().hex[:6]}"),
            Path(work),
            python_executable(),
        )
        try:
            server.start()
            server.wait_healthy(60)
            model, run = seed(server.url)
            rows = measure(server.url, model, run, args.repeat)
        finally:
            server.stop()
            databases.drop_all()
    lines = ["| what | ms (or KB) | target | result |", "|---|---:|---|---|"]
    lines += [
        f"| {what} | {value:,.1f} | {target} | {'pass' if ok else 'MISS'} |"
        for what, value, target, ok in rows
    ]
    table = "\n".join(lines)
    print(table)
    if args.out:
        args.out.write_text(table + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

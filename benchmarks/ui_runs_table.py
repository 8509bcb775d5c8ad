"""MLflow's UI runs table over an experiment with 100,000 runs (issue 10): first page <= 2 s.

    python benchmarks/ui_runs_table.py [--runs 100000] [--repeat 5] [--database-url URL]
                                       [--out FILE.md]

Starts ``evtrack server`` and the reference ``mlflow server`` (serving its own UI, the same
bundle evtrack serves) on fresh PostgreSQL databases and seeds one experiment with ``--runs``
runs in each, every run with 3 params, 2 tags (plus ``mlflow.runName``/``mlflow.user``), 2
metrics and status FINISHED:

- evtrack: native ingest (``POST /api/2.0/evtrack/ingest``, MessagePack, 1,000 runs a request,
  each record with ``start``, ``params``, ``tags``, ``metrics`` and ``end``), then a wait until
  the read models include every event;
- the reference: the experiment is created over REST, then the runs, params, tags, metrics and
  latest metrics are written by five ``INSERT ... SELECT FROM generate_series`` statements
  against the schema the server itself migrated (creating 100,000 runs over REST would take
  hours), then ``ANALYZE``.

Then it opens ``/#/experiments/<id>/runs`` in headless Chromium (``/usr/bin/chromium``, never a
downloaded build) for each server, interleaved (evtrack, mlflow, evtrack, ...), ``--repeat``
times after one unmeasured warm-up each, and reads in the page the moment the newest run's
name shows in the table's first page (``performance.now()``, measured from navigation start;
the browser cache is warm, as for a user coming back). It also reports the duration of the
page's ``runs/search`` request(s) and the same request replayed with ``requests``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import msgspec
import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import BenchmarkError, say
from _servers import (
    Databases,
    Server,
    Sql,
    evtrack_server,
    mlflow_server,
    python_executable,
    wait_for_projections,
)

CHROMIUM = "/usr/bin/chromium"
TARGET_MS = 2000.0
BATCH = 1000
T0_MS = 1_700_000_000_000
EXPERIMENT = "bench-runs-table"

# Resolves with performance.now() once a row of the table's first page shows ``name``.
_ROW_VISIBLE = """(name) => {
    for (const cell of document.querySelectorAll('.ag-root .ag-row')) {
        if (cell.textContent.includes(name) && cell.getClientRects().length) {
            return performance.now();
        }
    }
    return false;
}"""

_SEARCH_TIMINGS = """() => performance.getEntriesByType('resource')
    .filter(e => e.name.includes('/runs/search'))
    .map(e => [e.startTime, e.responseEnd])"""

_API_TIMINGS = """() => performance.getEntriesByType('resource')
    .filter(e => e.name.includes('api/2.0/') || e.name.includes('api/3.0/'))
    .map(e => [new URL(e.name).pathname, e.startTime, e.responseEnd])"""


def run_name(i: int) -> str:
    return f"run-{i:06d}"


# --------------------------------------------------------------------------------- seeding


def seed_evtrack(server: Server, runs: int) -> str:
    session = requests.Session()
    created = session.post(
        f"{server.url}/api/2.0/mlflow/experiments/create", json={"name": EXPERIMENT}, timeout=60
    )
    created.raise_for_status()
    experiment_id = str(created.json()["experiment_id"])
    started = time.monotonic()
    for first in range(1, runs + 1, BATCH):
        records = []
        for i in range(first, min(first + BATCH, runs + 1)):
            t = T0_MS + i * 1000
            records.append(
                {
                    "run_id": uuid.uuid4().hex,
                    "start": {
                        "experiment_id": experiment_id,
                        "run_name": run_name(i),
                        "user_id": "bench",
                        "start_time": t,
                    },
                    "params": [
                        {"key": "lr", "value": str(0.001 * (i % 10 + 1))},
                        {"key": "batch_size", "value": str(32 * (i % 4 + 1))},
                        {"key": "optimizer", "value": ("adam", "sgd")[i % 2]},
                    ],
                    "tags": [
                        {"key": "team", "value": f"team-{i % 7}"},
                        {"key": "stage", "value": "bench"},
                    ],
                    "metrics": {
                        "keys": ["loss", "accuracy"],
                        "values": [1.0 / i, (i % 1000) / 1000],
                        "timestamps": [t + 500, t + 500],
                        "steps": [0, 0],
                    },
                    "end": {"status": "FINISHED", "end_time": t + 900},
                }
            )
        body = msgspec.msgpack.encode(records)
        key = f"uibench-{experiment_id}-{first}"
        while True:
            response = session.post(
                f"{server.url}/api/2.0/evtrack/ingest",
                data=body,
                headers={"Content-Type": "application/msgpack", "Idempotency-Key": key},
                timeout=300,
            )
            if response.status_code == 429:
                time.sleep(float(response.headers.get("Retry-After", "1")))
                continue
            if response.status_code != 200:
                raise BenchmarkError(f"ingest: {response.status_code} {response.text[:300]}")
            break
    say(f"evtrack: {runs:,} runs ingested in {time.monotonic() - started:.1f} s")
    sql = Sql(server.db_url)
    try:
        waited = wait_for_projections(sql, 1800, names=("runs",))
        say(f"evtrack: read models caught up {waited:.1f} s later")
    finally:
        sql.close()
    return experiment_id


def seed_mlflow(server: Server, runs: int) -> str:
    created = requests.post(
        f"{server.url}/api/2.0/mlflow/experiments/create", json={"name": EXPERIMENT}, timeout=60
    )
    created.raise_for_status()
    experiment_id = str(created.json()["experiment_id"])
    started = time.monotonic()
    sql = Sql(server.db_url)
    uid = "md5('uibench-' || i)"  # 32 hex digits, like MLflow's run ids
    t = f"({T0_MS}::bigint + i * 1000)"
    series = f"FROM generate_series(1, {int(runs)}) AS i"
    try:
        sql.execute(
            f"""INSERT INTO runs (run_uuid, name, source_type, source_name, entry_point_name,
                    user_id, status, start_time, end_time, source_version, lifecycle_stage,
                    artifact_uri, experiment_id)
                SELECT {uid}, 'run-' || lpad(i::text, 6, '0'), 'LOCAL', '', '', 'bench',
                    'FINISHED', {t}, {t} + 900, '', 'active',
                    'mlflow-artifacts:/' || %s || '/' || {uid} || '/artifacts', %s::int
                {series}""",
            experiment_id,
            experiment_id,
        )
        sql.execute(
            f"""INSERT INTO params (key, value, run_uuid)
                SELECT k, v, {uid} {series},
                LATERAL (VALUES ('lr', (0.001 * (i % 10 + 1))::text),
                                ('batch_size', (32 * (i % 4 + 1))::text),
                                ('optimizer', CASE WHEN i % 2 = 0 THEN 'adam' ELSE 'sgd' END))
                    AS p(k, v)"""
        )
        sql.execute(
            f"""INSERT INTO tags (key, value, run_uuid)
                SELECT k, v, {uid} {series},
                LATERAL (VALUES ('team', 'team-' || (i % 7)), ('stage', 'bench'),
                                ('mlflow.runName', 'run-' || lpad(i::text, 6, '0')),
                                ('mlflow.user', 'bench')) AS p(k, v)"""
        )
        for table in ("metrics", "latest_metrics"):
            sql.execute(
                f"""INSERT INTO {table} (key, value, timestamp, step, is_nan, run_uuid)
                    SELECT k, v, {t} + 500, 0, false, {uid} {series},
                    LATERAL (VALUES ('loss', 1.0 / i), ('accuracy', (i % 1000) / 1000.0))
                        AS p(k, v)"""
            )
        for table in ("runs", "params", "tags", "metrics", "latest_metrics"):
            sql.execute(f"ANALYZE {table}")
    finally:
        sql.close()
    say(f"mlflow: {runs:,} runs inserted by SQL in {time.monotonic() - started:.1f} s")
    return experiment_id


# --------------------------------------------------------------------------------- measuring


def _close_assistant_panel(page: Any) -> None:
    """MLflow's UI opens its AI-assistant panel on a context's first visit; close it once."""
    close = page.locator('[data-component-id="mlflow.assistant.chat_panel.close"]')
    try:
        close.wait_for(state="visible", timeout=5000)
        close.click()
    except Exception:
        pass


def _load(
    page: Any, url: str, newest: str
) -> tuple[float, list[tuple[float, float]], list[tuple[str, float, float]]]:
    """One navigation: when the newest run showed, each runs/search (sent, answered) and each
    API call (path, sent, answered), all in ms since navigation start."""
    page.goto("about:blank")
    page.goto(url, wait_until="commit")
    handle = page.wait_for_function(_ROW_VISIBLE, arg=newest, polling="raf", timeout=120_000)
    shown: float = handle.json_value()
    searches: list[tuple[float, float]] = [tuple(e) for e in page.evaluate(_SEARCH_TIMINGS)]
    api: list[tuple[str, float, float]] = [tuple(e) for e in page.evaluate(_API_TIMINGS)]
    return shown, searches, api


def measure(
    targets: dict[str, tuple[str, str]], runs: int, repeat: int
) -> tuple[dict[str, list[float]], dict[str, list[float]], dict[str, list[float]], dict[str, Any]]:
    """Per server: first-page times, the page's runs/search durations, when the first
    runs/search left the page, when the last API answer before the rows arrived, and one
    captured runs/search request."""
    from playwright.sync_api import sync_playwright

    newest = run_name(runs)
    shown: dict[str, list[float]] = {name: [] for name in targets}
    searches: dict[str, list[float]] = {name: [] for name in targets}
    sent: dict[str, list[float]] = {name: [] for name in targets}
    last_api: dict[str, list[float]] = {name: [] for name in targets}
    bodies: dict[str, Any] = {}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM)
        pages = {}
        for name, (base, experiment_id) in targets.items():
            page = browser.new_context(viewport={"width": 1440, "height": 900}).new_page()

            def capture(request: Any, name: str = name) -> None:
                if "/runs/search" in request.url and name not in bodies:
                    bodies[name] = (request.url, request.post_data)

            page.on("request", capture)
            page.goto(f"{base}/#/experiments/{experiment_id}/runs")
            _close_assistant_panel(page)
            _load(page, f"{base}/#/experiments/{experiment_id}/runs", newest)  # warm-up
            pages[name] = page
        for attempt in range(repeat):
            for name, (base, experiment_id) in targets.items():
                route = f"{base}/#/experiments/{experiment_id}/runs"
                ms, calls, api = _load(pages[name], route, newest)
                before = [end for _, _, end in api if end <= ms]
                if before:
                    last_api[name].append(max(before))
                if attempt == 0:
                    say(
                        f"  {name} API calls (path sent-answered ms): "
                        + "; ".join(
                            f"{p} {a:.0f}-{b:.0f}" for p, a, b in sorted(api, key=lambda x: x[1])
                        )
                    )
                shown[name].append(ms)
                searches[name].extend(end - start for start, end in calls)
                if calls:
                    sent[name].append(min(start for start, _ in calls))
                say(
                    f"  {name} #{attempt + 1}: first page in {ms:.0f} ms (runs/search "
                    + ", ".join(f"sent {s:.0f} answered {e:.0f}" for s, e in calls)
                    + ")"
                )
        browser.close()
    return shown, searches, sent, last_api, bodies


def replay(url: str, body: str | None, repeat: int) -> list[float]:
    """The page's runs/search request, sent ``repeat`` times with requests; ms each."""
    times = []
    session = requests.Session()
    for _ in range(repeat):
        t = time.perf_counter()
        response = session.post(
            url, data=body or "{}", headers={"Content-Type": "application/json"}, timeout=120
        )
        times.append((time.perf_counter() - t) * 1000)
        if response.status_code != 200:
            raise BenchmarkError(f"replay {url}: {response.status_code} {response.text[:200]}")
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--mlflow-workers", type=int, default=1)
    parser.add_argument("--out", type=Path, help="also write the report here (Markdown)")
    args = parser.parse_args()
    os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
    load_before = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    say(f"load: {load_before}")
    databases = Databases(args.database_url)
    tag = uuid.uuid4().hex[:6]
    with tempfile.TemporaryDirectory() as work:
        evtrack = evtrack_server(
            databases.create(f"bench_uirt_ev_{tag}"), Path(work), python_executable()
        )
        mlflow = mlflow_server(
            databases.create(f"bench_uirt_ml_{tag}"),
            Path(work),
            python_executable(),
            args.mlflow_workers,
        )
        try:
            for server in (evtrack, mlflow):
                server.start()
                server.wait_healthy(120)
            targets = {
                "evtrack": (evtrack.url, seed_evtrack(evtrack, args.runs)),
                "mlflow": (mlflow.url, seed_mlflow(mlflow, args.runs)),
            }
            shown, searches, sent, last_api, bodies = measure(targets, args.runs, args.repeat)
            replayed = {
                name: replay(bodies[name][0], bodies[name][1], args.repeat)
                for name in targets
                if name in bodies
            }
        finally:
            for server in (evtrack, mlflow):
                server.stop()
            databases.drop_all()
    load_after = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()

    def med(values: list[float]) -> float:
        return statistics.median(values) if values else float("nan")

    rows = [
        ("first page of rows shown (navigation start), median", shown),
        ("first runs/search sent by the page (navigation start), median", sent),
        ("the page's runs/search request(s), median", searches),
        ("last API answer before the rows showed (navigation start), median", last_api),
        ("runs/search replayed with requests, median", replayed),
    ]
    lines = [
        f"Runs table of one experiment with {args.runs:,} runs, headless Chromium, "
        f"{args.repeat} interleaved loads per server after a warm-up (warm browser cache).",
        "",
        "| what | evtrack ms | mlflow ms | mlflow / evtrack |",
        "|---|---:|---:|---:|",
    ]
    for label, values in rows:
        e, m = med(values.get("evtrack", [])), med(values.get("mlflow", []))
        lines.append(f"| {label} | {e:,.0f} | {m:,.0f} | {m / e:.2f} |")
    verdict = "pass" if med(shown["evtrack"]) <= TARGET_MS else "MISS"
    lines += [
        "",
        f"Target: evtrack's first page <= {TARGET_MS:,.0f} ms: **{verdict}**.",
        "",
        "All samples (ms): "
        + "; ".join(f"{n} {', '.join(f'{v:.0f}' for v in shown[n])}" for n in shown),
        "",
        f"The UI's runs/search request: `{json.dumps(bodies.get('evtrack', ('', ''))[1])}`",
        "",
        f"Load before: `{load_before}`",
        f"Load after: `{load_after}`",
    ]
    report = "\n".join(lines)
    print(report)
    if args.out:
        args.out.write_text(report + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

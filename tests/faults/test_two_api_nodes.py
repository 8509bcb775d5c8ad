"""Two API processes on one database, with writers racing on the same runs and the same
registered model through both (invariants 5 and 6).

Both nodes run projectors too, so the leases are contended as in a real deployment. Nothing
may be lost or duplicated, version numbers must be unique and dense (1..N with no gap),
Staging and Production must each hold at most one version (every move there archives the
previous holder), both nodes must answer the same, and the read models must equal a fresh
rebuild from the log.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from typing import Any

import requests
from _support.server import EvtrackServer

from ._load import (
    Answers,
    BatchWriter,
    RegistryWriter,
    create_experiment,
    create_model,
    create_run,
)
from ._read_models import compare_with_rebuild, wait_caught_up
from ._tally import tally

MODEL = "shared-model"


def _versions(url: str) -> list[dict[str, Any]]:
    answer = requests.get(
        f"{url}/api/2.0/mlflow/model-versions/search",
        params={"filter": f"name='{MODEL}'", "max_results": 1000},
        timeout=30,
    )
    answer.raise_for_status()
    versions: list[dict[str, Any]] = answer.json().get("model_versions", [])
    return sorted(
        ({k: v[k] for k in ("version", "current_stage")} for v in versions),
        key=lambda v: int(v["version"]),
    )


def _alias(url: str) -> str:
    answer = requests.get(
        f"{url}/api/2.0/mlflow/registered-models/alias",
        params={"name": MODEL, "alias": "champion"},
        timeout=30,
    )
    answer.raise_for_status()
    return str(answer.json()["model_version"]["version"])


def _history_steps(url: str, run_id: str) -> list[int]:
    answer = requests.get(
        f"{url}/api/2.0/mlflow/metrics/get-history",
        params={"run_id": run_id, "metric_key": "loss", "max_results": 1_000_000},
        timeout=60,
    )
    answer.raise_for_status()
    return sorted(int(m["step"]) for m in answer.json().get("metrics", []))


def test_two_api_nodes_racing_on_the_same_runs_and_model(
    evtrack_server_factory: Callable[..., EvtrackServer],
) -> None:
    node_a = evtrack_server_factory()
    node_b = evtrack_server_factory()  # same database, same artifacts
    urls = [node_a.url, node_b.url]
    experiment_id = create_experiment(node_a.url, "two-nodes")
    runs = [create_run(node_a.url, experiment_id), create_run(node_b.url, experiment_id)]
    create_model(node_b.url, MODEL)
    answers = Answers()
    writers = []
    for r, run_id in enumerate(runs):
        # Two log_batch writers and one native ingest writer per run, each alternating
        # between the nodes, on disjoint steps so every point is distinct.
        writers += [
            BatchWriter(urls, run_id, answers, size=200, first_step=0, max_batches=30),
            BatchWriter(urls[::-1], run_id, answers, size=200, first_step=10**6, max_batches=30),
            BatchWriter(
                urls[r:] + urls[:r],
                run_id,
                answers,
                kind="ingest",
                size=2000,
                first_step=2 * 10**6,
                max_batches=15,
            ),
        ]
    registries = [
        RegistryWriter(urls, MODEL, runs[0], answers, versions=15),
        RegistryWriter(urls[::-1], MODEL, runs[1], answers, versions=15),
    ]
    load = [*writers, *registries]
    for thread in load:
        thread.start()
    try:
        for thread in load:
            thread.join(120)
    finally:
        for writer in writers:
            writer.give_up.set()
        for registry in registries:
            registry.stop.set()
    assert not any(thread.is_alive() for thread in load)
    print(f"two nodes: {answers.summary()}")
    assert answers.unexpected == [], answers.unexpected[:5]
    assert answers.statuses() == {200}, answers.summary()
    wait_caught_up(node_a.dsn)

    for r, run_id in enumerate(runs):
        mine = [w for w in writers if w.run_id == run_id]
        tally(
            f"two API nodes, 3 writers on shared run {r + 1}",
            node_a.dsn,
            [run_id],
            sent=sum(w.sent for w in mine),
            acknowledged=sum(w.acknowledged for w in mine),
        ).check()
        # Both nodes serve the whole series.
        expected = sorted(s for w in mine for s in range(w.step - w.sent, w.step))
        assert _history_steps(node_a.url, run_id) == expected
        assert _history_steps(node_b.url, run_id) == expected

    created = [v for r in registries for v in r.created]
    assert len(created) == 30
    assert sorted(created) == list(range(1, 31)), "version numbers not unique and dense"
    seen_a, seen_b = _versions(node_a.url), _versions(node_b.url)
    assert seen_a == seen_b
    assert [int(v["version"]) for v in seen_a] == list(range(1, 31))
    stages = collections.Counter(v["current_stage"] for v in seen_a)
    assert stages["Production"] <= 1 and stages["Staging"] <= 1, stages
    assert _alias(node_a.url) == _alias(node_b.url)
    print(f"versions 1..{len(created)}, stages {dict(stages)}, champion v{_alias(node_a.url)}")

    figures = compare_with_rebuild(node_a.dsn)
    print(f"read models equal a fresh rebuild: {figures}")

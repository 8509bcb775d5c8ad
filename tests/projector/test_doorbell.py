"""The doorbell wakes only the projectors that handle what was committed."""

from __future__ import annotations

import json

from evtrack.projections.registry import all_projections
from evtrack.projector import ProjectorRuntime


def _rung(runtime: ProjectorRuntime) -> set[str]:
    rung = {name for name, bell in runtime._bells.items() if bell.is_set()}
    for bell in runtime._bells.values():
        bell.clear()
    return rung


def test_commits_wake_the_projections_handling_their_event_types() -> None:
    runtime = ProjectorRuntime("postgresql://unused", all_projections())
    runtime.ring({"RunDataLogged"})
    assert _rung(runtime) == {"runs", "metrics", "logged_models"}
    runtime.ring({"ModelVersionStageChanged"})
    assert _rung(runtime) == {"registry"}
    runtime.ring()
    assert _rung(runtime) == set(runtime.projections)


def test_notifications_from_other_processes_ring_by_type_and_by_name() -> None:
    runtime = ProjectorRuntime("postgresql://unused", all_projections())
    other = json.dumps({"from": "another-process", "types": ["ExperimentCreated"]})
    runtime._on_notify(other)
    assert _rung(runtime) == {"experiments", "auth"}  # the creator becomes its owner
    runtime._on_notify(runtime.doorbell_payload(["ExperimentCreated"]))
    assert _rung(runtime) == set()  # its own NOTIFY: those bells were rung locally already
    runtime._on_notify(json.dumps({"from": "freshness", "projections": ["registry"]}))
    assert _rung(runtime) == {"registry"}
    runtime._on_notify("")  # an old server's bare NOTIFY
    assert _rung(runtime) == set(runtime.projections)

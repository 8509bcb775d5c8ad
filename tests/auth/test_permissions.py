"""Per-resource permissions: creators own, others get the default, grants and DENY change that,
searches show only what the caller may read, and the approval flow checks real identities."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import pytest
import requests
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from auth.conftest import User, new_user


def _client(monkeypatch: pytest.MonkeyPatch, user: User) -> MlflowClient:
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", user.name)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", user.password)
    monkeypatch.delenv("MLFLOW_TRACKING_TOKEN", raising=False)
    return MlflowClient(tracking_uri=user.server.url, registry_uri=user.server.url)


def _grant(by: User, to: User, kind: str, resource: str, permission: str) -> None:
    resp = by.call(
        "POST",
        "mlflow/users/permissions/grant",
        {
            "username": to.name,
            "resource_type": kind,
            "resource_id": resource,
            "permission": permission,
        },
        api="3.0",
    )
    assert resp.status_code == 200, resp.text


def _denied(action: Any) -> None:
    with pytest.raises(MlflowException) as err:
        action()
    assert err.value.error_code == "PERMISSION_DENIED", err.value


def test_creator_manages_others_read_until_granted(
    admin: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice, bob = new_user(admin, "alice"), new_user(admin, "bob")
    as_alice = _client(monkeypatch, alice)
    experiment = as_alice.create_experiment(f"exp-{uuid.uuid4().hex[:8]}")
    run = as_alice.create_run(experiment)
    as_alice.log_metric(run.info.run_id, "loss", 1.0)

    level = alice.call(
        "GET",
        "mlflow/users/permissions/get",
        api="3.0",
        username=alice.name,
        resource_type="experiment",
        resource_id=experiment,
    ).json()
    assert level == {"allowed": True, "permission": "MANAGE"}

    as_bob = _client(monkeypatch, bob)
    assert as_bob.get_run(run.info.run_id).data.metrics == {"loss": 1.0}  # default READ
    _denied(lambda: as_bob.log_metric(run.info.run_id, "loss", 2.0))
    _denied(lambda: as_bob.create_run(experiment))
    _denied(lambda: as_bob.set_experiment_tag(experiment, "k", "v"))
    _denied(lambda: as_bob.delete_experiment(experiment))
    # Bob cannot grant himself anything on alice's experiment.
    resp = bob.call(
        "POST",
        "mlflow/users/permissions/grant",
        {
            "username": bob.name,
            "resource_type": "experiment",
            "resource_id": experiment,
            "permission": "MANAGE",
        },
        api="3.0",
    )
    assert resp.status_code == 403

    _grant(alice, bob, "experiment", experiment, "EDIT")
    as_bob = _client(monkeypatch, bob)
    as_bob.log_metric(run.info.run_id, "loss", 2.0)
    as_bob.create_run(experiment)
    _denied(lambda: as_bob.delete_experiment(experiment))  # EDIT is not MANAGE
    history = as_bob.get_metric_history(run.info.run_id, "loss")
    assert [m.value for m in history] == [1.0, 2.0]

    resp = alice.call(
        "POST",
        "mlflow/users/permissions/revoke",
        {"username": bob.name, "resource_type": "experiment", "resource_id": experiment},
        api="3.0",
    )
    assert resp.status_code == 200, resp.text
    as_bob = _client(monkeypatch, bob)
    _denied(lambda: as_bob.log_metric(run.info.run_id, "loss", 3.0))


def test_deny_hides_resources_from_reads_and_searches(
    admin: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice, bob = new_user(admin, "alice"), new_user(admin, "bob")
    as_alice = _client(monkeypatch, alice)
    secret = as_alice.create_experiment(f"secret-{uuid.uuid4().hex[:8]}")
    shared = as_alice.create_experiment(f"shared-{uuid.uuid4().hex[:8]}")
    secret_run = as_alice.create_run(secret).info.run_id
    shared_run = as_alice.create_run(shared).info.run_id
    model = f"model-{uuid.uuid4().hex[:8]}"
    as_alice.create_registered_model(model)
    as_alice.create_model_version(model, f"runs:/{secret_run}/m", run_id=secret_run)
    _grant(alice, bob, "experiment", secret, "DENY")
    _grant(alice, bob, "registered_model", model, "DENY")

    as_bob = _client(monkeypatch, bob)
    _denied(lambda: as_bob.get_experiment(secret))
    _denied(lambda: as_bob.get_run(secret_run))
    _denied(lambda: as_bob.get_registered_model(model))
    names = {e.experiment_id for e in as_bob.search_experiments()}
    assert shared in names and secret not in names
    runs = as_bob.search_runs([secret, shared])
    assert [r.info.run_id for r in runs] == [shared_run]
    assert model not in {m.name for m in as_bob.search_registered_models()}
    assert model not in {v.name for v in as_bob.search_model_versions()}
    # Alice (the owner) and the admin still see everything.
    assert secret in {e.experiment_id for e in _client(monkeypatch, alice).search_experiments()}
    assert model in {m.name for m in _client(monkeypatch, admin).search_registered_models()}


def test_a_wildcard_grant_is_an_admins(admin: User, monkeypatch: pytest.MonkeyPatch) -> None:
    alice = new_user(admin, "alice")
    body = {
        "username": alice.name,
        "resource_type": "experiment",
        "resource_id": "*",
        "permission": "EDIT",
    }
    assert alice.call("POST", "mlflow/users/permissions/grant", body, api="3.0").status_code == 403
    _grant(admin, alice, "experiment", "*", "DENY")
    as_alice = _client(monkeypatch, alice)
    _denied(lambda: as_alice.create_experiment(f"x-{uuid.uuid4().hex[:8]}"))
    _denied(lambda: as_alice.get_experiment("0"))


def test_approval_checks_the_authenticated_principal(
    admin: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The issue's forgery: a requester refused self-approval resends the approval under
    another name. The claimed name changes nothing: still 403, and the trail names the
    requester. An approver needs MANAGE on the model."""
    owner, requester, editor = (
        new_user(admin, "owner"),
        new_user(admin, "req"),
        new_user(admin, "ed"),
    )
    as_owner = _client(monkeypatch, owner)
    name = f"model-{uuid.uuid4().hex[:8]}"
    as_owner.create_registered_model(name)
    experiment = as_owner.create_experiment(f"exp-{uuid.uuid4().hex[:8]}")
    run_id = as_owner.create_run(experiment).info.run_id
    as_owner.create_model_version(name, f"runs:/{run_id}/m", run_id=run_id)
    _grant(owner, requester, "registered_model", name, "MANAGE")
    _grant(owner, editor, "registered_model", name, "EDIT")

    base = "evtrack/registry/transition-requests"
    created = requester.call(
        "POST", f"{base}/create", {"name": name, "version": "1", "stage": "Production"}
    )
    assert created.status_code == 200, created.text
    request_id = created.json()["transition_request"]["request_id"]
    decision = {"name": name, "request_id": request_id}
    assert requester.call("POST", f"{base}/approve", decision).status_code == 403
    forged = requester.call(
        "POST", f"{base}/approve", decision, headers={"X-Evtrack-User": admin.name}
    )
    assert forged.status_code == 403
    assert editor.call("POST", f"{base}/approve", decision).status_code == 403  # EDIT only
    assert as_owner.get_model_version(name, "1").current_stage == "None"

    approved = owner.call("POST", f"{base}/approve", {**decision, "comment": "lgtm"})
    assert approved.status_code == 200, approved.text
    assert as_owner.get_model_version(name, "1").current_stage == "Production"
    history = owner.call("GET", "evtrack/audit/registered-models/history", name=name).json()
    actors = {e["type"]: e["actor"] for e in history["events"]}
    assert actors["TransitionRequested"] == requester.name
    assert actors["TransitionApproved"] == owner.name
    assert all("claimed_actor" not in e for e in history["events"])


def test_idempotency_keys_belong_to_their_caller(
    admin: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One user's batch sent under another user's key is stored, not answered from the
    other's request."""
    alice, bob = new_user(admin, "alice"), new_user(admin, "bob")
    as_alice = _client(monkeypatch, alice)
    experiment = as_alice.create_experiment(f"exp-{uuid.uuid4().hex[:8]}")
    _grant(alice, bob, "experiment", experiment, "EDIT")
    run_a = as_alice.create_run(experiment).info.run_id
    run_b = as_alice.create_run(experiment).info.run_id
    key = {"Idempotency-Key": f"k-{uuid.uuid4().hex}"}
    metric = {"key": "m", "value": 1.0, "timestamp": 1, "step": 0}
    for user, run_id in ((alice, run_a), (bob, run_b)):
        resp = user.call(
            "POST", "mlflow/runs/log-batch", {"run_id": run_id, "metrics": [metric]}, headers=key
        )
        assert resp.status_code == 200, resp.text
    for run_id in (run_a, run_b):
        assert as_alice.get_run(run_id).data.metrics == {"m": 1.0}


def test_the_event_stream_shows_only_what_the_subscriber_may_read(
    admin: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice, bob = new_user(admin, "alice"), new_user(admin, "bob")
    as_alice = _client(monkeypatch, alice)
    secret = as_alice.create_experiment(f"secret-{uuid.uuid4().hex[:8]}")
    shared = as_alice.create_experiment(f"shared-{uuid.uuid4().hex[:8]}")
    _grant(alice, bob, "experiment", secret, "DENY")
    secret_run = as_alice.create_run(secret).info.run_id
    shared_run = as_alice.create_run(shared).info.run_id
    as_alice.set_tag(secret_run, "k", "secret")
    as_alice.set_tag(shared_run, "k", "shared")

    streams = []
    with requests.get(
        f"{alice.server.url}/api/2.0/evtrack/events/stream",
        params={"from": "start", "types": "RunCreated"},
        auth=bob.auth,
        stream=True,
        timeout=30,
    ) as resp:
        assert resp.status_code == 200, resp.text
        started = time.monotonic()
        for line in resp.iter_lines(decode_unicode=True):
            if line.startswith("data: "):
                streams.append(json.loads(line[6:])["stream_id"])
            if f"run-{shared_run}" in streams or time.monotonic() - started > 20:
                break
    assert f"run-{shared_run}" in streams
    assert f"run-{secret_run}" not in streams
    users = [s for s in streams if s.startswith("user-")]
    assert not users  # account events are an admin's

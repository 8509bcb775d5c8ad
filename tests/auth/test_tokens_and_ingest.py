"""Access tokens (created, used by the official client, revoked, expired), the native ingest
path under permissions, and the evtrack client sending the same credentials."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import msgspec
import pytest
import requests
from mlflow import MlflowClient

from auth.conftest import User, new_user


def _token(user: User, **body: object) -> str:
    resp = user.call("POST", "evtrack/tokens/create", {"name": "ci", **body})
    assert resp.status_code == 200, resp.text
    secret: str = resp.json()["token"]
    return secret


def _with_token(monkeypatch: pytest.MonkeyPatch, url: str, token: str) -> MlflowClient:
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", token)
    return MlflowClient(tracking_uri=url)


def test_tokens_work_with_the_official_client_until_revoked(
    admin: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice = new_user(admin, "alice")
    secret = _token(alice)
    client = _with_token(monkeypatch, alice.server.url, secret)
    experiment = client.create_experiment(f"tok-{uuid.uuid4().hex[:8]}")
    history = admin.call("GET", "evtrack/audit/experiments/history", experiment_id=experiment)
    assert history.json()["events"][0]["actor"] == alice.name  # the token's owner acts

    listed = alice.call("GET", "evtrack/tokens/list").json()["tokens"]
    assert [t["name"] for t in listed] == ["ci"] and secret not in str(listed)
    token_id = listed[0]["token_id"]
    # Only the owner or an admin may revoke it.
    bob = new_user(admin, "bob")
    other = bob.call(
        "POST", "evtrack/tokens/revoke", {"token_id": token_id, "username": alice.name}
    )
    assert other.status_code == 403
    revoked = alice.call("POST", "evtrack/tokens/revoke", {"token_id": token_id})
    assert revoked.status_code == 200, revoked.text
    resp = requests.get(
        f"{alice.server.url}/api/2.0/mlflow/experiments/get",
        params={"experiment_id": experiment},
        headers={"Authorization": f"Bearer {secret}"},
        timeout=10,
    )
    assert resp.status_code == 401


def test_an_admin_makes_tokens_for_others_and_tokens_expire(admin: User) -> None:
    carol = new_user(admin, "carol")
    secret = _token(admin, username=carol.name, expires_in_seconds=1)
    url = f"{admin.server.url}/api/2.0/mlflow/users/current"
    now = requests.get(url, headers={"Authorization": f"Bearer {secret}"}, timeout=10)
    assert now.status_code == 200 and now.json()["user"]["username"] == carol.name
    time.sleep(1.5)
    later = requests.get(url, headers={"Authorization": f"Bearer {secret}"}, timeout=10)
    assert later.status_code == 401


def _ingest(user: User, records: list[dict[str, object]]) -> requests.Response:
    return requests.post(
        f"{user.server.url}/api/2.0/evtrack/ingest",
        data=msgspec.msgpack.encode({"records": records}),
        headers={"Content-Type": "application/msgpack"},
        auth=user.auth,
        timeout=30,
    )


def test_native_ingest_checks_every_run_it_touches(admin: User) -> None:
    alice, bob = new_user(admin, "alice"), new_user(admin, "bob")
    mine = f"mine-{uuid.uuid4().hex[:8]}"
    theirs = alice.call("POST", "mlflow/experiments/create", {"name": f"a-{uuid.uuid4().hex[:8]}"})
    theirs_id = theirs.json()["experiment_id"]
    run_a = uuid.uuid4().hex
    created = _ingest(
        alice,
        [
            {
                "run_id": run_a,
                "start": {"experiment_id": theirs_id},
                "params": [{"key": "p", "value": "1"}],
            }
        ],
    )
    assert created.status_code == 200, created.text

    points = {"keys": ["m"], "values": [1.0], "timestamps": [1], "steps": [0]}
    # Bob may create his own experiment by name and log there...
    run_b = uuid.uuid4().hex
    ok = _ingest(bob, [{"run_id": run_b, "start": {"experiment_name": mine}, "metrics": points}])
    assert ok.status_code == 200, ok.text
    # ...but one record on alice's run refuses the whole request, which stores nothing.
    mixed = _ingest(
        bob, [{"run_id": run_b, "metrics": points}, {"run_id": run_a, "metrics": points}]
    )
    assert mixed.status_code == 403, mixed.text
    sneaky = _ingest(
        bob,
        [{"run_id": uuid.uuid4().hex, "start": {"experiment_id": theirs_id}, "metrics": points}],
    )
    assert sneaky.status_code == 403
    history = alice.call("GET", "mlflow/metrics/get-history", run_id=run_b, metric_key="m")
    assert [m["value"] for m in history.json()["metrics"]] == [1.0]
    assert (
        alice.call("GET", "mlflow/metrics/get-history", run_id=run_a, metric_key="m").json() == {}
    )


def test_the_evtrack_client_sends_credentials(
    admin: User, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from evtrack.client import Client

    alice = new_user(admin, "alice")
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", alice.name)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", alice.password)
    experiment = f"client-{uuid.uuid4().hex[:8]}"
    with (
        Client(alice.server.url, tmp_path / "spool") as client,
        client.start_run(experiment_name=experiment) as run,
    ):
        for step in range(100):
            run.log_metric("loss", 1.0 / (step + 1), step=step)
        run_id = run.run_id
    history = admin.call("GET", "mlflow/metrics/get-history", run_id=run_id, metric_key="loss")
    assert len(history.json()["metrics"]) == 100
    audit = admin.call("GET", "evtrack/audit/runs/history", run_id=run_id).json()["events"]
    assert {e["actor"] for e in audit} == {alice.name}

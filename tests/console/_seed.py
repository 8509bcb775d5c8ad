"""What the console tests look at, written the way users write it.

Tracking data and the registry go through the official ``mlflow`` client, as the seed's
users do; the long series goes through ``evtrack.client`` (the native batch path a training
job uses); promotion requests and decisions go through evtrack's registry routes, as
``evtrack registry request|approve`` do. The registry history is scripted so each kind of
timeline entry appears with its actor and comment.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
from mlflow import MlflowClient

from evtrack.client import Client

MODEL = "churn"
OTHER_MODEL = "fraud"
LONG_POINTS = 1_000_000
SPIKE_STEP = 654_321
SPIKE_VALUE = 50.0


@dataclass(frozen=True)
class Account:
    name: str
    password: str

    @property
    def auth(self) -> tuple[str, str]:
        return (self.name, self.password)

    def env(self) -> dict[str, str]:
        return {"MLFLOW_TRACKING_USERNAME": self.name, "MLFLOW_TRACKING_PASSWORD": self.password}


@dataclass
class Seeded:
    url: str
    admin: Account
    alice: Account  # MANAGE on MODEL: may approve
    bob: Account  # READ (the server's default): may look, not decide
    experiment_id: str
    other_experiment_id: str
    run_id: str
    long_run_id: str
    before_phase_two_ms: int  # an instant between the two scripted phases
    request_for_alice: str  # pending: v2 -> Production, requested by the admin
    request_for_bob: str  # pending: v3 -> Staging, requested by the admin

    def call(
        self, who: Account, method: str, path: str, body: dict[str, Any] | None = None, **kw: Any
    ) -> requests.Response:
        api = kw.pop("api", "2.0")
        return requests.request(
            method,
            f"{self.url}/api/{api}/{path}",
            json=body,
            params=kw or None,
            auth=who.auth,
            timeout=60,
        )


@contextlib.contextmanager
def acting_as(account: Account) -> Iterator[None]:
    """The mlflow client and evtrack.client read credentials from the environment."""
    saved = {k: os.environ.get(k) for k in (*account.env(), "MLFLOW_TRACKING_TOKEN")}
    os.environ.update(account.env())
    os.environ.pop("MLFLOW_TRACKING_TOKEN", None)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _ok(response: requests.Response) -> dict[str, Any]:
    assert response.status_code == 200, f"{response.request.url}: {response.text}"
    body: dict[str, Any] = response.json()
    return body


def _user(url: str, admin: Account, name: str) -> Account:
    account = Account(name, f"pw-{name}-Secret1")
    _ok(
        requests.post(
            f"{url}/api/2.0/mlflow/users/create",
            json={"username": name, "password": account.password},
            auth=admin.auth,
            timeout=30,
        )
    )
    return account


def _request(seeded: Seeded, who: Account, version: int, stage: str, comment: str) -> str:
    answer = _ok(
        seeded.call(
            who,
            "POST",
            "evtrack/registry/transition-requests/create",
            {"name": MODEL, "version": str(version), "stage": stage, "comment": comment},
        )
    )
    request_id: str = answer["transition_request"]["request_id"]
    return request_id


def _decide(seeded: Seeded, who: Account, action: str, request_id: str, comment: str) -> None:
    _ok(
        seeded.call(
            who,
            "POST",
            f"evtrack/registry/transition-requests/{action}",
            {"name": MODEL, "request_id": request_id, "comment": comment},
        )
    )


def _long_series(url: str, spool: Path) -> str:
    """A million points of a decaying loss with one spike, through evtrack.client."""
    client = Client(url, spool_dir=spool)
    try:
        with client.start_run(experiment_name="long-series", run_name="long") as run:
            log = run.log_metric
            for step in range(LONG_POINTS):
                log("loss", 1.0 / (1.0 + step / 5000.0) + 0.02 * math.sin(step / 40.0), step=step)
            # One point far above the rest: every down-sampling must keep it visible.
            log("loss", SPIKE_VALUE, step=SPIKE_STEP)
            log("lr", 0.1, step=0)
        assert client.flush(120), client.stats()
        return run.run_id
    finally:
        client.close(30)


def seed(url: str, admin: Account, spool: Path) -> Seeded:
    alice = _user(url, admin, "alice")
    bob = _user(url, admin, "bob")
    with acting_as(admin):
        mlflow = MlflowClient(tracking_uri=url, registry_uri=url)
        experiment_id = mlflow.create_experiment("console-demo")
        other_experiment_id = mlflow.create_experiment("console-other")
        run = mlflow.create_run(experiment_id, run_name="train")
        for step in range(50):
            mlflow.log_metric(run.info.run_id, "accuracy", 0.5 + step / 100, step=step)
        mlflow.log_param(run.info.run_id, "alpha", "0.5")
        mlflow.set_terminated(run.info.run_id)
        mlflow.create_registered_model(MODEL, description="Churn classifier")
        mlflow.create_registered_model(OTHER_MODEL)
        for _ in range(3):
            mlflow.create_model_version(MODEL, f"runs:/{run.info.run_id}/model", run.info.run_id)
        long_run_id = _long_series(url, spool)
    seeded = Seeded(
        url=url,
        admin=admin,
        alice=alice,
        bob=bob,
        experiment_id=experiment_id,
        other_experiment_id=other_experiment_id,
        run_id=run.info.run_id,
        long_run_id=long_run_id,
        before_phase_two_ms=0,
        request_for_alice="",
        request_for_bob="",
    )
    _ok(
        seeded.call(
            admin,
            "POST",
            "mlflow/users/permissions/grant",
            {
                "username": alice.name,
                "resource_type": "registered_model",
                "resource_id": MODEL,
                "permission": "MANAGE",
            },
            api="3.0",
        )
    )

    # Phase one: v1 goes to Staging, then to Production through an approved request, and
    # becomes the champion.
    with acting_as(admin):
        mlflow.transition_model_version_stage(MODEL, "1", "Staging")
    first = _request(seeded, alice, 1, "Production", "ready for prod")
    _decide(seeded, admin, "approve", first, "looks good")
    with acting_as(admin):
        mlflow.set_registered_model_alias(MODEL, "champion", "1")
    time.sleep(0.05)
    seeded.before_phase_two_ms = int(time.time() * 1000)
    time.sleep(0.05)

    # Phase two: v2 to Staging and asked for Production (pending, for alice to approve); a
    # request for v3 rejected, another cancelled, one pending (for bob to be refused); the
    # champion alias moves to v2, and v3 becomes the challenger.
    with acting_as(admin):
        mlflow.transition_model_version_stage(MODEL, "2", "Staging")
    seeded.request_for_alice = _request(seeded, admin, 2, "Production", "v2 beats v1 by 3 points")
    rejected = _request(seeded, alice, 3, "Production", "skip staging?")
    _decide(seeded, admin, "reject", rejected, "not before Staging")
    cancelled = _request(seeded, alice, 3, "Archived", "oops")
    _decide(seeded, alice, "cancel", cancelled, "")
    seeded.request_for_bob = _request(seeded, admin, 3, "Staging", "try v3")
    with acting_as(admin):
        mlflow.set_registered_model_alias(MODEL, "champion", "2")
        mlflow.set_registered_model_alias(MODEL, "challenger", "3")
    return seeded

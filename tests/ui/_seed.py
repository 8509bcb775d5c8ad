"""Data for the browser tests, written the two ways users write it: the official mlflow client
(runs with params, metric histories, tags, dataset inputs, a text and an image artifact, a
logged and registered model with stages, an alias and descriptions) and the native ingest path
(``evtrack.client``: a run with a long metric history).
"""

from __future__ import annotations

import io
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

import mlflow
import numpy as np
import pandas as pd
from mlflow import MlflowClient
from PIL import Image
from sklearn.linear_model import LogisticRegression

from evtrack.client import Client

EXPERIMENT = "ui-demo"
MODEL = "ui-model"
# For the write tests; the page tests leave them alone.
SCRATCH_MODEL = "ui-scratch-model"
DOOMED_MODEL = "ui-doomed-model"
SCRATCH_EXPERIMENT = "ui-scratch-experiment"
NOTES_TEXT = "Notes from evtrack's browser test: the text preview shows this line."
EXPERIMENT_DESCRIPTION = "Experiment seeded for the web UI tests"
MODEL_DESCRIPTION = "Registered model seeded for the web UI tests"
NATIVE_POINTS = 2_000
# An HTML artifact whose script would rewrite its heading: the UI's policy must stop it.
HTML_REPORT = (
    '<!doctype html><h1 id="title">Static report heading</h1>'
    "<script>document.getElementById('title').textContent = 'script ran'</script>"
)


@dataclass
class Seeded:
    """What was written, for the tests to look for on the pages."""

    experiment_id: str
    scratch_experiment_id: str = ""
    run_ids: dict[str, str] = field(default_factory=dict)  # run name -> id
    model_ids: dict[str, str] = field(default_factory=dict)  # run name -> logged model id
    dataset_names: list[str] = field(default_factory=list)


def _png() -> bytes:
    """A 64x48 gradient, so an image preview has something to draw."""
    x = np.linspace(0, 255, 64, dtype=np.uint8)
    y = np.linspace(0, 255, 48, dtype=np.uint8)
    rgb = np.stack(np.broadcast_arrays(x[None, :], y[:, None], 128 + 0 * x[None, :]), axis=-1)
    out = io.BytesIO()
    Image.fromarray(rgb.astype(np.uint8), "RGB").save(out, format="PNG")
    return out.getvalue()


def _mlflow_run(
    seeded: Seeded, name: str, *, lr: float, scale: float, context: str, register: bool
) -> None:
    features = pd.DataFrame({"x1": np.arange(6.0), "x2": np.arange(6.0)[::-1]})
    labels = np.array([0, 1, 0, 1, 0, 1])
    with mlflow.start_run(experiment_id=seeded.experiment_id, run_name=name) as run:
        seeded.run_ids[name] = run.info.run_id
        mlflow.log_params({"lr": lr, "optimizer": "sgd", "epochs": 20})
        mlflow.set_tags({"team": "vision", "stage": "tuning"})
        for step in range(20):
            mlflow.log_metrics(
                {"loss": scale / (step + 1), "accuracy": 1 - scale / (step + 2)}, step=step
            )
        dataset = mlflow.data.from_pandas(features, name=f"{name}-features")
        seeded.dataset_names.append(dataset.name)
        mlflow.log_input(dataset, context=context)
        with tempfile.TemporaryDirectory() as tmp:
            notes = Path(tmp) / "notes.txt"
            notes.write_text(NOTES_TEXT + "\n")
            mlflow.log_artifact(str(notes))
            image = Path(tmp) / "gradient.png"
            image.write_bytes(_png())
            mlflow.log_artifact(str(image), artifact_path="plots")
        mlflow.log_text(HTML_REPORT, "report.html")
        model = LogisticRegression().fit(features.to_numpy(), labels)
        info = mlflow.sklearn.log_model(
            model,
            name="model",
            pip_requirements=["scikit-learn"],  # no environment inference: seconds saved
            registered_model_name=MODEL if register else None,
        )
        seeded.model_ids[name] = info.model_id


def _native_run(url: str, experiment_id: str, spool: Path) -> str:
    client = Client(url, spool_dir=spool, adopt_orphans=False)
    try:
        with client.start_run(experiment_id=experiment_id, run_name="native-long") as run:
            run.log_params({"source": "evtrack.client", "points": NATIVE_POINTS})
            run.set_tags({"team": "platform"})
            for step in range(NATIVE_POINTS):
                run.log_metric("loss", 1.0 / (1 + step / 100), step=step)
            run_id = run.run_id
        assert client.flush(timeout=60), "the native client did not deliver in 60 s"
    finally:
        client.close(timeout=30)
    return run_id


def seed(url: str, spool: Path) -> Seeded:
    """Write the browser tests' data to the evtrack server at ``url``.

    The mlflow client's global tracking and registry URIs (which other test modules set too)
    point at ``url`` while seeding and are put back afterwards.
    """
    before = (mlflow.get_tracking_uri(), mlflow.get_registry_uri())
    mlflow.set_tracking_uri(url)
    mlflow.set_registry_uri(url)
    try:
        return _seed(url, spool)
    finally:
        mlflow.set_tracking_uri(before[0])
        mlflow.set_registry_uri(before[1])


def _seed(url: str, spool: Path) -> Seeded:
    client = MlflowClient(url, registry_uri=url)
    experiment_id = client.create_experiment(EXPERIMENT)
    client.set_experiment_tag(experiment_id, "mlflow.note.content", EXPERIMENT_DESCRIPTION)
    seeded = Seeded(experiment_id)
    _mlflow_run(seeded, "train-alpha", lr=0.01, scale=1.0, context="training", register=True)
    _mlflow_run(seeded, "train-beta", lr=0.1, scale=0.5, context="validation", register=True)
    seeded.run_ids["native-long"] = _native_run(url, experiment_id, spool)
    for name in ("scratch", "scratch-doomed"):  # for the write tests
        seeded.run_ids[name] = client.create_run(experiment_id, run_name=name).info.run_id
    mlflow.register_model(f"models:/{seeded.model_ids['train-alpha']}", SCRATCH_MODEL)
    client.create_registered_model(DOOMED_MODEL)
    seeded.scratch_experiment_id = client.create_experiment(SCRATCH_EXPERIMENT)
    client.update_registered_model(MODEL, description=MODEL_DESCRIPTION)
    client.transition_model_version_stage(MODEL, "1", "Production")
    client.transition_model_version_stage(MODEL, "2", "Staging")
    client.set_registered_model_alias(MODEL, "champion", "1")
    return seeded

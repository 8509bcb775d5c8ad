"""The tracking and registry workflow of an MLflow 2.x user, run by the 2.x client.

Executed inside a virtual environment with the last MLflow 2.x release (see the test that
runs it). Prints one JSON object with what it observed; any failure raises.
"""

import json
import os
import sys
import tempfile
from pathlib import Path

import mlflow
import numpy as np
from mlflow import MlflowClient
from sklearn.linear_model import LogisticRegression

url, experiment, name = sys.argv[1:4]
mlflow.set_tracking_uri(url)
mlflow.set_registry_uri(url)
mlflow.set_experiment(experiment)

X = np.array([[0.0, 1.0], [1.0, 0.0], [0.2, 0.9], [0.9, 0.1], [0.5, 0.4], [0.3, 0.8]])
y = np.array([0, 1, 0, 1, 1, 0])
model = LogisticRegression().fit(X, y)

with mlflow.start_run(run_name="v2-run") as run:
    mlflow.log_param("C", 1.0)
    for step in range(5):
        mlflow.log_metric("acc", 0.5 + step / 10, step=step)
    mlflow.set_tag("client", "mlflow-2")
    notes = os.path.join(tempfile.mkdtemp(), "notes.txt")
    with open(notes, "w") as f:
        f.write("hello from 2.x")
    mlflow.log_artifact(notes)
    mlflow.sklearn.log_model(model, artifact_path="model", registered_model_name=name)
    mlflow.sklearn.log_model(model, artifact_path="model", registered_model_name=name)

client = MlflowClient()
client.transition_model_version_stage(name, "1", "Staging")
client.transition_model_version_stage(name, "2", "Production", archive_existing_versions=True)
client.set_registered_model_alias(name, "champion", "2")

expected = model.predict(X).tolist()
by_stage = mlflow.pyfunc.load_model(f"models:/{name}/Production").predict(X).tolist()
by_alias = mlflow.pyfunc.load_model(f"models:/{name}@champion").predict(X).tolist()
by_run = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/model").predict(X).tolist()
history = [m.value for m in client.get_metric_history(run.info.run_id, "acc")]
df = mlflow.search_runs(experiment_names=[experiment], filter_string="metrics.acc > 0.5")
downloaded = mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="notes.txt")
latest = {v.current_stage: v.version for v in client.get_latest_versions(name)}
print(
    json.dumps(
        {
            "mlflow_version": mlflow.__version__,
            "status": client.get_run(run.info.run_id).info.status,
            "expected": expected,
            "by_stage": by_stage,
            "by_alias": by_alias,
            "by_run": by_run,
            "history": history,
            "search_rows": len(df),
            "notes": Path(downloaded).read_text(),
            "latest": latest,
            "log_model_history": "mlflow.log-model.history"
            in client.get_run(run.info.run_id).data.tags,
        }
    )
)

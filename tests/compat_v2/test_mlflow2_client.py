"""MLflow 2.x clients, still common in production, run the same workflow against evtrack.

The 2.x client logs models under the run's artifacts, records them with ``runs/log-model`` and
registers ``runs:/`` sources, without any logged-model routes. It runs in its own virtual
environment (created once and cached under the pytest cache directory), since it cannot share
a process with the 3.x client the rest of the suite uses.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
import venv
from pathlib import Path

import pytest
from _support.server import EvtrackServer

MLFLOW_2 = "2.22.5"
REQUIREMENTS = [f"mlflow-skinny=={MLFLOW_2}", "scikit-learn", "pandas", "numpy<3", "setuptools"]


@pytest.fixture(scope="session")
def mlflow2_python(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    store = request.config.cache
    cache = (
        Path(store.mkdir("mlflow2-venv"))
        if store is not None
        else tmp_path_factory.mktemp("mlflow2-venv")
    )
    python = cache / "bin" / "python"
    marker = cache / ".installed"
    wanted = "\n".join(REQUIREMENTS)
    if not (marker.exists() and marker.read_text() == wanted):
        venv.EnvBuilder(with_pip=True, clear=True).create(cache)
        subprocess.run(
            [
                str(python),
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                *REQUIREMENTS,
            ],
            check=True,
            timeout=900,
        )
        marker.write_text(wanted)
    return python


def test_mlflow2_tracking_and_registry_workflow(
    mlflow2_python: Path, evtrack_server: EvtrackServer, tmp_path: Path
) -> None:
    name = f"v2-model-{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ,
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "PYTHONPATH": "",
    }
    env.pop("MLFLOW_TRACKING_URI", None)
    script = Path(__file__).with_name("workflow_v2.py")
    done = subprocess.run(
        [str(mlflow2_python), str(script), evtrack_server.url, "v2-experiment", name],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["mlflow_version"] == MLFLOW_2
    assert seen["status"] == "FINISHED"
    assert seen["by_stage"] == seen["by_alias"] == seen["by_run"] == seen["expected"]
    assert seen["history"] == [0.5, 0.6, 0.7, 0.8, 0.9]
    assert seen["search_rows"] == 1
    assert seen["notes"] == "hello from 2.x"
    assert seen["latest"] == {"Staging": "1", "Production": "2"}
    assert seen["log_model_history"] is True

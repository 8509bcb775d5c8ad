"""The artifact disk fills up during an upload: the answer is a clear error, nothing partial
is left behind, and the server goes on.

Two ways to fill a disk for real, each a test:

* ``tmpfs``: the artifact root is a small tmpfs mounted for the test; the upload is larger
  than the file system, so a write fails with ENOSPC. Needs the right to mount (root, as
  developers and CI are here); skipped, saying so, where that is refused.
* ``fsize``: the server runs under ``RLIMIT_FSIZE`` (Python ignores SIGXFSZ), so a write
  past the limit fails with EFBIG, as on a file system whose files cannot grow that large.
  Possible on every Linux machine, so a full disk is always tested.

The answer chosen is 507 Insufficient Storage with MLflow's error JSON
(``RESOURCE_EXHAUSTED``), not a 500: MLflow's client retries 500 (and 429) up to seven
times, each retry uploading the whole file again into a disk that is still full, while 507
is not retried and the client shows the message at once (checked below with the client's
own retries turned on).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests
from _support.server import EvtrackServer

from evtrack.artifacts._local import TEMP_PREFIX

from ._load import create_experiment, create_run, wait_until

BIG = 12 * 1024 * 1024
TMPFS_BYTES = 8 * 1024 * 1024
FSIZE_BYTES = 4 * 1024 * 1024


@pytest.fixture(params=["tmpfs", "fsize"])
def full_disk(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Path, list[str]]]:
    """(artifact root, launcher for the server) of a store that cannot take ``BIG`` bytes."""
    root = tmp_path / "disk"
    root.mkdir()
    if request.param == "fsize":
        yield root, ["prlimit", f"--fsize={FSIZE_BYTES}", "--"]
        return
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={TMPFS_BYTES},mode=0755", "tmpfs", str(root)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(
            f"cannot mount a tmpfs here ({mounted.stderr.strip() or mounted.returncode}); "
            "the fsize variant still fills a disk"
        )
    try:
        yield root, []
    finally:
        if subprocess.run(["umount", str(root)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(root)], capture_output=True)


_LOG_ARTIFACT = """
import sys
from mlflow.tracking import MlflowClient
url, run_id, path = sys.argv[1:4]
try:
    MlflowClient(url).log_artifact(run_id, path)
except Exception as exc:
    print(exc)
    sys.exit(3)
"""


def _leftovers(root: Path) -> list[str]:
    return [
        str(path.relative_to(root))
        for path in root.rglob("*")
        if path.is_file() and (path.name.startswith(TEMP_PREFIX) or path.name == "big.bin")
    ]


def test_a_full_artifact_disk_is_a_clear_error_and_leaves_nothing(
    full_disk: tuple[Path, list[str]],
    evtrack_server_factory: Callable[..., EvtrackServer],
    tmp_path: Path,
) -> None:
    root, launcher = full_disk
    if launcher and sys.platform != "linux":
        pytest.skip("RLIMIT_FSIZE through prlimit is Linux only")
    server = evtrack_server_factory(artifacts_root=root, launcher=launcher)
    experiment_id = create_experiment(server.url, "full-disk")
    run_id = create_run(server.url, experiment_id)
    base = f"{server.url}/api/2.0/mlflow-artifacts/artifacts/{experiment_id}/{run_id}/artifacts"

    answer = requests.put(f"{base}/big.bin", data=os.urandom(BIG), timeout=60)
    assert answer.status_code == 507, answer.text
    body = answer.json()
    assert body["error_code"] == "RESOURCE_EXHAUSTED"
    assert "out of space" in body["message"] and "big.bin" in body["message"]
    wait_until(lambda: not _leftovers(root), 5, f"no partial file: {_leftovers(root)}")

    # The store still takes what fits, and serves it.
    small = os.urandom(64 * 1024)
    assert requests.put(f"{base}/small.bin", data=small, timeout=30).status_code == 200
    assert requests.get(f"{base}/small.bin", timeout=30).content == small

    # The official client, its retries on, reports the error once and does not retry it.
    # (In a process of its own: the connection it leaves half-sent would otherwise keep the
    # server lingering on it at shutdown.)
    local = tmp_path / "big.bin"
    local.write_bytes(os.urandom(BIG))
    client = subprocess.run(
        [sys.executable, "-c", _LOG_ARTIFACT, server.url, run_id, str(local)],
        capture_output=True,
        text=True,
        timeout=120,
        env={
            **os.environ,
            "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3",
            "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "0",
        },
    )
    assert client.returncode == 3, client.stdout + client.stderr
    assert "507" in client.stdout and "out of space" in client.stdout, client.stdout
    print(f"mlflow client: {client.stdout[:300]}")
    assert not _leftovers(root)

    log = server.stderr_path.read_text() + server.stdout_path.read_text()
    assert log.count('"status": 507') == 2, log[-3000:]  # one per upload: no retry
    assert log.count('"artifacts.no_space"') == 2
    assert "Traceback" not in log and '"request.failed"' not in log, log[-3000:]

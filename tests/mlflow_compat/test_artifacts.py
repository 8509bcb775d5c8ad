"""Proxied artifacts (compat doc §1.7): upload with log_artifact(s), list, download byte for byte.

Modelled on MLflow's tests/tracking/test_mlflow_artifacts.py (test_mlflow_artifacts_rest_apis,
test_log_artifact, test_log_artifacts, test_list_artifacts, test_download_artifacts) and
test_rest_tracking.py test_path_validation.
"""

from __future__ import annotations

import filecmp
import os
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient

from ._support import ARTIFACTS_API, Server, assert_error, unique


def _tree(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)).replace(os.sep, "/"): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def source_tree(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    (src / "nested" / "deeper").mkdir(parents=True)
    (src / "a.txt").write_text("hello\n")
    (src / "empty.txt").write_bytes(b"")
    (src / "my file.txt").write_text("spaces in the name")
    (src / "ünïcode.json").write_text('{"k": "v"}')
    (src / "nested" / "b.bin").write_bytes(bytes(range(256)) * 64)
    (src / "nested" / "deeper" / "c.csv").write_text("x,y\n1,2\n")
    return src


def test_log_and_download_artifacts(
    tracking_server: Server, source_tree: Path, tmp_path: Path
) -> None:
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(3 * 1024 * 1024))  # 3 MiB of random bytes (including \0)
    mlflow.set_experiment(unique("artifacts"))
    with mlflow.start_run() as run:
        mlflow.log_artifact(str(source_tree / "a.txt"))
        mlflow.log_artifact(str(big), artifact_path="sub/dir")
        mlflow.log_artifacts(str(source_tree), artifact_path="tree")
    run_id = run.info.run_id
    client = MlflowClient()

    root = client.list_artifacts(run_id)
    assert [(f.path, f.is_dir, f.file_size) for f in root] == [
        ("a.txt", False, 6),
        ("sub", True, None),
        ("tree", True, None),
    ]
    tree = client.list_artifacts(run_id, "tree")
    # The reference omits file_size 0 on the wire (proto default), so the client reports None
    # for an empty file; an explicit 0 is accepted as well.
    assert [(f.path, f.is_dir, f.file_size or None) for f in tree] == [
        ("tree/a.txt", False, 6),
        ("tree/empty.txt", False, None),
        ("tree/my file.txt", False, 18),
        ("tree/nested", True, None),
        ("tree/ünïcode.json", False, 10),
    ]
    assert [f.path for f in client.list_artifacts(run_id, "tree/nested/deeper")] == [
        "tree/nested/deeper/c.csv"
    ]
    assert [(f.path, f.file_size) for f in client.list_artifacts(run_id, "sub/dir")] == [
        ("sub/dir/big.bin", 3 * 1024 * 1024)
    ]

    # Single files, byte for byte.
    out = tmp_path / "out1"
    out.mkdir()
    local = client.download_artifacts(run_id, "sub/dir/big.bin", str(out))
    assert filecmp.cmp(local, big, shallow=False)
    local = mlflow.artifacts.download_artifacts(
        run_id=run_id, artifact_path="tree/empty.txt", dst_path=str(tmp_path / "out2")
    )
    assert Path(local).read_bytes() == b""

    # Folders: the same tree comes back.
    local = mlflow.artifacts.download_artifacts(
        run_id=run_id, artifact_path="tree", dst_path=str(tmp_path / "out3")
    )
    assert _tree(Path(local)) == _tree(source_tree)
    local = mlflow.artifacts.download_artifacts(
        artifact_uri=f"runs:/{run_id}/tree/nested", dst_path=str(tmp_path / "out4")
    )
    assert _tree(Path(local)) == _tree(source_tree / "nested")
    # The whole run, through its artifact_uri.
    local = mlflow.artifacts.download_artifacts(
        artifact_uri=run.info.artifact_uri, dst_path=str(tmp_path / "out5")
    )
    whole = _tree(Path(local))
    assert set(whole) == {"a.txt", "sub/dir/big.bin"} | {f"tree/{k}" for k in _tree(source_tree)}
    assert whole["sub/dir/big.bin"] == big.read_bytes()


def test_log_text_and_dict(tracking_server: Server) -> None:
    mlflow.set_experiment(unique("artifacts"))
    with mlflow.start_run() as run:
        mlflow.log_text("some text\n", "notes/readme.txt")
        mlflow.log_dict({"a": [1, 2], "b": {"c": None}}, "cfg/config.json")
        mlflow.log_dict({"x": 1}, "cfg/config.yaml")
    base = run.info.artifact_uri
    assert mlflow.artifacts.load_text(f"{base}/notes/readme.txt") == "some text\n"
    assert mlflow.artifacts.load_dict(f"{base}/cfg/config.json") == {"a": [1, 2], "b": {"c": None}}
    assert mlflow.artifacts.load_text(f"{base}/cfg/config.yaml").strip() == "x: 1"
    assert [f.path for f in MlflowClient().list_artifacts(run.info.run_id, "cfg")] == [
        "cfg/config.json",
        "cfg/config.yaml",
    ]


def test_overwrite_artifact(tracking_server: Server, tmp_path: Path) -> None:
    mlflow.set_experiment(unique("artifacts"))
    f = tmp_path / "f.txt"
    with mlflow.start_run() as run:
        f.write_text("first version, longer")
        mlflow.log_artifact(str(f))
        f.write_text("second")
        mlflow.log_artifact(str(f))
    assert mlflow.artifacts.load_text(f"runs:/{run.info.run_id}/f.txt") == "second"
    assert [(x.path, x.file_size) for x in MlflowClient().list_artifacts(run.info.run_id)] == [
        ("f.txt", 6)
    ]


def test_list_empty_missing_and_file_paths(client: MlflowClient) -> None:
    exp_id = client.create_experiment(unique("artifacts"))
    run_id = client.create_run(exp_id).info.run_id
    assert client.list_artifacts(run_id) == []
    assert client.list_artifacts(run_id, "nope") == []
    mlflow.log_text("x", "only.txt", run_id=run_id)
    assert [f.path for f in client.list_artifacts(run_id)] == ["only.txt"]
    assert client.list_artifacts(run_id, "only.txt") == []  # a file lists as empty


def test_artifact_proxy_rest(tracking_server: Server) -> None:
    """The mlflow-artifacts proxy API on the wire (what HttpArtifactRepository sends)."""
    s = tracking_server
    exp_id = s.ok_post("experiments/create", {"name": unique("proxy")})["experiment_id"]
    run = s.ok_post("runs/create", {"experiment_id": exp_id})["run"]["info"]
    run_id = run["run_id"]
    assert run["artifact_uri"] == f"mlflow-artifacts:/{exp_id}/{run_id}/artifacts"
    base = f"{exp_id}/{run_id}/artifacts"

    r = s.request(
        "PUT",
        f"{ARTIFACTS_API}/{base}/dir/a.txt",
        data=b"hello",
        headers={"Content-Type": "text/plain"},
    )
    assert r.status == 200
    r = s.request(
        "PUT",
        f"{ARTIFACTS_API}/{base}/b.bin",
        data=b"\x00\x01\x02",
        headers={"Content-Type": "application/octet-stream"},
    )
    assert r.status == 200

    r = s.request("GET", f"{ARTIFACTS_API}/{base}/dir/a.txt")
    assert (r.status, r.body) == (200, "hello")
    raw = s.session.get(f"{s.url}{ARTIFACTS_API}/{base}/b.bin", timeout=30)
    assert (raw.status_code, raw.content) == (200, b"\x00\x01\x02")

    def listing(path: str) -> object:
        r = s.request("GET", ARTIFACTS_API, params={"path": path})
        assert r.status == 200, r.body
        return r.body

    # Paths are relative to the listed directory; directories carry no file_size.
    assert listing(base) == {
        "files": [
            {"path": "b.bin", "is_dir": False, "file_size": 3},
            {"path": "dir", "is_dir": True},
        ]
    }
    assert listing(f"{base}/dir") == {"files": [{"path": "a.txt", "is_dir": False, "file_size": 5}]}
    assert listing(f"{base}/dir/a.txt") == {}  # a file lists as empty
    assert listing(f"{base}/nope") == {}

    assert_error(
        s.request("GET", f"{ARTIFACTS_API}/{base}/missing.txt"), 404, "RESOURCE_DOES_NOT_EXIST"
    )
    # A directory cannot be downloaded. The reference answers 400 with a FastAPI-style
    # {"detail": "Artifact path refers to a directory, not a file: ..."} body (no error_code);
    # evtrack may answer 400 or 404 with an MLflow error body.
    r = s.request("GET", f"{ARTIFACTS_API}/{base}/dir")
    if s.kind == "reference":
        assert r.status == 400 and "directory" in str(r.body)
    else:
        assert r.status in (400, 404) and r.error_code in (
            "INVALID_PARAMETER_VALUE",
            "RESOURCE_DOES_NOT_EXIST",
            "BAD_REQUEST",
        ), r.body


def test_artifact_path_validation(tracking_server: Server) -> None:
    s = tracking_server
    exp_id = s.ok_post("experiments/create", {"name": unique("paths")})["experiment_id"]
    run_id = s.ok_post("runs/create", {"experiment_id": exp_id})["run"]["info"]["run_id"]
    invalid = "Invalid path"
    assert_error(
        s.request("GET", ARTIFACTS_API, params={"path": f"{exp_id}/../x"}),
        400,
        "INVALID_PARAMETER_VALUE",
        invalid,
    )
    assert_error(
        s.request("GET", f"{ARTIFACTS_API}/{exp_id}/%2e%2e/x"),
        400,
        "INVALID_PARAMETER_VALUE",
        invalid,
    )
    assert_error(
        s.request("PUT", f"{ARTIFACTS_API}/{exp_id}/%2e%2e/x", data=b"x"),
        400,
        "INVALID_PARAMETER_VALUE",
        invalid,
    )
    assert_error(
        s.get("artifacts/list", {"run_id": run_id, "path": "../x"}),
        400,
        "INVALID_PARAMETER_VALUE",
        invalid,
    )


def test_run_artifacts_list_route(tracking_server: Server) -> None:
    """GET /api/2.0/mlflow/artifacts/list: paths relative to the run root (the UI uses it)."""
    s = tracking_server
    exp_id = s.ok_post("experiments/create", {"name": unique("list")})["experiment_id"]
    run_id = s.ok_post("runs/create", {"experiment_id": exp_id})["run"]["info"]["run_id"]
    base = f"{exp_id}/{run_id}/artifacts"
    for path, data in (("dir/a.txt", b"hello"), ("b.bin", b"\x00\x01")):
        assert s.request("PUT", f"{ARTIFACTS_API}/{base}/{path}", data=data).status == 200
    root_uri = f"mlflow-artifacts:/{exp_id}/{run_id}/artifacts"
    assert s.ok_get("artifacts/list", {"run_id": run_id}) == {
        "root_uri": root_uri,
        "files": [
            {"path": "b.bin", "is_dir": False, "file_size": 2},
            {"path": "dir", "is_dir": True},
        ],
    }
    assert s.ok_get("artifacts/list", {"run_uuid": run_id, "path": "dir"}) == {
        "root_uri": root_uri,
        "files": [{"path": "dir/a.txt", "is_dir": False, "file_size": 5}],
    }
    assert (
        s.request("GET", "/ajax-api/2.0/mlflow/artifacts/list", params={"run_uuid": run_id}).body[
            "root_uri"
        ]
        == root_uri
    )
    assert_error(
        s.get("artifacts/list", {"run_id": "0123456789abcdef0123456789abcdef"}),
        404,
        "RESOURCE_DOES_NOT_EXIST",
    )
    # The UI's preview route (no /api prefix).
    r = s.request("GET", "/get-artifact", params={"run_uuid": run_id, "path": "dir/a.txt"})
    assert (r.status, r.body) == (200, "hello")

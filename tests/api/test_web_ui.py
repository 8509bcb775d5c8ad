"""MLflow's web UI bundle served at / and /static-files/: types, caching, gzip, containment,
and the page that says how to install the UI when it is not there."""

from __future__ import annotations

import asyncio
import gzip
import http.client
import os
import re
from collections.abc import Callable
from pathlib import Path

import pytest
import requests
from _support.server import EvtrackServer

from evtrack.api import locate_ui_bundle
from evtrack.api._ui_bundle import IMMUTABLE, REVALIDATE

# The UI's page policy (see evtrack.api.ui.UI_POLICY and the README): scripts from evtrack only.
SCRIPT_SRC = "script-src 'self'"


@pytest.fixture
def evtrack_server(shared_server: EvtrackServer) -> EvtrackServer:
    return shared_server


@pytest.fixture(scope="module")
def build() -> Path:
    bundle = locate_ui_bundle()
    assert bundle is not None, "the test extra installs mlflow, whose package has the UI"
    return bundle.root


def _asset(build: Path, pattern: str) -> str:
    """The path under /static-files/ of the first bundle file matching ``pattern``."""
    for path in sorted(build.rglob("*")):
        relative = path.relative_to(build).as_posix()
        if path.is_file() and re.fullmatch(pattern, relative):
            return relative
    raise AssertionError(f"no {pattern} in {build}")


def _raw_get(server: EvtrackServer, target: str) -> tuple[int, bytes]:
    """GET with the target sent exactly as given (requests would normalise ``..``)."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.request("GET", target)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def test_index_is_the_bundles_page_with_its_policy(
    evtrack_server: EvtrackServer, build: Path
) -> None:
    response = requests.get(f"{evtrack_server.url}/", timeout=10)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/html; charset=utf-8"
    assert response.content == (build / "index.html").read_bytes()
    assert response.headers["Cache-Control"] == REVALIDATE
    policy = response.headers["Content-Security-Policy"]
    directives = {d.strip().split(" ", 1)[0]: d.strip() for d in policy.split(";")}
    assert directives["script-src"] == SCRIPT_SRC  # no inline script, no eval
    assert "'unsafe-eval'" not in policy
    assert directives["object-src"] == "object-src 'none'"
    assert directives["frame-ancestors"] == "frame-ancestors 'none'"
    assert directives["connect-src"] == "connect-src 'self'"

    again = requests.get(
        f"{evtrack_server.url}/", headers={"If-None-Match": response.headers["ETag"]}, timeout=10
    )
    assert again.status_code == 304
    assert again.content == b""


def test_hashed_script_is_immutable_typed_and_gzipped(
    evtrack_server: EvtrackServer, build: Path
) -> None:
    script = _asset(build, r"static/js/main\.[0-9a-f]{8,}\.js")
    url = f"{evtrack_server.url}/static-files/{script}"
    original = (build / script).read_bytes()

    zipped = requests.get(url, headers={"Accept-Encoding": "gzip"}, stream=True, timeout=30)
    assert zipped.status_code == 200
    assert zipped.headers["Content-Type"] == "text/javascript; charset=utf-8"
    assert zipped.headers["Cache-Control"] == IMMUTABLE
    assert zipped.headers["Content-Encoding"] == "gzip"
    assert zipped.headers["Vary"] == "Accept-Encoding"
    body = zipped.raw.read()
    assert len(body) < len(original) / 2
    assert gzip.decompress(body) == original

    for refusal in ("identity", "gzip;q=0, identity", "br"):
        plain = requests.get(url, headers={"Accept-Encoding": refusal}, stream=True, timeout=30)
        assert plain.status_code == 200, refusal
        assert "Content-Encoding" not in plain.headers, refusal
        assert plain.raw.read() == original, refusal

    tag = zipped.headers["ETag"]
    cached = requests.get(url, headers={"Accept-Encoding": "gzip", "If-None-Match": tag})
    assert cached.status_code == 304


@pytest.mark.parametrize(
    ("pattern", "content_type", "gzipped"),
    [
        (r"static/css/main\.[0-9a-f]{8,}\.css", "text/css; charset=utf-8", True),
        (r"static/media/.*\.svg", "image/svg+xml", True),
        (r"static/media/.*\.woff2", "font/woff2", False),
        (r"static/media/.*\.png", "image/png", False),
        (r"static/media/.*\.mjs", "text/javascript; charset=utf-8", True),
        (r"favicon\.ico", "image/x-icon", True),
        (r"manifest\.json", "application/json; charset=utf-8", False),  # too small to gain
    ],
)
def test_assets_have_their_types(
    evtrack_server: EvtrackServer, build: Path, pattern: str, content_type: str, gzipped: bool
) -> None:
    asset = _asset(build, pattern)
    response = requests.get(
        f"{evtrack_server.url}/static-files/{asset}",
        headers={"Accept-Encoding": "gzip"},
        stream=True,
        timeout=30,
    )
    assert response.status_code == 200, asset
    assert response.headers["Content-Type"] == content_type
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert (response.headers.get("Content-Encoding") == "gzip") == gzipped, asset
    body = response.raw.read()
    assert (gzip.decompress(body) if gzipped else body) == (build / asset).read_bytes()
    hashed = re.search(r"\.[0-9a-f]{8,}\.", asset) is not None
    assert response.headers["Cache-Control"] == (IMMUTABLE if hashed else REVALIDATE)


def test_head_answers_headers_only(evtrack_server: EvtrackServer, build: Path) -> None:
    head = requests.head(f"{evtrack_server.url}/", timeout=10)
    assert head.status_code == 200
    assert head.headers["Content-Type"] == "text/html; charset=utf-8"
    assert head.content == b""


@pytest.mark.parametrize(
    "target",
    [
        "/static-files/../../../../etc/passwd",
        "/static-files/%2e%2e/%2e%2e/__init__.py",
        "/static-files/static/..%2f..%2f..%2f__init__.py",
        "/static-files/static/js",  # a directory
        "/static-files/no-such-file.js",
        "/static-files/%00",
    ],
)
def test_nothing_outside_the_bundle_is_served(evtrack_server: EvtrackServer, target: str) -> None:
    status, body = _raw_get(evtrack_server, target)
    assert status in (400, 404), (target, status)
    assert b"root:" not in body and b"import" not in body


def test_without_the_ui_root_says_how_to_install_it(
    evtrack_server_factory: Callable[..., EvtrackServer], tmp_path: Path
) -> None:
    server = evtrack_server_factory(env={"EVTRACK_UI_DIR": str(tmp_path / "no-ui-here")})
    page = requests.get(f"{server.url}/", timeout=10)
    assert page.status_code == 200
    assert page.headers["Content-Type"].startswith("text/html")
    assert "pip install &#x27;evtrack[ui]&#x27;" in page.text
    assert 'href="/console/"' in page.text
    policy = page.headers["Content-Security-Policy"]
    assert "'unsafe-inline'" not in policy  # the plain page needs nothing of the UI's policy
    missing = requests.get(f"{server.url}/static-files/static/js/main.js", timeout=10)
    assert missing.status_code == 404
    assert missing.json()["error_code"] == "ENDPOINT_NOT_FOUND"
    # The API is there all the same.
    assert requests.get(f"{server.url}/api/2.0/mlflow/experiments/search").status_code == 200


def test_a_named_ui_directory_is_served(
    evtrack_server_factory: Callable[..., EvtrackServer], tmp_path: Path
) -> None:
    build = tmp_path / "build"
    (build / "static").mkdir(parents=True)
    (build / "index.html").write_text("<!doctype html><title>custom ui</title>")
    (build / "static" / "app.0123abcd.js").write_text("console.log('hi')")
    server = evtrack_server_factory(extra_args=["--ui-dir", str(build)])
    assert "custom ui" in requests.get(f"{server.url}/", timeout=10).text
    script = requests.get(f"{server.url}/static-files/static/app.0123abcd.js", timeout=10)
    assert script.text == "console.log('hi')"
    assert script.headers["Cache-Control"] == IMMUTABLE


async def test_gzip_cache_follows_the_file_and_stays_in_bounds(tmp_path: Path) -> None:
    from evtrack.api._ui_bundle import _GzipCache

    cache = _GzipCache(max_bytes=4096)
    first, second = tmp_path / "a.js", tmp_path / "b.js"
    first.write_text("let a = 1;\n" * 500)
    second.write_text("let b = 2;\n" * 500)

    def key(path: Path) -> tuple[Path, int, int]:
        stat = path.stat()
        return path, stat.st_mtime_ns, stat.st_size

    together = await asyncio.gather(*(cache.get(*key(first)) for _ in range(3)))
    assert all(gzip.decompress(body) == first.read_bytes() for body in together)

    first.write_text("let a = 3;\n" * 700)  # a reinstall: new time and size, new answer
    assert gzip.decompress(await cache.get(*key(first))) == first.read_bytes()
    assert gzip.decompress(await cache.get(*key(second))) == second.read_bytes()
    assert cache._bytes <= cache.max_bytes

    huge = tmp_path / "huge.js"
    huge.write_bytes(os.urandom(8192))  # incompressible, over the bound: served, not kept
    assert gzip.decompress(await cache.get(*key(huge))) == huge.read_bytes()
    assert cache._bytes <= cache.max_bytes

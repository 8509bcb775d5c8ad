"""A 300 MB artifact goes up to S3 and comes back through the HTTP routes, in bounded memory.

The HTTP client, the server and the S3 store share this process (moto runs in its own), so
this process's RSS covers everything evtrack does with the bytes. Data is generated and hashed
chunk by chunk; growth anywhere near the file size would mean something buffered it. The
upload must go through multipart (38 parts of 8 MiB), which is where buffering could hide.
"""

from __future__ import annotations

import hashlib

import pytest
from _support.memory import MiB, hashed_body, peak_rss, rss

from .conftest import BASE, S3_PREFIX, HttpEnv, S3Backend

SIZE = 300 * MiB
PART = 8 * MiB
# At most (2 in flight + 1 filling) parts of 8 MiB, plus the joined copy of one part, HTTP and
# allocator slack: the same bound as the local store's test, far below the 300 MiB file.
MAX_RSS_GROWTH = 64 * MiB


@pytest.mark.parametrize("backend", ["s3"], indirect=True)
async def test_large_upload_and_download_bounded_memory(http: HttpEnv) -> None:
    backend = http.backend
    assert isinstance(backend, S3Backend)
    # Warm up (a multipart upload and a download) so pools and imports are not measured.
    warm = b"w" * (20 * MiB)
    assert (await http.client.put(f"{BASE}/warm/up", data=warm)).status == 200
    assert await (await http.client.get(f"{BASE}/warm/up")).read() == warm
    del warm
    baseline = rss()

    sent = hashlib.sha256()
    with peak_rss() as up_peak:
        resp = await http.client.put(
            f"{BASE}/big/blob.bin",
            data=hashed_body(SIZE, sent),
            headers={"Content-Length": str(SIZE), "Content-Type": "application/octet-stream"},
        )
        assert resp.status == 200, await resp.text()
        assert await resp.json() == {}

    head = await backend.admin.head_object(Bucket=backend.bucket, Key=f"{S3_PREFIX}/big/blob.bin")
    assert head["ContentLength"] == SIZE
    assert head["ETag"].strip('"').endswith(f"-{-(-SIZE // PART)}")  # multipart, 38 parts
    assert await backend.in_flight() == []

    received = hashlib.sha256()
    total = 0
    with peak_rss() as down_peak:
        resp = await http.client.get(f"{BASE}/big/blob.bin")
        assert resp.status == 200
        assert resp.headers["Content-Length"] == str(SIZE)
        async for chunk in resp.content.iter_chunked(MiB):
            received.update(chunk)
            total += len(chunk)
    assert total == SIZE
    assert received.hexdigest() == sent.hexdigest()

    listing = await (await http.client.get(BASE, params={"path": "big"})).json()
    assert listing == {"files": [{"path": "blob.bin", "is_dir": False, "file_size": SIZE}]}

    up_growth = up_peak[0] - baseline
    down_growth = down_peak[0] - baseline
    print(f"RSS growth: upload {up_growth / MiB:.1f} MiB, download {down_growth / MiB:.1f} MiB")
    assert up_growth < MAX_RSS_GROWTH, f"upload grew RSS by {up_growth / MiB:.0f} MiB"
    assert down_growth < MAX_RSS_GROWTH, f"download grew RSS by {down_growth / MiB:.0f} MiB"

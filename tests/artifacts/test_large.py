"""A 300 MB artifact goes up and comes back through the server with bounded memory.

Client and server share this process, so its RSS covers both ends; the data is generated and
hashed chunk by chunk, so any growth close to the file size would mean someone buffered it.
"""

from __future__ import annotations

import hashlib

from _support.memory import MiB, hashed_body, peak_rss, rss

from .conftest import BASE, Env

SIZE = 300 * MiB
# Generous for allocator slack and thread stacks; an order of magnitude below the file.
MAX_RSS_GROWTH = 64 * MiB


async def test_large_upload_and_download_bounded_memory(env: Env) -> None:
    # Warm up: thread pool, connection pool and imports are not what we measure.
    await env.client.put(f"{BASE}/warm/up", data=b"w" * (4 * MiB))
    assert (await env.client.get(f"{BASE}/warm/up")).status == 200
    baseline = rss()

    sent = hashlib.sha256()
    with peak_rss() as up_peak:
        resp = await env.client.put(
            f"{BASE}/big/blob.bin",
            data=hashed_body(SIZE, sent),
            headers={"Content-Length": str(SIZE), "Content-Type": "application/octet-stream"},
        )
        assert resp.status == 200, await resp.text()
        assert await resp.json() == {}
    assert (env.root / "big" / "blob.bin").stat().st_size == SIZE

    received = hashlib.sha256()
    total = 0
    with peak_rss() as down_peak:
        resp = await env.client.get(f"{BASE}/big/blob.bin")
        assert resp.status == 200
        assert resp.headers["Content-Length"] == str(SIZE)
        async for chunk in resp.content.iter_chunked(MiB):
            received.update(chunk)
            total += len(chunk)
    assert total == SIZE
    assert received.hexdigest() == sent.hexdigest()

    listing = await (await env.client.get(BASE, params={"path": "big"})).json()
    assert listing == {"files": [{"path": "blob.bin", "is_dir": False, "file_size": SIZE}]}

    up_growth = up_peak[0] - baseline
    down_growth = down_peak[0] - baseline
    print(f"RSS growth: upload {up_growth / MiB:.1f} MiB, download {down_growth / MiB:.1f} MiB")
    assert up_growth < MAX_RSS_GROWTH, f"upload grew RSS by {up_growth / MiB:.0f} MiB"
    assert down_growth < MAX_RSS_GROWTH, f"download grew RSS by {down_growth / MiB:.0f} MiB"

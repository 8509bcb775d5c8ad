"""Measuring that large transfers stream: this process's RSS, its peak, and a generated body.

Shared by the local and S3 artifact tests, which move a file far larger than the memory growth
they allow; the data is produced and hashed block by block so the test itself holds none of it.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager

MiB = 1024 * 1024


def rss() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


@contextmanager
def peak_rss() -> Iterator[list[int]]:
    """Sample RSS every few ms in a thread; yields a one-element list holding the peak."""
    peak = [rss()]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], rss())
            stop.wait(0.005)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    try:
        yield peak
    finally:
        stop.set()
        t.join()
        peak[0] = max(peak[0], rss())


def blocks(size: int) -> Iterator[bytes]:
    """Incompressible, reproducible 1 MiB blocks (a few distinct ones, cycled)."""
    distinct = [random.Random(i).randbytes(MiB) for i in range(7)]
    for i in range(size // MiB):
        yield distinct[i % len(distinct)]


async def hashed_body(size: int, digest: hashlib._Hash) -> AsyncIterator[bytes]:
    for block in blocks(size):
        digest.update(block)
        yield block
        await asyncio.sleep(0)

"""Run a coroutine from synchronous test code without touching pytest-asyncio's loop."""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


def run_sync(factory: Callable[[], Awaitable[T]]) -> T:
    """Run ``factory()`` to completion on a private loop in a helper thread.

    Session fixtures are synchronous so both sync tests (the mlflow client) and async tests
    can use them. ``asyncio.run`` on the main thread would replace the current event loop
    that pytest-asyncio set up, so the work runs on its own thread instead.
    """

    async def main() -> T:
        return await factory()

    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, main()).result()

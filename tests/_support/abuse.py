"""Abusive clients for load tests, run as their own process so that the test's probes are not
slowed by them: ``python -m _support.abuse PORT --idle 2000 --slow 500 --seconds 20``.

- idle clients connect and send nothing; when the server closes one, it reconnects a second
  later, so the pressure lasts;
- slow-body senders declare a 10 kB JSON body and send one byte a second; when answered (408)
  or cut off, they start over.

Prints ``ready`` once every client is started, and at the end one JSON line with what
happened: connections opened and the answers the slow senders got.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import resource
import sys
from dataclasses import asdict, dataclass, field

# Attack clients expect resets, refusals and timeouts; they only count outcomes.
_EXPECTED = (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError, IndexError)


@dataclass
class Tally:
    idle_opened: int = 0
    idle_closed_by_server: int = 0
    slow_opened: int = 0
    slow_answers: dict[str, int] = field(default_factory=dict)


async def _open(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
    try:
        return await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 10)
    except _EXPECTED:
        return None


async def _idle_client(port: int, stop: asyncio.Event, tally: Tally) -> None:
    while not stop.is_set():
        conn = await _open(port)
        if conn is None:
            await asyncio.sleep(1)
            continue
        tally.idle_opened += 1
        reader, writer = conn
        with contextlib.suppress(*_EXPECTED):
            closed = asyncio.ensure_future(reader.read(1))
            stopped = asyncio.ensure_future(stop.wait())
            await asyncio.wait({closed, stopped}, return_when=asyncio.FIRST_COMPLETED)
            if closed.done():
                tally.idle_closed_by_server += 1
            closed.cancel()
            stopped.cancel()
        writer.close()
        await asyncio.sleep(1)


async def _slow_client(port: int, stop: asyncio.Event, tally: Tally) -> None:
    head = (
        f"POST /api/2.0/mlflow/experiments/create HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        "Content-Type: application/json\r\nContent-Length: 10000\r\n\r\n{"
    ).encode()
    while not stop.is_set():
        conn = await _open(port)
        if conn is None:
            await asyncio.sleep(1)
            continue
        tally.slow_opened += 1
        reader, writer = conn
        with contextlib.suppress(*_EXPECTED):
            writer.write(head)
            answer = asyncio.ensure_future(reader.read(64))
            while not stop.is_set() and not answer.done():
                writer.write(b" ")
                await asyncio.wait({answer}, timeout=1.0)
            if answer.done() and not answer.cancelled() and answer.exception() is None:
                line = answer.result()
                status = line.split(b" ")[1].decode() if line.startswith(b"HTTP/") else "none"
                tally.slow_answers[status] = tally.slow_answers.get(status, 0) + 1
            answer.cancel()
        writer.close()


async def main(port: int, idle: int, slow: int, seconds: float) -> Tally:
    tally = Tally()
    stop = asyncio.Event()
    tasks = [asyncio.create_task(_slow_client(port, stop, tally)) for _ in range(slow)]
    await asyncio.sleep(0.5)
    tasks += [asyncio.create_task(_idle_client(port, stop, tally)) for _ in range(idle)]
    print("ready", flush=True)
    await asyncio.sleep(seconds)
    stop.set()
    await asyncio.wait(tasks, timeout=5)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return tally


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("port", type=int)
    parser.add_argument("--idle", type=int, default=2000)
    parser.add_argument("--slow", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = args.idle + args.slow + 200
    if soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(needed, hard), hard))
    result = asyncio.run(main(args.port, args.idle, args.slow, args.seconds))
    print(json.dumps(asdict(result)), flush=True)
    sys.exit(0)

"""evtrack's Python client for training loops: log calls that never wait on the network.

::

    from evtrack.client import Client

    client = Client("http://tracking:5000")
    with client.start_run(experiment_name="resnet", run_name="lr-0.1") as run:
        run.log_params({"lr": 0.1, "batch": 256})
        for step in range(steps):
            run.log_metric("loss", loss, step=step)     # ~2 us, no I/O
        run.log_artifact("model.pt")

or, module-level: ``evtrack.client.init(experiment_name=...)``, ``evtrack.client.log_metric``,
``evtrack.client.finish()``. ``AsyncClient``/``AsyncRun`` are the asyncio flavour (``async
with``, ``await run.flush()``; log calls stay synchronous).

What a log call does
    It appends one framed record (length, crc32, payload) to a memory-mapped, pre-allocated
    segment file in the spool directory and returns. Metric keys and run ids are interned
    per segment, so a point is 41 bytes. No network, no fsync, no allocation that grows.
    Once the call returns, the point survives the process being killed (SIGKILL, OOM
    killer): the written page belongs to the kernel's page cache. It does not survive a
    power loss or kernel crash before the kernel writes the page back (typically within
    30 s); fsync per point would cost milliseconds, and training data that recent is
    usually lost with the job anyway.

Delivery and exactly-once
    One background thread per client batches records by size and time (default 50k points
    or 1 s), posts them to ``/api/2.0/evtrack/ingest`` as MessagePack with an
    ``Idempotency-Key`` naming the spool range (``<client>:<segment>:<start>-<end>``), and
    advances a per-segment ack file on 200; fully acknowledged segments are deleted. 5xx
    and connection errors are retried with capped exponential backoff and jitter; 429 waits
    for ``Retry-After``; 400s split the batch to isolate the bad records, which are dropped,
    logged, and copied to ``<spool>/rejected/``. See ``_delivery`` for why no record is
    applied twice: in short, a range is always resent with its original key until it gets
    a definite answer, and the server applies a key once.

Crashes and restarts
    Whatever is not acknowledged stays in the spool. Each client owns one folder in the
    spool directory and holds an ``flock`` on it while alive. The next ``Client`` on the
    same spool directory (and the same server) adopts folders whose lock is free, i.e.
    whose process is gone, and delivers them in the background; ``evtrack sync
    [--spool-dir DIR] [--server URL]`` does the same from the command line. A live
    process's folder is never taken.

Memory and disk
    Memory does not grow with the backlog: everything waits on disk, the sender holds one
    batch at a time. The spool directory is capped (``max_spool_bytes``, default 1 GiB, env
    ``EVTRACK_SPOOL_MAX_BYTES``), counted over all clients' folders in it. When a new
    segment would exceed the cap, ``on_spool_full`` (env ``EVTRACK_SPOOL_FULL``) decides:

    * ``"drop"`` (default): new points are dropped and counted (``Client.stats().dropped``),
      one warning is logged, and training never blocks. Points already spooled are kept.
    * ``"block"``: log calls wait until the sender has freed space. Training stalls while
      the server is unreachable, and loses nothing.

Exit
    At interpreter exit (atexit) and on ``close(timeout=...)``, open runs get an ``end``
    record and the sender gets at most ``close_timeout`` seconds (default 30) to deliver;
    then the call returns, whatever the server is doing, and the rest stays in the spool.

Fork and many ranks
    After ``os.fork`` (including multiprocessing's fork start method) the child gets a new
    client identity, spool folder, segment and sender thread, lazily on its first log
    call; the parent's lock and thread are not inherited in a broken state. Runs started
    in the parent can be logged to from the child; only the parent ends them. Many ranks
    of one job log to one run with one client each: share a run id (e.g. ``EVTRACK_RUN_ID``,
    which ``start_run`` picks up) and call ``start_run(experiment_name=..., end_on_exit=
    rank == 0)`` on every rank; whichever start record arrives first creates the run.

Identity
    The server scopes idempotency keys by the acting user, so deliver a spool with the same
    credentials it was written with (the declared user is stored in the folder and sent
    again by ``evtrack sync``; a basic-auth user comes from ``MLFLOW_TRACKING_USERNAME``).

The spool must be on a local file system (``flock`` over NFS is unreliable).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from typing import Any

from evtrack.client._aio import AsyncClient, AsyncRun
from evtrack.client._client import (
    Client,
    ClientStats,
    Run,
    SpoolPolicy,
    default_server_url,
    default_spool_dir,
)
from evtrack.client._sync import SyncReport, sync_spool

__all__ = [
    "AsyncClient",
    "AsyncRun",
    "Client",
    "ClientStats",
    "Run",
    "SpoolPolicy",
    "SyncReport",
    "active_run",
    "default_server_url",
    "default_spool_dir",
    "finish",
    "flush",
    "get_client",
    "init",
    "log_artifact",
    "log_metric",
    "log_metrics",
    "log_param",
    "log_params",
    "set_tag",
    "set_tags",
    "sync_spool",
]

_default: Client | None = None
_default_lock = threading.Lock()


def get_client(**options: Any) -> Client:
    """The process-wide client (created on first use with ``options``)."""
    global _default
    with _default_lock:
        if _default is None or _default._closing:
            _default = Client(**options)
        return _default


def init(
    experiment_name: str | None = None,
    *,
    experiment_id: str | None = None,
    run_name: str | None = None,
    run_id: str | None = None,
    tags: Mapping[str, Any] | None = None,
    end_on_exit: bool = True,
    **client_options: Any,
) -> Run:
    """Start a run on the process-wide client; module-level ``log_*`` calls go to it.
    ``client_options`` are ``Client``'s arguments (``server_url``, ``spool_dir``, ...)."""
    return get_client(**client_options).start_run(
        experiment_name,
        experiment_id=experiment_id,
        run_name=run_name,
        run_id=run_id,
        tags=tags,
        end_on_exit=end_on_exit,
    )


def active_run() -> Run | None:
    return _default.active_run if _default is not None else None


def _run() -> Run:
    run = active_run()
    if run is None:
        raise RuntimeError("No active run: call evtrack.client.init() first")
    return run


def log_metric(
    key: str, value: float, step: int | None = None, timestamp: int | None = None
) -> None:
    _run().log_metric(key, value, step, timestamp)


def log_metrics(
    metrics: Mapping[str, float], step: int | None = None, timestamp: int | None = None
) -> None:
    _run().log_metrics(metrics, step, timestamp)


def log_param(key: str, value: Any) -> None:
    _run().log_param(key, value)


def log_params(params: Mapping[str, Any]) -> None:
    _run().log_params(params)


def set_tag(key: str, value: Any) -> None:
    _run().set_tag(key, value)


def set_tags(tags: Mapping[str, Any]) -> None:
    _run().set_tags(tags)


def log_artifact(local_path: str | os.PathLike[str], artifact_path: str | None = None) -> None:
    _run().log_artifact(local_path, artifact_path)


def flush(timeout: float | None = None) -> bool:
    return _default.flush(timeout) if _default is not None else True


def finish(status: str = "FINISHED") -> None:
    """End the active run of the process-wide client."""
    run = active_run()
    if run is not None:
        run.end(status)

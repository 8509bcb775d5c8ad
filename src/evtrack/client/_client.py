"""``Client`` and ``Run``: the training-thread side (spooling) and the sender thread.

See the package docstring for the guarantees; the comments here say how they are kept.
"""

from __future__ import annotations

import atexit
import contextlib
import getpass
import logging
import operator
import os
import posixpath
import re
import shutil
import socket
import struct
import sys
import threading
import time
import uuid
import weakref
import zlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import msgspec

from evtrack.client._batch import Limits, no_pause
from evtrack.client._delivery import Delivery, rejected_dir, warn_once
from evtrack.client._format import (
    DATA_START,
    FRAME_OVERHEAD,
    POINT,
    POINT_FRAME_SIZE,
    POINTS_HEAD,
    POINTS_ITEM,
    REF,
    SEAL_FRAME_SIZE,
    T_ARTIFACT,
    T_END,
    T_KEY,
    T_PARAMS,
    T_POINT,
    T_POINTS,
    T_RUN,
    T_SEAL,
    T_START,
    T_TAGS,
    SpooledArtifact,
)
from evtrack.client._spool import (
    LockedFolder,
    SegmentFull,
    SegmentWriter,
    clean_staging,
    client_folders,
    list_segments,
    spool_usage,
)
from evtrack.client._transport import Transport, validate_server_url
from evtrack.wire.ingest import IngestKeyValue, IngestRunEnd, IngestRunStart

log = logging.getLogger("evtrack.client")

SpoolPolicy = Literal["drop", "block"]

DEFAULT_MAX_SPOOL_BYTES = 1 << 30
DEFAULT_SEGMENT_BYTES = 16 << 20
DEFAULT_CLOSE_TIMEOUT_S = 30.0
ORPHAN_SCAN_INTERVAL_S = 60.0
POINTS_PER_FRAME = 4096
RUN_STATUSES = ("RUNNING", "SCHEDULED", "FINISHED", "FAILED", "KILLED")

_crc32 = zlib.crc32
_time_ns = time.time_ns
_pack_point = POINT.pack
_INT64_MAX = 2**63 - 1
_pack_header = struct.Struct("<II").pack
_POINT_LEN = POINT.size
_NAME = re.compile(r"^[/\w.\- :]*$")
_RUN_ID = re.compile(r"^[a-zA-Z0-9][\w\-]{0,255}$")
_MAX_KEY = 250
_kv = msgspec.msgpack.Encoder()


def default_server_url() -> str:
    return (
        os.environ.get("EVTRACK_SERVER")
        or os.environ.get("MLFLOW_TRACKING_URI")
        or "http://127.0.0.1:5000"
    )


def default_spool_dir() -> Path:
    configured = os.environ.get("EVTRACK_SPOOL_DIR")
    if configured:
        return Path(configured).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME")
    return (Path(cache) if cache else Path.home() / ".cache") / "evtrack" / "spool"


def _default_user() -> str:
    try:
        return os.environ.get("EVTRACK_USER") or getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def _check_key(key: str, kind: str) -> str:
    """The server's rules for metric/param/tag keys, checked when a key is first seen, so a
    typo fails at the call that made it instead of getting a batch refused later."""
    if not isinstance(key, str):
        raise TypeError(f"{kind} key must be a str, got {type(key).__name__}")
    norm = posixpath.normpath(key)
    if (
        not key
        or len(key) > _MAX_KEY
        or not _NAME.match(key)
        or norm != key
        or norm == "."
        or norm.startswith("..")
        or norm.startswith("/")
    ):
        raise ValueError(
            f"Invalid {kind} key {key!r}: use at most {_MAX_KEY} alphanumerics, underscores,"
            " dashes, periods, spaces, colons and slashes, and no '.', '..' or leading '/'."
        )
    return key


def _check_text(value: str, key: str) -> str:
    """A param or tag value the server can store: anything but NUL."""
    if "\x00" in value:
        raise ValueError(f"The value of {key!r} contains a NUL character, which cannot be stored")
    return value


def _check_point_integers(step: int | None, ts: int) -> tuple[int, int]:
    """The server's rules for a point's step and timestamp, so a bad point fails at the call
    that logged it instead of being spooled and refused later (with its whole batch)."""
    try:
        step = 0 if step is None else operator.index(step)
        ts = operator.index(ts)
    except TypeError:
        raise TypeError("step and timestamp must be integers (timestamp in ms)") from None
    if not 0 <= ts <= _INT64_MAX:
        raise ValueError(f"timestamp must be milliseconds from 0 to 2**63-1, got {ts}")
    if not -_INT64_MAX - 1 <= step <= _INT64_MAX:
        raise ValueError(f"step must be a 64-bit integer, got {step}")
    return step, ts


@dataclass
class ClientStats:
    """Counters, mostly for tests and dashboards."""

    dropped: int  # points and records dropped because the spool was full (policy "drop")
    delivered_points: int  # metric points acknowledged by the server (this client's own)
    rejected_points: int  # metric points the server refused as bad input (see rejected/)
    requests: int  # ingest requests sent for this client's own spool
    throttled: int  # answers asking to retry later (429/503 with Retry-After), honoured
    spool_bytes: int  # bytes in the spool directory awaiting delivery (all clients)


class Run:
    """A run this process logs to. Log calls only append to the local spool.

    Use it as a context manager: on exit it spools an ``end`` record, FINISHED, or FAILED if
    an exception escapes (KILLED for KeyboardInterrupt). Only the process that started the
    run ends it: a forked child leaving the block does not.
    """

    __slots__ = ("__weakref__", "_client", "_end_on_exit", "_ended", "_params", "_pid", "run_id")

    def __init__(self, client: Client, run_id: str, end_on_exit: bool) -> None:
        self._client = client
        self.run_id = run_id
        self._end_on_exit = end_on_exit
        self._ended = False
        self._pid = os.getpid()
        self._params: dict[str, str] = {}

    def __repr__(self) -> str:
        return f"<evtrack Run {self.run_id}>"

    def log_metric(
        self, key: str, value: float, step: int | None = None, timestamp: int | None = None
    ) -> None:
        """Record one point (``timestamp`` in ms since the epoch, default now; ``step``
        default 0). The hot path: interned key, one frame copied into the mapped segment."""
        ts = _time_ns() // 1_000_000 if timestamp is None else timestamp
        value = float(value)
        if ts < 0:
            _check_point_integers(step, ts)
        c = self._client
        with c._lock:
            w = c._writer
            if w is not None:
                k = w.keys.get(key)
                r = w.runs.get(self.run_id)
                if k is not None and r is not None:
                    pos = w.pos
                    end = pos + POINT_FRAME_SIZE
                    if end + SEAL_FRAME_SIZE <= w.size:
                        try:
                            p = _pack_point(T_POINT, r, k, value, ts, 0 if step is None else step)
                        except struct.error:
                            _check_point_integers(step, ts)
                            raise
                        w.mm[pos:end] = _pack_header(_POINT_LEN, _crc32(p)) + p
                        w.pos = end
                        if end >= c._notify_at:
                            c._notify_at = 1 << 62
                            c._wake.set()
                        return
        c._log_points(self.run_id, ((key, value),), step, ts)

    def log_metrics(
        self, metrics: Mapping[str, float], step: int | None = None, timestamp: int | None = None
    ) -> None:
        ts = _time_ns() // 1_000_000 if timestamp is None else timestamp
        items = [(k, float(v)) for k, v in metrics.items()]
        if items:
            self._client._log_points(self.run_id, items, step, ts)

    def log_param(self, key: str, value: Any) -> None:
        self.log_params({key: value})

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Params are write-once (as in MLflow): changing one this process already logged
        raises here, instead of getting the whole batch refused by the server later."""
        pairs = []
        for key, value in params.items():
            _check_key(key, "param")
            text = _check_text(str(value), key)
            old = self._params.get(key)
            if old is not None and old != text:
                raise ValueError(
                    f"Changing param values is not allowed. Param with key='{key}' was already"
                    f" logged with value='{old}' for run ID='{self.run_id}'. Attempted logging"
                    f" new value '{text}'."
                )
            pairs.append(IngestKeyValue(key, text))
        for kv in pairs:
            self._params[kv.key] = kv.value
        if pairs:
            self._client._log_record(self.run_id, T_PARAMS, _kv.encode(pairs))

    def set_tag(self, key: str, value: Any) -> None:
        self.set_tags({key: value})

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        pairs = [
            IngestKeyValue(_check_key(k, "tag"), _check_text(str(v), k)) for k, v in tags.items()
        ]
        if pairs:
            self._client._log_record(self.run_id, T_TAGS, _kv.encode(pairs))

    def log_artifact(
        self, local_path: str | os.PathLike[str], artifact_path: str | None = None
    ) -> None:
        """Copy a file (or a directory's files) into the spool now; the sender uploads it
        once the run exists on the server. The copy is what makes this safe to call right
        before the file is overwritten or the process exits."""
        self._client._log_artifact(self.run_id, Path(local_path), artifact_path)

    def end(self, status: str = "FINISHED") -> None:
        """Spool the run's ``end`` record (idempotent in this process)."""
        if status not in RUN_STATUSES:
            raise ValueError(f"status must be one of {', '.join(RUN_STATUSES)}, got {status!r}")
        if self._ended:
            return
        self._ended = True
        end = IngestRunEnd(status=status, end_time=_time_ns() // 1_000_000)
        self._client._log_record(self.run_id, T_END, _kv.encode(end))
        self._client._forget_run(self)

    def flush(self, timeout: float | None = None) -> bool:
        return self._client.flush(timeout)

    def __enter__(self) -> Run:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not self._end_on_exit or os.getpid() != self._pid:
            self._client._forget_run(self)
            return
        if exc_type is None:
            self.end("FINISHED")
        elif issubclass(exc_type, KeyboardInterrupt):
            self.end("KILLED")
        else:
            self.end("FAILED")


class Client:
    """Spools tracking data locally and delivers it from one background thread.

    ``server_url`` defaults to ``$EVTRACK_SERVER``, then ``$MLFLOW_TRACKING_URI``, then
    ``http://127.0.0.1:5000``; ``spool_dir`` to ``$EVTRACK_SPOOL_DIR``, then
    ``~/.cache/evtrack/spool``. See the package docstring for every option.
    """

    def __init__(
        self,
        server_url: str | None = None,
        spool_dir: str | os.PathLike[str] | None = None,
        *,
        user: str | None = None,
        batch_max_points: int = 50_000,
        batch_interval: float = 1.0,
        max_spool_bytes: int | None = None,
        on_spool_full: SpoolPolicy | None = None,
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
        close_timeout: float = DEFAULT_CLOSE_TIMEOUT_S,
        request_timeout: float = 30.0,
        retry_max_delay: float = 30.0,
        compress: bool | None = None,
        adopt_orphans: bool = True,
        yield_interval: float = 50e-6,
    ) -> None:
        self.server_url = validate_server_url(server_url or default_server_url())
        self.spool_dir = Path(spool_dir).expanduser() if spool_dir else default_spool_dir()
        self.user = user or _default_user()
        self.batch_max_points = batch_max_points
        self.batch_interval = batch_interval
        env_cap = os.environ.get("EVTRACK_SPOOL_MAX_BYTES")
        self.max_spool_bytes = (
            max_spool_bytes
            if max_spool_bytes is not None
            else int(env_cap)
            if env_cap
            else DEFAULT_MAX_SPOOL_BYTES
        )
        policy = on_spool_full or os.environ.get("EVTRACK_SPOOL_FULL", "drop")
        if policy not in ("drop", "block"):
            raise ValueError(f"on_spool_full must be 'drop' or 'block', got {policy!r}")
        self.on_spool_full: SpoolPolicy = policy  # type: ignore[assignment]
        if segment_bytes < 64 * 1024:
            raise ValueError("segment_bytes must be at least 64 KiB")
        self.segment_bytes = segment_bytes
        self.close_timeout = close_timeout
        self.request_timeout = request_timeout
        self.retry_max_delay = retry_max_delay
        self.compress = compress
        self.adopt_orphans = adopt_orphans
        self.yield_interval = yield_interval
        self._notify_bytes = max(1, batch_max_points) * POINT_FRAME_SIZE
        self._init_process_state()
        _CLIENTS.add(self)
        if adopt_orphans:
            self._ensure_sender()

    def _init_process_state(self) -> None:
        """Everything that belongs to one process (reset in a forked child)."""
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._progress = threading.Condition()
        self.client_id = uuid.uuid4().hex
        self._folder: LockedFolder | None = None
        self._writer: SegmentWriter | None = None
        self._spare: SegmentWriter | None = None
        self._seq = 0
        self._notify_at = 1 << 62
        self._sender: _Sender | None = None
        self._closing = False
        self._writer_closed = False
        self._abandoned = False
        self._close_deadline = 0.0
        self._flush_target: tuple[int, int] | None = None
        self._full_until = 0.0
        self._dropped = 0
        self._warned: set[str] = set()
        self._open_runs: list[Run] = []
        self._active: Run | None = getattr(self, "_active", None)
        self._run_starts: dict[str, bytes] = getattr(self, "_run_starts", {})

    # ------------------------------------------------------------------------------ runs

    def start_run(
        self,
        experiment_name: str | None = None,
        *,
        experiment_id: str | None = None,
        run_name: str | None = None,
        run_id: str | None = None,
        tags: Mapping[str, Any] | None = None,
        end_on_exit: bool = True,
    ) -> Run:
        """Start (or join) a run without talking to the server.

        ``run_id`` defaults to ``$EVTRACK_RUN_ID``, else a fresh uuid4 hex. The ``start``
        record is get-or-create on the server, so several processes (ranks) may start the
        same run id: the first to arrive creates it. Pass ``end_on_exit=False`` on all but
        one of them, so only that one marks the run FINISHED/FAILED.
        """
        run_id = run_id or os.environ.get("EVTRACK_RUN_ID") or uuid.uuid4().hex
        if not _RUN_ID.match(run_id):
            raise ValueError(f"Invalid run id {run_id!r}")
        if experiment_id is None and experiment_name is None:
            experiment_id = os.environ.get("EVTRACK_EXPERIMENT_ID") or os.environ.get(
                "MLFLOW_EXPERIMENT_ID"
            )
            if experiment_id is None:
                experiment_name = (
                    os.environ.get("EVTRACK_EXPERIMENT_NAME")
                    or os.environ.get("MLFLOW_EXPERIMENT_NAME")
                    or "Default"
                )
        start = IngestRunStart(
            experiment_id=str(experiment_id) if experiment_id is not None else None,
            experiment_name=experiment_name if experiment_id is None else None,
            run_name=run_name,
            user_id=self.user,
            start_time=_time_ns() // 1_000_000,
            tags=[IngestKeyValue(_check_key(k, "tag"), str(v)) for k, v in (tags or {}).items()],
        )
        self._run_starts[run_id] = _kv.encode(start)
        run = Run(self, run_id, end_on_exit)
        self._open_runs.append(run)
        self._active = run
        # Interning the run in the segment writes its start record (see _frames_for).
        self._log_record(run_id, None, b"")
        return run

    def run(self, run_id: str) -> Run:
        """A handle on an existing run (created elsewhere, e.g. by mlflow) to log to."""
        if not _RUN_ID.match(run_id):
            raise ValueError(f"Invalid run id {run_id!r}")
        return Run(self, run_id, end_on_exit=False)

    @property
    def active_run(self) -> Run | None:
        return self._active

    def _forget_run(self, run: Run) -> None:
        with contextlib.suppress(ValueError):
            self._open_runs.remove(run)
        if self._active is run:
            self._active = self._open_runs[-1] if self._open_runs else None

    def _require_run(self, run_id: str | None) -> str:
        if run_id is not None:
            return run_id
        if self._active is None:
            raise RuntimeError("No active run: call start_run() first or pass run_id=")
        return self._active.run_id

    # Client-level log calls go to ``run_id`` or the active run.

    def log_metric(
        self,
        key: str,
        value: float,
        step: int | None = None,
        timestamp: int | None = None,
        *,
        run_id: str | None = None,
    ) -> None:
        run = self._active if run_id is None else None
        if run is not None:
            run.log_metric(key, value, step, timestamp)
            return
        ts = _time_ns() // 1_000_000 if timestamp is None else timestamp
        self._log_points(self._require_run(run_id), ((key, float(value)),), step, ts)

    def log_metrics(
        self,
        metrics: Mapping[str, float],
        step: int | None = None,
        timestamp: int | None = None,
        *,
        run_id: str | None = None,
    ) -> None:
        ts = _time_ns() // 1_000_000 if timestamp is None else timestamp
        items = [(k, float(v)) for k, v in metrics.items()]
        if items:
            self._log_points(self._require_run(run_id), items, step, ts)

    def log_param(self, key: str, value: Any, *, run_id: str | None = None) -> None:
        self._run_handle(run_id).log_params({key: value})

    def log_params(self, params: Mapping[str, Any], *, run_id: str | None = None) -> None:
        self._run_handle(run_id).log_params(params)

    def set_tag(self, key: str, value: Any, *, run_id: str | None = None) -> None:
        self._run_handle(run_id).set_tags({key: value})

    def set_tags(self, tags: Mapping[str, Any], *, run_id: str | None = None) -> None:
        self._run_handle(run_id).set_tags(tags)

    def log_artifact(
        self,
        local_path: str | os.PathLike[str],
        artifact_path: str | None = None,
        *,
        run_id: str | None = None,
    ) -> None:
        self._log_artifact(self._require_run(run_id), Path(local_path), artifact_path)

    def _run_handle(self, run_id: str | None) -> Run:
        if run_id is None:
            if self._active is None:
                raise RuntimeError("No active run: call start_run() first or pass run_id=")
            return self._active
        for run in self._open_runs:
            if run.run_id == run_id:
                return run
        return Run(self, run_id, end_on_exit=False)

    # ------------------------------------------------------------------- spooling (slow path)

    def _log_points(
        self, run_id: str, items: Iterable[tuple[str, float]], step: int | None, ts: int
    ) -> None:
        step, ts = _check_point_integers(step, ts)
        pairs = list(items)
        for i in range(0, len(pairs), POINTS_PER_FRAME):
            chunk = pairs[i : i + POINTS_PER_FRAME]
            for key, _ in chunk:
                if not isinstance(key, str):
                    raise TypeError(f"metric key must be a str, got {type(key).__name__}")
            self._append(run_id, [k for k, _ in chunk], _PointsPayload(chunk, ts, step), len(chunk))

    def _log_record(self, run_id: str, kind: int | None, body: bytes) -> None:
        self._append(run_id, (), _RecordPayload(kind, body), 1)

    def _append(
        self,
        run_id: str,
        keys: list[str] | tuple[()],
        payload: Callable[[int, list[int]], bytes | None],
        count: int,
    ) -> bool:
        """Append one record, interning its run and keys first (and opening or rolling the
        segment as needed). Returns False if the record was dropped (spool full, closed)."""
        lock = self._lock
        lock.acquire()
        try:
            while True:
                if self._writer_closed:
                    warn_once(
                        self._warned, "closed", "evtrack: log call after Client.close(); dropped"
                    )
                    self._dropped += count
                    return False
                w = self._writer
                if w is None:
                    if time.monotonic() < self._full_until:
                        self._dropped += count
                        return False
                    try:
                        w = self._open_segment()
                    except SegmentFull as exc:
                        if self._spool_full(str(exc), count):
                            continue  # policy "block": space may be free now
                        return False
                    except OSError as exc:
                        log.error("evtrack: cannot write the spool in %s: %s", self.spool_dir, exc)
                        self._full_until = time.monotonic() + 1.0
                        self._dropped += count
                        return False
                frames, run_idx, key_ids = self._frames_for(w, run_id, keys)
                body = payload(run_idx, key_ids)
                if body is not None:
                    frames.append(body)
                need = sum(FRAME_OVERHEAD + len(f) for f in frames)
                if w.pos + need + SEAL_FRAME_SIZE > w.size:
                    if w.pos == DATA_START:
                        raise ValueError(
                            f"record of {need} bytes does not fit in a spool segment "
                            f"({self.segment_bytes} bytes); raise segment_bytes"
                        )
                    self._seal_writer()
                    self._wake.set()
                    continue
                pos = w.pos
                mm = w.mm
                for frame in frames:
                    end = pos + FRAME_OVERHEAD + len(frame)
                    mm[pos:end] = _pack_header(len(frame), _crc32(frame)) + frame
                    pos = end
                    kind = frame[0]
                    if kind in (T_KEY, T_RUN):
                        ident = REF.unpack_from(frame)[1]
                        text = frame[REF.size :].decode()
                        (w.keys if kind == T_KEY else w.runs)[text] = ident
                w.pos = pos
                if pos >= self._notify_at:
                    self._notify_at = 1 << 62
                    self._wake.set()
                return True
        finally:
            lock.release()

    def _frames_for(
        self, w: SegmentWriter, run_id: str, keys: list[str] | tuple[()]
    ) -> tuple[list[bytes], int, list[int]]:
        """Interning frames a record needs in segment ``w`` (applied to the tables only when
        written), with the run index and key ids it will use. A run is interned together with
        its start record, so every segment can create the runs it logs to, whatever order
        segments (of this or other processes) arrive in."""
        frames: list[bytes] = []
        run_idx = w.runs.get(run_id)
        if run_idx is None:
            run_idx = len(w.runs)
            frames.append(REF.pack(T_RUN, run_idx) + run_id.encode())
            start = self._run_starts.get(run_id)
            if start is not None:
                frames.append(REF.pack(T_START, run_idx) + start)
        key_ids: list[int] = []
        new: dict[str, int] = {}
        for key in keys:
            ident = w.keys.get(key)
            if ident is None:
                ident = new.get(key)
                if ident is None:
                    _check_key(key, "metric")
                    ident = new[key] = len(w.keys) + len(new)
                    frames.append(REF.pack(T_KEY, ident) + key.encode())
            key_ids.append(ident)
        return frames, run_idx, key_ids

    def _spool_full(self, why: str, count: int) -> bool:
        """Apply the spool-full policy. True: try again (policy ``block``, after waiting with
        the lock released); False: the record is dropped."""
        if self.on_spool_full == "block" and not self._closing:
            warn_once(
                self._warned,
                "full-block",
                "evtrack: spool %s is full (%s); log calls wait for the sender to free space",
                self.spool_dir,
                why,
            )
            self._wake.set()
            self._lock.release()
            try:
                time.sleep(0.05)
            finally:
                self._lock.acquire()
            return True
        self._dropped += count
        self._full_until = time.monotonic() + 1.0
        warn_once(
            self._warned,
            "full-drop",
            "evtrack: spool %s is full (%s, cap %d bytes); new points are dropped (counted in"
            " Client.stats().dropped) until the sender frees space",
            self.spool_dir,
            why,
            self.max_spool_bytes,
        )
        return False

    def _open_segment(self) -> SegmentWriter:
        """Open the next segment (called with the lock held)."""
        if self._folder is None:
            meta = {
                "version": 1,
                "client_id": self.client_id,
                "server": self.server_url,
                "user": self.user,
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "created_ms": _time_ns() // 1_000_000,
            }
            self._folder = LockedFolder.create(self.spool_dir, self.client_id, meta)
            self._ensure_sender()
            self._wake.set()  # the sender starts batching this folder's time window now
            _register_multiprocessing_finalizer(self)
        seq = self._seq + 1
        spare, self._spare = self._spare, None
        if spare is not None and spare.seq == seq:
            spare.activate(self._folder.path)
            w = spare
        else:
            if spare is not None:
                _discard(spare)
            if spool_usage(self.spool_dir) + self.segment_bytes > self.max_spool_bytes:
                raise SegmentFull("spool cap reached")
            w = SegmentWriter.create(self._folder.path, seq, self.segment_bytes)
        self._seq = seq
        self._writer = w
        self._notify_at = DATA_START + self._notify_bytes
        return w

    def _seal_writer(self) -> None:
        """Close the current segment with a seal record (lock held)."""
        w = self._writer
        if w is None:
            return
        seal = bytes((T_SEAL,))
        if w.pos + SEAL_FRAME_SIZE <= w.size:
            w.mm[w.pos : w.pos + SEAL_FRAME_SIZE] = _pack_header(1, _crc32(seal)) + seal
            w.pos += SEAL_FRAME_SIZE
        w.close()
        self._writer = None

    def _live_state(self) -> tuple[int, int] | None:
        with self._lock:
            if self._writer_closed:
                return None
            w = self._writer
            if w is not None:
                return (w.seq, w.pos)
            return (self._seq + 1, DATA_START)

    def _prepare_spare(self) -> None:
        """Pre-create the next segment on the sender thread once the current one is half
        full, so the log call that fills a segment does not pay for allocating the next."""
        with self._lock:
            w = self._writer
            if w is None or self._spare is not None or self._folder is None:
                return
            if w.pos < w.size // 2 or self._closing:
                return
            folder, seq = self._folder.path, w.seq + 1
        if spool_usage(self.spool_dir) + self.segment_bytes > self.max_spool_bytes:
            return
        try:
            spare = SegmentWriter.create(folder, seq, self.segment_bytes, spare=True)
        except (OSError, SegmentFull):
            return
        with self._lock:
            current = self._writer
            if self._spare is None and current is not None and current.seq + 1 == seq:
                self._spare = spare
                return
        _discard(spare)

    def _log_artifact(self, run_id: str, local: Path, artifact_path: str | None) -> None:
        if not local.exists():
            raise FileNotFoundError(local)
        files: list[tuple[Path, str]] = []
        prefix = (artifact_path or "").strip("/")
        if local.is_dir():
            for path in sorted(local.rglob("*")):
                if path.is_file():
                    rel = path.relative_to(local).as_posix()
                    files.append((path, f"{prefix}/{rel}" if prefix else rel))
        else:
            files.append((local, f"{prefix}/{local.name}" if prefix else local.name))
        for path in (p for p, _ in files):
            if ".." in path.parts:
                raise ValueError(f"invalid artifact path {path}")
        if self._writer is None and not self._writer_closed:
            self._log_record(run_id, None, b"")  # creates the spool folder
        folder = self._folder
        if folder is None:
            self._dropped += len(files)
            return
        folder.artifacts.mkdir(exist_ok=True)
        for path, dest in files:
            size = path.stat().st_size
            while spool_usage(self.spool_dir) + size > self.max_spool_bytes:
                if self.on_spool_full != "block" or self._closing:
                    self._dropped += 1
                    log.warning(
                        "evtrack: spool is full; artifact %s not logged (policy %s)",
                        path,
                        self.on_spool_full,
                    )
                    break
                self._wake.set()
                time.sleep(0.1)
            else:
                name = f"{uuid.uuid4().hex}-{path.name}"
                shutil.copyfile(path, folder.artifacts / name)
                body = _kv.encode(SpooledArtifact(file=name, path=dest))
                if not self._append(run_id, (), _RecordPayload(T_ARTIFACT, body), 1):
                    with contextlib.suppress(FileNotFoundError):
                        (folder.artifacts / name).unlink()

    # --------------------------------------------------------------------- sender & flushing

    def _ensure_sender(self) -> None:
        if self._sender is None:
            self._sender = _Sender(self)
            self._sender.start()

    def _transport(self, user: str | None = None) -> Transport:
        return Transport(
            self.server_url,
            user=user or self.user,
            timeout=self.request_timeout,
            compress=self.compress,
        )

    def _on_progress(self) -> None:
        with self._progress:
            self._progress.notify_all()

    def _done_mark(self) -> tuple[int, int]:
        sender = self._sender
        own = sender.own if sender is not None else None
        return own.done_mark if own is not None else (0, 0)

    def flush(self, timeout: float | None = None) -> bool:
        """Send everything logged so far now (not at the next batch interval) and wait until
        the server acknowledged it, at most ``timeout`` seconds (default: the close timeout).
        Returns whether everything was delivered; what was not stays in the spool."""
        timeout = self.close_timeout if timeout is None else timeout
        with self._lock:
            if self._folder is None:
                return True
            w = self._writer
            target = (w.seq, w.pos) if w is not None else (self._seq + 1, DATA_START)
        self._flush_target = max(self._flush_target or target, target)
        self._ensure_sender()
        self._wake.set()
        deadline = time.monotonic() + timeout
        with self._progress:
            while self._done_mark() < target:
                remaining = deadline - time.monotonic()
                sender = self._sender
                if remaining <= 0 or sender is None or not sender.is_alive():
                    return False
                self._progress.wait(min(remaining, 0.5))
        return True

    def stats(self) -> ClientStats:
        sender = self._sender
        own = sender.own if sender is not None else None
        return ClientStats(
            dropped=self._dropped,
            delivered_points=own.delivered_points if own else 0,
            rejected_points=own.rejected_points if own else 0,
            requests=own.requests if own else 0,
            throttled=own.throttled if own else 0,
            spool_bytes=spool_usage(self.spool_dir),
        )

    def close(self, timeout: float | None = None) -> bool:
        """End this process's open runs, deliver for at most ``timeout`` seconds (default
        ``close_timeout``), then return. Returns whether everything was delivered; anything
        left stays in the spool for the next client on this spool dir or ``evtrack sync``."""
        deadline = time.monotonic() + (self.close_timeout if timeout is None else timeout)
        self._begin_close(deadline)
        return self._finish_close(deadline)

    def _begin_close(self, deadline: float, failed: bool = False) -> None:
        if self._closing:
            return
        # Closing first: a full spool under policy "block" must not hold up the end records.
        self._close_deadline = deadline
        self._closing = True
        for run in list(self._open_runs):
            if run._end_on_exit and run._pid == os.getpid():
                run.end("FAILED" if failed else "FINISHED")
        with self._lock:
            self._seal_writer()
            if self._spare is not None:
                _discard(self._spare)
                self._spare = None
            self._writer_closed = True
        self._wake.set()

    def _finish_close(self, deadline: float) -> bool:
        sender = self._sender
        if sender is not None and sender.is_alive():
            sender.join(max(0.0, deadline - time.monotonic()))
        stuck = sender is not None and sender.is_alive()
        if stuck:
            self._abandoned = True
        _CLIENTS.discard(self)
        folder = self._folder
        if folder is None:
            return True
        self._folder = None
        left = list_segments(folder.path)
        artifacts = list(folder.artifacts.iterdir()) if folder.artifacts.exists() else []
        if not stuck and not left and not artifacts:
            folder.remove()
            return True
        folder.release()
        log.warning(
            "evtrack: not everything was delivered before the close timeout; it stays in %s "
            "and is sent by the next client using this spool dir, or by `evtrack sync`",
            folder.path,
        )
        return False

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -------------------------------------------------------------------------------- fork

    def _after_fork_in_child(self) -> None:
        """The child continues with no threads and the parent's locks in whatever state
        they were: start over with a fresh identity, folder and segment (opened lazily).
        Mappings and descriptors inherited from the parent are closed in the child only;
        the lock file descriptor is closed *without* unlocking the parent's lock."""
        for w in (self._writer, self._spare):
            if w is not None:
                w.close()
        if self._folder is not None:
            self._folder.forget_after_fork()
        self._init_process_state()


class _PointsPayload:
    __slots__ = ("items", "step", "ts")

    def __init__(self, items: list[tuple[str, float]], ts: int, step: int) -> None:
        self.items = items
        self.ts = ts
        self.step = step

    def __call__(self, run_idx: int, key_ids: list[int]) -> bytes:
        items = self.items
        if len(items) == 1:
            return POINT.pack(T_POINT, run_idx, key_ids[0], items[0][1], self.ts, self.step)
        head = POINTS_HEAD.pack(T_POINTS, run_idx, self.ts, self.step, len(items))
        pack = POINTS_ITEM.pack
        return head + b"".join(pack(k, v) for k, (_, v) in zip(key_ids, items, strict=True))


class _RecordPayload:
    __slots__ = ("body", "kind")

    def __init__(self, kind: int | None, body: bytes) -> None:
        self.kind = kind
        self.body = body

    def __call__(self, run_idx: int, key_ids: list[int]) -> bytes | None:
        if self.kind is None:
            return None  # only intern the run (and so spool its start record)
        return REF.pack(self.kind, run_idx) + self.body


def _discard(w: SegmentWriter) -> None:
    w.close()
    with contextlib.suppress(FileNotFoundError):
        w.path.unlink()


# ------------------------------------------------------------------------- the sender thread


class _Sender(threading.Thread):
    """Delivers the client's own spool (batched by size and time), and adopts and delivers
    folders left by dead clients of the same server. It never blocks the training thread:
    it takes the client lock only to read positions, and pauses between small pieces of
    work so the training thread gets the GIL back quickly."""

    def __init__(self, client: Client) -> None:
        super().__init__(name="evtrack-sender", daemon=True)
        self.client = client
        self.own: Delivery | None = None
        self.orphans: list[Delivery] = []
        self._skipped: set[Path] = set()
        yield_s = client.yield_interval
        self.pause: Callable[[], None] = (lambda: time.sleep(yield_s)) if yield_s > 0 else no_pause
        self.limits = Limits(max_points=client.batch_max_points)

    def run(self) -> None:
        try:
            self._run()
        except BaseException:
            log.exception("evtrack: the sender thread failed; data stays in the spool")
        finally:
            for orphan in self.orphans:
                orphan.close()
                orphan.transport.close()
                if not self.client._abandoned:
                    orphan.folder.release()
            if self.own is not None:
                self.own.close()
                self.own.transport.close()
            self.client._on_progress()

    def _due(self, own: Delivery, now: float, next_batch: float) -> bool:
        c = self.client
        if c._closing or now >= next_batch:
            return True
        target = c._flush_target
        if target is not None and own.done_mark < target:
            return True
        state = c._live_state()
        if state is None:
            return True
        seq, committed = state
        mark_seq, mark_pos = own.done_mark
        return mark_seq < seq or committed - mark_pos >= c._notify_bytes

    def _run(self) -> None:
        c = self.client
        next_batch = time.monotonic() + c.batch_interval
        own_retry = 0.0
        orphan_retry = 0.0
        next_scan = 0.0 if c.adopt_orphans else float("inf")
        while not c._abandoned:
            c._wake.clear()
            now = time.monotonic()
            if c._closing and now >= c._close_deadline:
                return
            if self.own is None and c._folder is not None:
                self.own = Delivery(
                    c._folder,
                    c._transport(),
                    rejected_dir(c.spool_dir),
                    limits=self.limits,
                    pause=self.pause,
                    live=c._live_state,
                    on_progress=c._on_progress,
                    backoff_cap=c.retry_max_delay,
                )
            own = self.own
            if own is not None and now >= own_retry and self._due(own, now, next_batch):
                own.deadline = c._close_deadline if c._closing else None
                step = own.step()
                if step.kind == "sent":
                    # The time window is spent; only a full batch, a flush or close sends on
                    # before it ends again (else a steady trickle would be sent point by point).
                    next_batch = time.monotonic() + c.batch_interval
                    continue
                if step.kind == "retry":
                    own_retry = time.monotonic() + step.delay
                else:
                    next_batch = time.monotonic() + c.batch_interval
                    state = c._live_state()
                    if state is not None:
                        seq, pos = own.done_mark
                        c._notify_at = (pos if seq == state[0] else DATA_START) + c._notify_bytes
            if c._closing:
                # Done once the writer is sealed (end records written) and all is acked.
                if c._writer_closed and (
                    not own.pending() if own is not None else c._folder is None
                ):
                    return
                wake_at = min(max(own_retry, now + 0.01), c._close_deadline)
                c._wake.wait(max(0.0, wake_at - time.monotonic()))
                continue
            c._prepare_spare()
            if now >= next_scan:
                self._scan_orphans()
                next_scan = time.monotonic() + ORPHAN_SCAN_INTERVAL_S
            if self.orphans and now >= orphan_retry:
                orphan = self.orphans[0]
                step = orphan.step()
                if step.kind == "sent":
                    continue
                if step.kind == "retry":
                    orphan_retry = time.monotonic() + step.delay
                elif not orphan.pending():
                    self.orphans.pop(0)
                    orphan.close()
                    orphan.transport.close()
                    orphan.folder.remove()
                    log.info("evtrack: delivered the spool left by client %s", orphan.folder.path)
                    continue
            wake_at = next_scan
            if own is not None:
                wake_at = min(wake_at, max(next_batch, own_retry))
            if self.orphans:
                wake_at = min(wake_at, max(orphan_retry, time.monotonic() + 0.01))
            c._wake.wait(max(0.0, min(wake_at - time.monotonic(), 5.0)))

    def _scan_orphans(self) -> None:
        c = self.client
        held = {d.folder.path for d in self.orphans}
        own = c._folder.path if c._folder is not None else None
        clean_staging(c.spool_dir)
        for path in client_folders(c.spool_dir):
            if path == own or path in held or path in self._skipped:
                continue
            if path.name == c.client_id:
                continue
            folder = LockedFolder.try_lock(path)
            if folder is None:
                continue  # a live client owns it
            meta = folder.meta()
            server = str(meta.get("server") or "")
            if server and server.rstrip("/") != c.server_url:
                # Not ours to send: another server's data. `evtrack sync` delivers it.
                folder.release()
                self._skipped.add(path)
                continue
            log.info("evtrack: adopting the spool left by client %s", path.name)
            self.orphans.append(
                Delivery(
                    folder,
                    c._transport(user=str(meta.get("user") or "") or None),
                    rejected_dir(c.spool_dir),
                    limits=self.limits,
                    pause=self.pause,
                    backoff_cap=c.retry_max_delay,
                )
            )


# --------------------------------------------------------------- process-wide: exit and fork

_CLIENTS: weakref.WeakSet[Client] = weakref.WeakSet()


def _close_all() -> None:
    """At interpreter exit: close every client at once, within the longest close timeout
    (not their sum), and mark runs FAILED if the program is exiting on an exception."""
    clients = list(_CLIENTS)
    if not clients:
        return
    failed = getattr(sys, "last_type", None) is not None
    now = time.monotonic()
    for client in clients:
        client._begin_close(now + client.close_timeout, failed=failed)
    for client in clients:
        client._finish_close(client._close_deadline)


atexit.register(_close_all)


def _before_fork() -> None:
    for client in list(_CLIENTS):
        client._lock.acquire()


def _after_fork_in_parent() -> None:
    for client in list(_CLIENTS):
        with contextlib.suppress(RuntimeError):
            client._lock.release()


def _after_fork_in_child() -> None:
    for client in list(_CLIENTS):
        client._after_fork_in_child()


os.register_at_fork(
    before=_before_fork,
    after_in_parent=_after_fork_in_parent,
    after_in_child=_after_fork_in_child,
)


def _register_multiprocessing_finalizer(client: Client) -> None:
    """A multiprocessing child (fork start method) ends with ``os._exit`` and never runs
    atexit handlers; its finalizers do run, so the child's client closes there."""
    mp = sys.modules.get("multiprocessing")
    if mp is None or mp.parent_process() is None:
        return
    from multiprocessing import util

    ref = weakref.ref(client)

    def close() -> None:
        target = ref()
        if target is not None:
            target.close()

    util.Finalize(None, close, exitpriority=100)

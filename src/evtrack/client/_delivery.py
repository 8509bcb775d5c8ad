"""Delivering one client spool folder to the server, in order and exactly once.

The argument, step by step:

1. A range of a segment is sent as one request whose ``Idempotency-Key`` names the range:
   ``<client id>:<segment>:<start>-<end>``. Client ids are random, so no two ranges anywhere
   share a key, and a segment's bytes never change once written, so a key always names the
   same body.
2. Before a request goes out, its range is written to the segment's ack file as "in flight".
   Until that range gets a definite answer it is the only thing sent for that segment, and
   it is sent again byte for byte (after a retry, a crash, or by whoever adopts the folder).
3. The server applies a keyed request once and stores its answer in the same transaction, so
   re-sending a range that was applied returns the stored answer and appends nothing. A
   request that failed (4xx, 429, 5xx) wrote nothing: one request, one transaction.
4. Only after a 200 (or a final rejection) is the acked offset moved past the range; only
   fully acked, sealed segments are deleted. So every record is applied at least once (it
   stays on disk until acknowledged) and at most once (1-3).

A range the server refuses as bad input (4xx other than auth, throttling and conflicts) is
split in two by data records and the halves sent separately, down to a bounded depth, so one
bad record does not take a whole batch of good points with it. What is still refused is
copied to ``rejected/`` with the server's message and acknowledged, never retried forever.
Halves get their own keys: the refused whole wrote nothing, so nothing can repeat.

A server older than packed ingestion ignores the ``packed`` field it does not know and
answers 200 having applied the rest of the request. Its answer counts fewer points than were
sent, which gives it away: the range's points are then sent again as lists under a key of
their own (``<range key>:lists``), since the range's key is spent, and later batches go as
lists. A resend of the range (after a crash) meets the same answer and does the same, and
the second key makes that one idempotent too.

A refusal that names a run of the batch as missing or deleted condemns all of that run's
records, so splitting cannot help: the run goes on the folder's ``dead-runs`` list, its
records are copied to ``rejected/`` and left out, and the rest of the range is sent again
under the same key. That is safe because the refused body wrote nothing, and the bodies ever
sent under one key differ only by records that can no longer be applied: if an earlier body
under the key was applied, the server answers from its table and applies nothing more.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn
from urllib.parse import urlsplit

import msgspec

from evtrack.client._batch import (
    Batch,
    CorruptSpool,
    Cursor,
    Limits,
    Pause,
    decode_range,
    encode_point_lists,
    encode_request,
    recover,
    split_point,
)
from evtrack.client._format import DATA_START
from evtrack.client._spool import (
    REJECTED,
    AckState,
    LockedFolder,
    SegmentReader,
    ack_path,
    list_segments,
    read_ack,
    segment_path,
    write_ack,
)
from evtrack.client._transport import Response, Transport, TransportError
from evtrack.wire.ingest import INGEST_PATH

log = logging.getLogger("evtrack.client")

MAX_SPLIT_DEPTH = 10
SPLIT_BUDGET = 64  # refused requests per batch before the rest of it is rejected whole
DEAD_RUNS = "dead-runs"
BACKOFF_BASE_S = 0.5
BACKOFF_CAP_S = 30.0
RETRY_AFTER_CAP_S = 300.0
ARTIFACTS_API = "/api/2.0/mlflow-artifacts/artifacts/"


def warn_once(warned: set[str], key: str, message: str, *args: object) -> None:
    """Log a warning the first time ``key`` comes up for its owner (a client or delivery):
    a full disk or an unreachable server must not turn into a log line per point."""
    if key not in warned:
        warned.add(key)
        log.warning(message, *args)


@dataclass
class Step:
    """What one delivery step did: ``sent`` (call again), ``idle`` (nothing due), or
    ``retry`` after ``delay`` seconds."""

    kind: str
    delay: float = 0.0


SENT = Step("sent")
IDLE = Step("idle")

# (current segment, committed offset) of a live writer; None once the writer is closed.
LiveState = Callable[[], tuple[int, int] | None]


class _Retry(Exception):
    def __init__(self, delay: float) -> None:
        self.delay = delay


class Delivery:
    """Sends one locked client folder's segments in order. Not thread-safe: one sender."""

    def __init__(
        self,
        folder: LockedFolder,
        transport: Transport,
        rejected_dir: Path,
        *,
        limits: Limits,
        pause: Pause,
        live: LiveState | None = None,
        on_progress: Callable[[], None] | None = None,
        backoff_cap: float = BACKOFF_CAP_S,
    ) -> None:
        self.folder = folder
        self.backoff_cap = backoff_cap
        self.transport = transport
        self.rejected_dir = rejected_dir
        self.limits = limits
        self.pause = pause
        self.live = live
        self.on_progress = on_progress
        self.cursors: dict[int, Cursor] = {}
        self.failures = 0
        self.delivered_points = 0
        self.rejected_points = 0
        self.requests = 0
        self.throttled = 0  # 429/503 answers with Retry-After
        # Everything before (segment, offset) is acknowledged (or rejected). A live client's
        # first segment is 1; nothing before its first record is pending.
        self.done_mark: tuple[int, int] = (1, DATA_START) if live is not None else (0, 0)
        self._artifact_roots: dict[str, str | None] = {}
        self.deadline: float | None = None  # set while closing: bounds request timeouts
        self._split_budget = SPLIT_BUDGET
        self.warned: set[str] = set()
        # Runs the server said do not exist or are deleted: their records are not sent.
        self.dead_runs = self._load_dead_runs()
        self.packed = True  # False once the server turned out to ignore packed points

    # ---------------------------------------------------------------- segment bookkeeping

    def _segments(self) -> list[tuple[int, int | None, bool]]:
        """(seq, limit, sealed) for each segment to look at, oldest first. ``limit`` None
        means "up to the end of valid data" (found by recovery)."""
        state = self.live() if self.live is not None else None
        out: list[tuple[int, int | None, bool]] = []
        for seq in list_segments(self.folder.path):
            if state is not None:
                current, committed = state
                if seq > current:  # a spare prepared ahead of time, not written yet
                    continue
                if seq == current:
                    out.append((seq, committed, False))
                    continue
            out.append((seq, None, True))
        return out

    def _cursor(self, seq: int) -> Cursor | None:
        cursor = self.cursors.get(seq)
        if cursor is not None:
            return cursor
        try:
            reader = SegmentReader(segment_path(self.folder.path, seq))
        except FileNotFoundError:
            return None
        cursor = Cursor(seq, reader, read_ack(ack_path(self.folder.path, seq)))
        if not reader.valid:
            cursor.end = DATA_START
        elif self.live is None:
            # The writer is gone: its last frame may be torn; check every checksum.
            recover(cursor, self.pause)
        self.cursors[seq] = cursor
        return cursor

    def _limit(self, cursor: Cursor, limit: int | None) -> int:
        if limit is not None:
            return limit
        if cursor.end is None:
            if self.live is not None:
                # Our own sealed segment: it ends at its seal record, which decoding finds;
                # no need to check checksums of what this process wrote itself.
                return cursor.reader.size
            recover(cursor, self.pause)
        assert cursor.end is not None
        return cursor.end

    def _finish_segment(self, cursor: Cursor) -> None:
        cursor.reader.close()
        self.cursors.pop(cursor.seq, None)
        with contextlib.suppress(FileNotFoundError):
            segment_path(self.folder.path, cursor.seq).unlink()
        with contextlib.suppress(FileNotFoundError):
            ack_path(self.folder.path, cursor.seq).unlink()
        self._advance((cursor.seq + 1, DATA_START))

    def _advance(self, mark: tuple[int, int]) -> None:
        if mark > self.done_mark:
            self.done_mark = mark
        if self.on_progress is not None:
            self.on_progress()

    def _ack(self, cursor: Cursor, end: int) -> None:
        cursor.ack = AckState(end, None)
        write_ack(ack_path(self.folder.path, cursor.seq), cursor.ack)
        self._advance((cursor.seq, end))

    def pending(self) -> bool:
        """Whether anything is left to deliver (cheap: looks at files and acks only)."""
        for seq, limit, sealed in self._segments():
            cursor = self._cursor(seq)
            if cursor is None:
                continue
            if sealed or cursor.ack.inflight or cursor.ack.acked < self._limit(cursor, limit):
                return True
        return False

    def close(self) -> None:
        for cursor in self.cursors.values():
            cursor.reader.close()
        self.cursors.clear()

    # ---------------------------------------------------------------------------- sending

    def step(self) -> Step:
        """Send at most one request's worth (or finish segments); see ``Step``."""
        try:
            return self._step()
        except _Retry as retry:
            return Step("retry", retry.delay)

    def _step(self) -> Step:
        for seq, limit, sealed in self._segments():
            cursor = self._cursor(seq)
            if cursor is None:
                continue
            if cursor.ack.inflight is not None:
                start, end = cursor.ack.inflight
                self._split_budget = SPLIT_BUDGET
                self._send_exact(cursor, start, end, depth=0)
                return SENT
            end_of_data = self._limit(cursor, limit)
            if cursor.ack.acked >= end_of_data:
                if sealed:
                    self._finish_segment(cursor)
                    continue
                self._advance((seq, cursor.ack.acked))
                return IDLE
            try:
                batch = decode_range(
                    cursor, cursor.ack.acked, end_of_data, self.limits, self.pause, self.dead_runs
                )
            except CorruptSpool as exc:
                self._reject_raw(cursor, cursor.ack.acked, end_of_data, str(exc))
                return SENT
            if batch.end == batch.start:
                if sealed:
                    self._finish_segment(cursor)
                    continue
                self._advance((seq, cursor.ack.acked))
                return IDLE
            if batch.empty and not (batch.skipped or batch.skipped_artifacts):
                # only interning / seal records: nothing to tell the server
                self._ack(cursor, batch.end)
                continue
            self._split_budget = SPLIT_BUDGET
            self._send(cursor, batch, depth=0)
            return SENT
        return IDLE

    def _send_exact(self, cursor: Cursor, start: int, end: int, depth: int) -> None:
        try:
            batch = decode_range(cursor, start, end, None, self.pause, self.dead_runs)
        except CorruptSpool as exc:
            self._reject_raw(cursor, start, end, str(exc))
            return
        batch.end = end
        self._send(cursor, batch, depth)

    def _key(self, batch: Batch) -> str:
        return f"{self.folder.client_id}:{batch.seq}:{batch.start}-{batch.end}"

    def _timeout(self) -> float | None:
        if self.deadline is None:
            return None
        return max(0.05, self.deadline - time.monotonic())

    def _send(self, cursor: Cursor, batch: Batch, depth: int) -> None:
        """Send one range until it has a definite answer (or raise ``_Retry``, leaving it in
        flight). A refused range loses its dead runs' records first, then is split."""
        cursor.ack = AckState(cursor.ack.acked, (batch.start, batch.end))
        write_ack(ack_path(self.folder.path, cursor.seq), cursor.ack)
        points = batch.points
        if batch.skipped or batch.skipped_artifacts:
            points -= self._reject_skipped(cursor, batch)
        body = b""
        if batch.runs:
            body = encode_request(batch.runs, self.pause, packed=self.packed)
            key = self._key(batch)
            try:
                response = self.transport.post_ingest(INGEST_PATH, body, key, self._timeout())
            except TransportError as exc:
                self._transient(f"cannot reach {self.transport.url}: {exc}")
            self.requests += 1
            if response.status >= 300:
                self._classify(response)  # raises _Retry unless the batch itself is bad
                self._split_budget -= 1
                dead = self._dead_run(response, batch)
                if dead is not None:
                    # The same range without the dead run, under the same key: safe, because
                    # the refused body wrote nothing and bodies under a key only ever shrink
                    # by runs whose records can no longer be applied (see the module doc).
                    self._mark_dead(dead, response)
                    self._send_exact(cursor, batch.start, batch.end, depth)
                    return
                mid = None
                if depth < MAX_SPLIT_DEPTH and self._split_budget > 0:
                    mid = split_point(cursor, batch.start, batch.end)
                if mid is None:
                    self._reject(cursor, batch, body, response)
                    return
                log.debug("batch %s refused (%s); splitting", key, response.message)
                self._send_exact(cursor, batch.start, mid, depth + 1)
                self._send_exact(cursor, mid, batch.end, depth + 1)
                return
            if _ignored_points(response, batch) and not self._send_lists(cursor, batch, key):
                return
        self._upload_artifacts(batch)
        self.failures = 0
        self.delivered_points += points
        self._ack(cursor, batch.end)

    def _send_lists(self, cursor: Cursor, batch: Batch, key: str) -> bool:
        """The server applied the batch but ignored its packed points (it predates them):
        send the points as lists under their own key. False if that was refused (the
        batch is then rejected)."""
        warn_once(
            self.warned,
            "lists",
            "evtrack: %s ignores packed metric points (an evtrack server older than this"
            " client); sending points as lists, which costs the sender far more CPU."
            " Upgrade the server.",
            self.transport.url,
        )
        self.packed = False
        body = encode_point_lists(batch.runs)
        try:
            response = self.transport.post_ingest(
                INGEST_PATH, body, f"{key}:lists", self._timeout()
            )
        except TransportError as exc:
            self._transient(f"cannot reach {self.transport.url}: {exc}")
        self.requests += 1
        if response.status >= 300:
            self._classify(response)
            self._reject(cursor, batch, body, response)
            return False
        return True

    # ------------------------------------------------------------------------- dead runs

    def _load_dead_runs(self) -> set[str]:
        try:
            return set((self.folder.path / DEAD_RUNS).read_text().split())
        except FileNotFoundError:
            return set()

    @staticmethod
    def _dead_run(response: Response, batch: Batch) -> str | None:
        """The batch's run that the server says does not exist or is deleted, if any: all
        its records would be refused, so splitting the batch cannot save them."""
        message = response.message
        run_level = response.error_code == "RESOURCE_DOES_NOT_EXIST" or (
            "must be in the 'active' state" in message
        )
        if not run_level:
            return None
        for run_id in batch.runs:
            if run_id in message:
                return run_id
        return None

    def _mark_dead(self, run_id: str, response: Response) -> None:
        self.dead_runs.add(run_id)
        with open(self.folder.path / DEAD_RUNS, "a") as f:
            f.write(run_id + "\n")
        log.warning(
            "evtrack: the server refuses all data for run %s (%s); its spooled records are "
            "dropped and copied to %s",
            run_id,
            response.message,
            self.rejected_dir,
        )

    def _reject_skipped(self, cursor: Cursor, batch: Batch) -> int:
        base = self._rejected_name(cursor.seq, batch.start, batch.end)
        runs = {
            run_id: {
                "metrics": d.metric_lists(),
                "params": [(p.key, p.value) for p in d.params],
                "tags": [(t.key, t.value) for t in d.tags],
            }
            for run_id, d in batch.skipped.items()
        }
        points = sum(d.points for d in batch.skipped.values())
        base.with_suffix(".dead.msgpack").write_bytes(msgspec.msgpack.encode(runs))
        for _, artifact in batch.skipped_artifacts:
            self._reject_file(self.folder.artifacts / artifact.file, "its run is gone")
        self.rejected_points += points
        batch.skipped.clear()
        batch.skipped_artifacts.clear()
        return points

    def _backoff(self) -> float:
        self.failures += 1
        ceiling = min(self.backoff_cap, BACKOFF_BASE_S * (1 << min(self.failures - 1, 16)))
        return ceiling / 2 + random.uniform(0, ceiling / 2)

    def _transient(self, why: str) -> NoReturn:
        delay = self._backoff()
        if self.failures == 1 or self.failures % 10 == 0:
            log.warning("evtrack: %s; data stays in the spool, retrying in %.1fs", why, delay)
        raise _Retry(delay)

    def _classify(self, response: Response) -> None:
        """Raise ``_Retry`` for answers that say nothing about the batch itself; return for
        answers that refuse the batch's content."""
        status = response.status
        if status in (429, 503):
            after = response.retry_after()
            if after is not None:
                self.throttled += 1
                log.info("evtrack: server busy (%s); retrying after %.1fs", status, after)
                raise _Retry(min(after, RETRY_AFTER_CAP_S))
            self._transient(f"server answered {status}")
        if status >= 500 or status in (408, 409, 425):
            self._transient(f"server answered {status}: {response.message}")
        if status in (401, 403):
            warn_once(
                self.warned,
                "auth",
                "evtrack: the server refuses our credentials (%s: %s)",
                status,
                response.message,
            )
            self._transient(f"server answered {status}")
        if status == 404 and response.error_code in ("", "ENDPOINT_NOT_FOUND"):
            warn_once(
                self.warned,
                "endpoint",
                "evtrack: %s has no native ingest route (%s); is it an evtrack server?",
                self.transport.url,
                response.message,
            )
            self._transient(f"server answered {status}")
        if status < 400:  # a redirect or other surprise: not the batch's fault either
            self._transient(f"unexpected answer {status}")

    # -------------------------------------------------------------------------- artifacts

    def _artifact_root(self, run_id: str) -> str | None:
        """The run's artifact root under the mlflow-artifacts proxy, or None if the run does
        not exist or its artifacts are not proxied by the server."""
        if run_id in self._artifact_roots:
            return self._artifact_roots[run_id]
        try:
            response = self.transport.request(
                "GET",
                "/api/2.0/mlflow/runs/get",
                query={"run_id": run_id},
                timeout=self._timeout(),
            )
        except TransportError as exc:
            self._transient(f"cannot reach {self.transport.url}: {exc}")
        if response.status == 404 and response.error_code == "RESOURCE_DOES_NOT_EXIST":
            root: str | None = None
        elif response.status != 200:
            self._classify(response)
            root = None
        else:
            uri = str(response.json().get("run", {}).get("info", {}).get("artifact_uri", ""))
            parts = urlsplit(uri)
            root = parts.path.strip("/") if parts.scheme == "mlflow-artifacts" else None
            if root is None:
                warn_once(
                    self.warned,
                    f"uri:{run_id}",
                    "evtrack: run %s stores artifacts at %s, which the server does not proxy;"
                    " its spooled artifacts are moved to rejected/",
                    run_id,
                    uri,
                )
        self._artifact_roots[run_id] = root
        return root

    def _upload_artifacts(self, batch: Batch) -> None:
        for run_id, artifact in batch.artifacts:
            source = self.folder.artifacts / artifact.file
            if not source.exists():
                continue  # uploaded before a crash; the PUT is idempotent anyway
            root = self._artifact_root(run_id)
            if root is None:
                self._reject_file(source, f"run {run_id}: no proxied artifact root")
                continue
            try:
                with open(source, "rb") as f:
                    size = os.fstat(f.fileno()).st_size
                    response = self.transport.put_file(
                        f"{ARTIFACTS_API}{root}/{artifact.path}", f, size, self._timeout()
                    )
            except TransportError as exc:
                self._transient(f"cannot upload {artifact.path}: {exc}")
            if response.status >= 300:
                self._classify(response)
                self._reject_file(source, f"{response.status}: {response.message}")
                continue
            with contextlib.suppress(FileNotFoundError):
                source.unlink()

    # -------------------------------------------------------------------------- rejection

    def _rejected_name(self, seq: int, start: int, end: int) -> Path:
        self.rejected_dir.mkdir(parents=True, exist_ok=True)
        return self.rejected_dir / f"{self.folder.client_id}-{seq:08d}-{start}-{end}"

    def _reject(self, cursor: Cursor, batch: Batch, body: bytes, response: Response) -> None:
        base = self._rejected_name(cursor.seq, batch.start, batch.end)
        base.with_suffix(".msgpack").write_bytes(body)
        info = {
            "idempotency_key": self._key(batch),
            "status": response.status,
            "error_code": response.error_code,
            "message": response.message,
            "points": batch.points,
            "runs": sorted(batch.runs),
            "rejected_at": time.time(),
        }
        base.with_suffix(".json").write_text(json.dumps(info, indent=2))
        for _, artifact in batch.artifacts:
            self._reject_file(self.folder.artifacts / artifact.file, "its batch was refused")
        self.rejected_points += batch.points
        log.warning(
            "evtrack: the server refused a batch (%d points, runs %s): %s %s. Dropped; a copy"
            " is in %s",
            batch.points,
            ", ".join(sorted(batch.runs)) or "-",
            response.status,
            response.message,
            base.with_suffix(".msgpack"),
        )
        self._ack(cursor, batch.end)

    def _reject_raw(self, cursor: Cursor, start: int, end: int, why: str) -> None:
        """Frames that cannot be decoded: keep their raw bytes, skip past them."""
        base = self._rejected_name(cursor.seq, start, end)
        base.with_suffix(".frames").write_bytes(cursor.buf[start:end])
        base.with_suffix(".json").write_text(json.dumps({"error": why}))
        log.error("evtrack: undecodable spool records (%s); raw copy in %s", why, base)
        self._ack(cursor, end)

    def _reject_file(self, source: Path, why: str) -> None:
        if not source.exists():
            return
        self.rejected_dir.mkdir(parents=True, exist_ok=True)
        target = self.rejected_dir / f"{self.folder.client_id}-{source.name}"
        with contextlib.suppress(OSError):
            shutil.move(str(source), target)
        log.warning("evtrack: artifact not uploaded (%s); kept at %s", why, target)


def _ignored_points(response: Response, batch: Batch) -> bool:
    """Whether a 200 counts fewer points than the request carried: a server that does not
    know ``IngestRecord.packed`` skips it. (A replayed answer counts at least as many: the
    body first sent under a key had every point this one has.)"""
    sent = sum(data.points for data in batch.runs.values())
    answer = response.json()
    counted = answer.get("points") if isinstance(answer, dict) else None
    return sent > 0 and isinstance(counted, int) and counted < sent


def rejected_dir(root: Path) -> Path:
    return root / REJECTED

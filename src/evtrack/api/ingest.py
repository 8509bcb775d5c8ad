"""Native ingestion for training clusters: many runs' data in one request.

Same validation, idempotency and durability as the MLflow routes: the whole request is
validated first, then appended in one transaction as one event per run, and acknowledged only
after commit. A request with an ``Idempotency-Key`` (the evtrack client always sends one) is
applied once however often it is retried. When the server cannot keep up, it says so with
``429`` and ``Retry-After`` instead of queueing without bound: too many ingest requests in
flight at once, or read models too far behind the log.
"""

from __future__ import annotations

import asyncio
import math
import zlib
from collections import defaultdict
from dataclasses import dataclass

import msgspec
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from evtrack.api._common import json_response, run_command, services
from evtrack.api._ingest_points import (
    CheckedPoints,
    KeyChecker,
    RunPoints,
    from_lists,
    from_packed,
)
from evtrack.api._routing import Route
from evtrack.domain import tracking
from evtrack.domain._validation import (
    DOUBLE_MAX,
    MAX_PARAM_VAL_LENGTH,
    MAX_TAG_VAL_LENGTH,
    check_length,
    parse_experiment_id,
    validate_entity_name,
    validate_run_id,
)
from evtrack.errors import ErrorCode, EvtrackError, invalid
from evtrack.eventlog import UnitOfWork
from evtrack.events import KeyValue
from evtrack.permissions import Permission
from evtrack.wire.ingest import (
    MSGPACK,
    NDJSON,
    IngestMetrics,
    IngestRecord,
    IngestRequest,
    IngestResponse,
    IngestRunEnd,
    IngestRunStart,
    NdjsonRecord,
)

MAX_BODY_BYTES = 32 * 1024 * 1024
MAX_POINTS_PER_REQUEST = 1_000_000
MAX_RUNS_PER_REQUEST = 1000
ARTIFACT_ROOT = "mlflow-artifacts:"

_msgpack_request = msgspec.msgpack.Decoder(IngestRequest)
_msgpack_records = msgspec.msgpack.Decoder(list[IngestRecord])
_ndjson_record = msgspec.json.Decoder(NdjsonRecord)
_NON_FINITE = {"NaN": math.nan, "Infinity": DOUBLE_MAX, "-Infinity": -DOUBLE_MAX}


@dataclass
class IngestLimits:
    """Back-pressure thresholds. Past them the server answers 429 with Retry-After."""

    max_in_flight: int = 16
    queue_wait_s: float = 2.0
    max_projection_lag_events: int = 50_000
    retry_after_s: int = 1


class IngestGate:
    """Admission control: a bounded number of ingest requests at once, none when lagging."""

    def __init__(self, limits: IngestLimits) -> None:
        self.limits = limits
        self._slots = asyncio.Semaphore(limits.max_in_flight)

    def busy(self, why: str) -> EvtrackError:
        return EvtrackError(
            ErrorCode.REQUEST_LIMIT_EXCEEDED,
            f"Ingestion is throttled: {why}. Retry later.",
            headers={"Retry-After": str(self.limits.retry_after_s)},
        )

    async def __aenter__(self) -> None:
        try:
            await asyncio.wait_for(self._slots.acquire(), self.limits.queue_wait_s)
        except TimeoutError:
            raise self.busy("too many ingest requests in flight") from None

    async def __aexit__(self, *_: object) -> None:
        self._slots.release()


INGEST_GATE = web.AppKey("ingest_gate", IngestGate)


async def _body(request: web.Request) -> bytes:
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise invalid(f"Ingest requests must be at most {MAX_BODY_BYTES} bytes.")
    chunks, size = [], 0
    try:
        async for chunk in request.content.iter_chunked(1 << 16):
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                raise invalid(f"Ingest requests must be at most {MAX_BODY_BYTES} bytes (inflated).")
            chunks.append(chunk)
    except (ValueError, zlib.error, HttpProcessingError) as exc:
        raise invalid(f"Unreadable request body: {exc}") from None
    # aiohttp inflates a gzip body as it streams in, so the cap above bounds the inflated size
    # and a small compressed bomb cannot blow up memory.
    return b"".join(chunks)


def _decode(content_type: str, body: bytes) -> list[IngestRecord]:
    try:
        if content_type == MSGPACK:
            # Either {"records": [...]} or a bare array of records.
            is_array = bool(body) and (0x90 <= body[0] <= 0x9F or body[0] in (0xDC, 0xDD))
            return (
                _msgpack_records.decode(body) if is_array else _msgpack_request.decode(body).records
            )
        if content_type == NDJSON:
            return [
                _from_ndjson(_ndjson_record.decode(line))
                for line in body.splitlines()
                if line.strip()
            ]
    except msgspec.ValidationError as exc:
        raise invalid(f"Invalid ingest request: {exc}") from None
    except msgspec.DecodeError as exc:
        raise invalid(f"Malformed ingest request body: {exc}") from None
    raise invalid(f"Content-Type must be {MSGPACK} or {NDJSON}, got '{content_type or 'none'}'.")


def _from_ndjson(record: NdjsonRecord) -> IngestRecord:
    metrics = None
    if record.metrics is not None:
        values = []
        for value in record.metrics.values:
            if isinstance(value, str):
                if value not in _NON_FINITE:
                    raise invalid(
                        f"Invalid metric value {value!r}: "
                        "use a number, 'NaN', 'Infinity' or '-Infinity'."
                    )
                values.append(_NON_FINITE[value])
            else:
                values.append(value)
        metrics = IngestMetrics(
            record.metrics.keys, values, record.metrics.timestamps, record.metrics.steps
        )
    return IngestRecord(
        record.run_id, metrics, record.params, record.tags, record.start, record.end
    )


@dataclass
class _Plan:
    """What one request will do: runs to create, data to log, runs to end; all validated."""

    starts: dict[str, IngestRunStart]
    data: dict[str, tracking.RunData]
    ends: dict[str, IngestRunEnd]
    summary: IngestResponse


def _plan(records: list[IngestRecord]) -> _Plan:
    grouped, summary = _validated(records)
    starts: dict[str, IngestRunStart] = {}
    ends: dict[str, IngestRunEnd] = {}
    for index, record in enumerate(records):
        if record.start is not None:
            start = record.start
            if not (start.experiment_id or start.experiment_name):
                raise invalid(f"records[{index}].start needs an experiment_id or experiment_name.")
            if start.experiment_id is not None:
                parse_experiment_id(start.experiment_id)
            starts.setdefault(record.run_id, start)
        if record.end is not None:
            if record.end.status not in tracking.RUN_STATUSES:
                raise invalid(
                    f"records[{index}].end.status must be one of {list(tracking.RUN_STATUSES)}."
                )
            ends[record.run_id] = record.end
    runs = len(set(grouped) | set(starts) | set(ends))
    summary = IngestResponse(runs, summary.points, summary.params, summary.tags)
    return _Plan(starts, grouped, ends, summary)


def _validated(records: list[IngestRecord]) -> tuple[dict[str, tracking.RunData], IngestResponse]:
    """Group records by run and check every value, before anything is written."""
    keys = KeyChecker()
    points_by_run: dict[str, RunPoints] = defaultdict(RunPoints)
    params: dict[str, dict[str, str]] = defaultdict(dict)
    tags: dict[str, dict[str, str]] = defaultdict(dict)
    points = n_params = n_tags = 0
    for index, record in enumerate(records):
        where = f"records[{index}]"
        validate_run_id(record.run_id, f"{where}.run_id")
        for checked, names_field in _record_points(record, where):
            keys.check(checked.names, names_field)
            points_by_run[record.run_id].add(checked)
            points += len(checked)
            if points > MAX_POINTS_PER_REQUEST:
                raise invalid(
                    f"An ingest request can carry at most {MAX_POINTS_PER_REQUEST} metric "
                    f"points; got more."
                )
        for p in record.params:
            validate_entity_name(p.key, f"{where}.params.key", kind="param")
            value = check_length("Param value", MAX_PARAM_VAL_LENGTH, p.value, truncate=True)
            if params[record.run_id].setdefault(p.key, value) != value:
                raise invalid(
                    f"Duplicate parameter key {p.key!r} with different values "
                    f"for run {record.run_id}."
                )
            n_params += 1
        for t in record.tags:
            validate_entity_name(t.key, f"{where}.tags.key", kind="tag")
            tags[record.run_id][t.key] = check_length(
                "Tag value", MAX_TAG_VAL_LENGTH, t.value, truncate=True
            )
            n_tags += 1
    runs = {r for r, p in points_by_run.items() if p.count} | set(params) | set(tags)
    if len(runs) > MAX_RUNS_PER_REQUEST:
        raise invalid(
            f"An ingest request can address at most {MAX_RUNS_PER_REQUEST} runs; got {len(runs)}."
        )
    grouped = {
        run_id: tracking.RunData(
            None,
            [KeyValue(k, v) for k, v in params.get(run_id, {}).items()],
            [KeyValue(k, v) for k, v in tags.get(run_id, {}).items()],
            packed_metrics=points_by_run[run_id].packed() if run_id in points_by_run else None,
        )
        for run_id in sorted(runs)
    }
    return grouped, IngestResponse(len(runs), points, n_params, n_tags)


def _record_points(record: IngestRecord, where: str) -> list[tuple[CheckedPoints, str]]:
    """The record's points, each with the field its metric keys came in (for errors)."""
    out = []
    if record.metrics is not None:
        out.append((from_lists(record.metrics, f"{where}.metrics"), f"{where}.metrics.keys"))
    if record.packed is not None:
        out.append((from_packed(record.packed, f"{where}.packed"), f"{where}.packed.names"))
    return out


async def ingest(request: web.Request) -> web.Response:
    gate = request.app[INGEST_GATE]
    async with gate:
        svc = services(request)
        if svc.runtime is not None:
            lag = svc.runtime.lag_behind(svc.store.last_appended_position)
            if lag > gate.limits.max_projection_lag_events:
                raise gate.busy("read models are catching up with the log")
        body = await _body(request)
        content_type = request.headers.get("Content-Type", "").split(";")[0].strip().lower()
        plan = _plan(_decode(content_type, body))

        async def command(uow: UnitOfWork) -> IngestResponse:
            for run_id, start in sorted(plan.starts.items()):
                if await tracking.run_exists(uow, run_id):
                    continue
                if start.experiment_id is not None:
                    experiment_id = parse_experiment_id(start.experiment_id)
                else:
                    assert start.experiment_name is not None
                    experiment_id = await tracking.experiment_id_for_name(
                        uow, start.experiment_name, artifact_root=ARTIFACT_ROOT
                    )
                await tracking.create_run(
                    uow,
                    experiment_id,
                    start.user_id or "",
                    start.run_name,
                    start.start_time,
                    [(t.key, t.value) for t in start.tags],
                    run_id=run_id,
                )
                # The run's later records in this request decide on the version just written.
                await uow.flush()
            for run_id, data in plan.data.items():
                await tracking.log_run_data(uow, run_id, data)
                if run_id in plan.ends:
                    await uow.flush()
            for run_id, end in sorted(plan.ends.items()):
                await tracking.update_run(uow, run_id, end.status, end.end_time, None)
            return plan.summary

        result = await run_command(request, command, result_type=IngestResponse, raw=body)
        return json_response(result)


def ingest_routes() -> list[Route]:
    return [
        Route(
            "POST", "/evtrack/ingest", ingest, Permission.EXPERIMENT_EDIT, prefixes=("/api/2.0",)
        ),
    ]

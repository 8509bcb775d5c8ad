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
from dataclasses import dataclass

import msgspec
import numpy as np
from aiohttp import web

from evtrack.api._access import IN_HANDLER, access, auth_enabled, require
from evtrack.api._bodies import Body, read_body
from evtrack.api._common import execute, json_response, services
from evtrack.api._routing import Route
from evtrack.domain import DOUBLE_MAX, parse_experiment_id
from evtrack.domain.commands import EndRun, Ingest, PackedPoints, StartRun
from evtrack.domain.commands import IngestRecord as DomainRecord
from evtrack.errors import ErrorCode, EvtrackError, invalid
from evtrack.events import KeyValue
from evtrack.permissions import WILDCARD, Permission
from evtrack.wire.ingest import (
    MSGPACK,
    NDJSON,
    IngestMetrics,
    IngestRecord,
    IngestRequest,
    IngestRunStart,
    NdjsonRecord,
)

MAX_BODY_BYTES = 32 * 1024 * 1024

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
    """Admission control: a bounded number of ingest requests decoded and executed at once,
    none when lagging. Entered only once a request's body has arrived (see :func:`ingest`)."""

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


def _decode(content_type: str, body: Body) -> list[IngestRecord]:
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


def _command(records: list[IngestRecord]) -> Ingest:
    """The request as the domain's command: list-form points become packed arrays (decoding
    only; every rule is the domain's)."""
    return Ingest(
        records=[
            DomainRecord(
                run_id=record.run_id,
                points=_points(record, index),
                params=[KeyValue(p.key, p.value) for p in record.params],
                tags=[KeyValue(t.key, t.value) for t in record.tags],
                start=_start(record.start),
                end=None if record.end is None else EndRun(**msgspec.structs.asdict(record.end)),
            )
            for index, record in enumerate(records)
        ]
    )


def _points(record: IngestRecord, index: int) -> list[PackedPoints]:
    out = []
    if (m := record.metrics) is not None:
        where = f"records[{index}].metrics"
        n = len(m.keys)
        if not (len(m.values) == len(m.timestamps) == len(m.steps) == n):
            raise invalid(f"{where}: keys, values, timestamps and steps must have equal lengths.")
        names = list(dict.fromkeys(m.keys))
        position = {name: i for i, name in enumerate(names)}
        try:
            timestamps = np.asarray(m.timestamps, dtype="<i8")
            steps = np.asarray(m.steps, dtype="<i8")
        except OverflowError:
            raise invalid(f"{where}: timestamps and steps must fit in 64-bit integers.") from None
        out.append(
            PackedPoints(
                field="metrics",
                names=names,
                key_index=np.fromiter(map(position.__getitem__, m.keys), "<u4", n).tobytes(),
                values=np.asarray(m.values, dtype="<f8").tobytes(),
                timestamps=timestamps.tobytes(),
                steps=steps.tobytes(),
            )
        )
    if (p := record.packed) is not None:
        out.append(
            PackedPoints(
                field="packed",
                names=p.names,
                key_index=p.key_index,
                values=p.values,
                timestamps=p.timestamps,
                steps=p.steps,
            )
        )
    return out


def _start(start: IngestRunStart | None) -> StartRun | None:
    if start is None:
        return None
    return StartRun(
        experiment_id=start.experiment_id,
        experiment_name=start.experiment_name,
        run_name=start.run_name,
        user_id=start.user_id,
        start_time=start.start_time,
        tags=[KeyValue(t.key, t.value) for t in start.tags],
    )


async def ingest(request: web.Request) -> web.Response:
    """Read the (bounded) body first, then take a slot for decoding and executing it.

    A slot bounds the work the server does at once, not the clients it talks to: a client
    uploading slowly holds only its own connection and at most ``MAX_BODY_BYTES``, never a
    slot, so it cannot make fast clients wait or get 429. Lag is checked before the upload
    (to refuse early) and again once a slot is held (it may have grown meanwhile).
    """
    gate = request.app[INGEST_GATE]
    lagging = "read models are catching up with the log"
    if services(request).ingest_lag() > gate.limits.max_projection_lag_events:
        raise gate.busy(lagging)
    # Bounded (inflated: aiohttp inflates gzip as it streams in, so a small compressed bomb
    # cannot blow up memory), within the server's body budget, on the body clock.
    body = await read_body(request, limit=MAX_BODY_BYTES)
    async with gate:
        if services(request).ingest_lag() > gate.limits.max_projection_lag_events:
            raise gate.busy(lagging)
        content_type = request.headers.get("Content-Type", "").split(";")[0].strip().lower()
        command = await _authorized(request, _command(_decode(content_type, body)))
        summary = await execute(request, command)
        return json_response(summary)


async def _authorized(request: web.Request, command: Ingest) -> Ingest:
    """Check EDIT on the experiment of every run the request touches (CREATE where it
    starts a run in a new experiment by name), and tell the decision what was assumed.

    The read models may not show a run created a moment ago; the decision, which sees the
    runs as they are, refuses the request (503, retry) if a run is not where it was assumed.
    Nothing here waits for the read models: ingest must keep going while they catch up.
    """
    if not auth_enabled(request):
        return command
    control = access(request)
    starts: dict[str, StartRun | None] = {}
    for record in command.records:
        if starts.get(record.run_id) is None:
            starts[record.run_id] = record.start
    authorized: dict[str, int | None] = {}
    editable: set[str] = set()
    creates = False
    for run_id, start in starts.items():
        found = await control.experiment_of_run(run_id, wait=False)
        if found is None and start is not None:
            if start.experiment_id is not None:
                found = str(parse_experiment_id(start.experiment_id))
            elif start.experiment_name is not None:
                found = await control.experiment_named(start.experiment_name, wait=False)
                creates = creates or found is None
        authorized[run_id] = None if found is None else int(found)
        if found is not None:
            editable.add(found)
    await require(request, Permission.EXPERIMENT_EDIT, sorted(editable))
    if creates:
        await require(request, Permission.EXPERIMENT_CREATE, [WILDCARD])
    return msgspec.structs.replace(command, authorized=authorized)


def ingest_routes() -> list[Route]:
    return [
        # Every run the body names is checked in the handler (see _authorized).
        Route(
            "POST",
            "/evtrack/ingest",
            ingest,
            Permission.EXPERIMENT_EDIT,
            prefixes=("/api/2.0",),
            resource=IN_HANDLER,
            body_types=(MSGPACK, NDJSON),
        ),
    ]

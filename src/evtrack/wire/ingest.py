"""Wire types of evtrack's native ingestion route, shared by the server and ``evtrack.client``.

One request carries records for many runs. Metric points travel as columns (one list per
field), or packed into little-endian arrays (``IngestPackedMetrics``), so a batch of a million
points is a handful of arrays, not a million objects.
MessagePack is the fast path; NDJSON (one record per line) is there for curl and shell
pipelines, where NaN and infinities may be spelled as the strings "NaN", "Infinity" and
"-Infinity".
"""

from __future__ import annotations

import msgspec


class IngestMetrics(msgspec.Struct, omit_defaults=True):
    keys: list[str]
    values: list[float]
    timestamps: list[int]
    steps: list[int]


class IngestPackedMetrics(msgspec.Struct):
    """Metric points as packed little-endian arrays (MessagePack ``bin``), the bulk form.

    ``names`` are metric keys; ``key_index`` is one ``uint32`` per point, an index into
    ``names``; ``values`` are ``float64`` (NaN and infinities allowed), ``timestamps`` (ms)
    and ``steps`` are ``int64``. The server never makes a Python object per point of these.
    """

    names: list[str]
    key_index: bytes
    values: bytes
    timestamps: bytes
    steps: bytes


class IngestKeyValue(msgspec.Struct):
    key: str
    value: str


class IngestRunStart(msgspec.Struct, omit_defaults=True):
    """Create the record's run if it does not exist yet (with the client-chosen run_id).

    The experiment is named by id or by name (created if missing), so a job that starts while
    the server is unreachable can still describe everything it will need.
    """

    experiment_id: str | None = None
    experiment_name: str | None = None
    run_name: str | None = None
    user_id: str | None = None
    start_time: int | None = None
    tags: list[IngestKeyValue] = []


class IngestRunEnd(msgspec.Struct, omit_defaults=True):
    status: str = "FINISHED"
    end_time: int | None = None


class IngestRecord(msgspec.Struct, omit_defaults=True):
    run_id: str
    metrics: IngestMetrics | None = None
    params: list[IngestKeyValue] = []
    tags: list[IngestKeyValue] = []
    start: IngestRunStart | None = None
    end: IngestRunEnd | None = None
    packed: IngestPackedMetrics | None = None  # MessagePack only; may come with ``metrics``


class IngestRequest(msgspec.Struct):
    records: list[IngestRecord]


class IngestResponse(msgspec.Struct):
    runs: int
    points: int
    params: int
    tags: int


# NDJSON lines may spell non-finite values as strings.
class NdjsonMetrics(msgspec.Struct):
    keys: list[str]
    values: list[float | str]
    timestamps: list[int]
    steps: list[int]


class NdjsonRecord(msgspec.Struct):
    run_id: str
    metrics: NdjsonMetrics | None = None
    params: list[IngestKeyValue] = []
    tags: list[IngestKeyValue] = []
    start: IngestRunStart | None = None
    end: IngestRunEnd | None = None


MSGPACK = "application/msgpack"
NDJSON = "application/x-ndjson"
INGEST_PATH = "/api/2.0/evtrack/ingest"

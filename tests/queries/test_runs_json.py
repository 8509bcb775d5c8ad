"""Runs rendered by PostgreSQL (queries/runs.py) read exactly as the Python rendering before it.

The oracle below is the previous implementation of ``get_runs``: seven queries and msgspec wire
objects. Every run logged here (params, tags, metrics that are NaN, infinite, integral, huge or
tiny, odd strings, dataset inputs with and without tags, model inputs and outputs, runs without
start time) must come back the same through runs/get, runs/search and ``get_runs``, down to
the JSON types (a float stays a float, ``"NaN"`` stays a string). The spelling of numbers may
differ (``1e+20`` for ``1e20``); the values may not.
"""

from __future__ import annotations

import asyncio
import math
import uuid
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import asyncpg
import msgspec
import pytest
import requests
from _support.server import EvtrackServer

from evtrack.queries import runs as queries
from evtrack.search import compile_run_search
from evtrack.wire import mlflow as wire

API = "/api/2.0/mlflow"
DOUBLE_MAX = 1.7976931348623157e308
ODD = 'quote " backslash \\ newline \n tab \t ctl \u0001 \u007f é 🙂 </script> \u2028'
METRIC_VALUES: list[Any] = [
    0.5,
    3.0,
    -2.0,
    -0.0,
    1e20,
    1.5e-7,
    123456789012345.0,
    1e15,
    1.7976931348623157e308,
    5e-324,
    "NaN",
    "Infinity",
    "-Infinity",
]


# --------------------------------------------------------------------------- the oracle


async def _pairs(db: Any, table: str, ids: list[str]) -> dict[str, list[wire.KeyValue]]:
    out: dict[str, list[wire.KeyValue]] = defaultdict(list)
    for row in await db.fetch(
        f"""SELECT run_id, key, value FROM rm_runs.{table}
            WHERE run_id = ANY($1::text[]) ORDER BY run_id, key""",
        ids,
    ):
        out[row["run_id"]].append(wire.KeyValue(row["key"], row["value"]))
    return out


async def reference_runs(db: Any, ids: list[str]) -> list[wire.Run]:
    """``get_runs`` as it was before runs were rendered by PostgreSQL."""
    rows = await db.fetch("SELECT * FROM rm_runs.runs WHERE run_id = ANY($1::text[])", ids)
    params = await _pairs(db, "params", ids)
    tags = await _pairs(db, "tags", ids)
    metrics: dict[str, list[wire.Metric]] = defaultdict(list)
    for m in await db.fetch(
        """SELECT run_id, key, value, timestamp, step, is_nan FROM rm_runs.latest_metrics
           WHERE run_id = ANY($1::text[]) ORDER BY run_id, key""",
        ids,
    ):
        metrics[m["run_id"]].append(
            wire.Metric(
                key=m["key"],
                value="NaN" if m["is_nan"] else wire.json_double(m["value"]),
                timestamp=m["timestamp"],
                step=m["step"],
            )
        )
    datasets: dict[str, list[wire.DatasetInput]] = defaultdict(list)
    for d in await db.fetch(
        """SELECT * FROM rm_runs.dataset_inputs WHERE run_id = ANY($1::text[])
           ORDER BY run_id, name, digest""",
        ids,
    ):
        datasets[d["run_id"]].append(
            wire.DatasetInput(
                dataset=wire.Dataset(
                    name=d["name"],
                    digest=d["digest"],
                    source_type=d["source_type"],
                    source=d["source"],
                    schema=d["schema"],
                    profile=d["profile"],
                ),
                tags=msgspec.json.decode(d["tags"], type=list[wire.KeyValue]),
            )
        )
    model_inputs: dict[str, list[wire.ModelInput]] = defaultdict(list)
    for mi in await db.fetch(
        """SELECT run_id, model_id FROM rm_runs.model_inputs WHERE run_id = ANY($1::text[])
           ORDER BY run_id, model_id""",
        ids,
    ):
        model_inputs[mi["run_id"]].append(wire.ModelInput(mi["model_id"]))
    outputs: dict[str, list[wire.ModelOutput]] = defaultdict(list)
    for mo in await db.fetch(
        """SELECT run_id, model_id, step FROM rm_runs.model_outputs
           WHERE run_id = ANY($1::text[]) ORDER BY run_id, model_id""",
        ids,
    ):
        outputs[mo["run_id"]].append(wire.ModelOutput(mo["model_id"], mo["step"]))
    by_id = {
        r["run_id"]: wire.Run(
            info=wire.RunInfo(
                run_id=r["run_id"],
                run_uuid=r["run_id"],
                run_name=r["run_name"],
                experiment_id=str(r["experiment_id"]),
                user_id=r["user_id"],
                status=r["status"],
                artifact_uri=r["artifact_uri"],
                lifecycle_stage=r["lifecycle_stage"],
                start_time=r["start_time"],
                end_time=r["end_time"],
            ),
            data=wire.RunData(
                metrics=metrics.get(r["run_id"], []),
                params=params.get(r["run_id"], []),
                tags=tags.get(r["run_id"], []),
            ),
            inputs=wire.RunInputs(
                dataset_inputs=datasets.get(r["run_id"], []),
                model_inputs=model_inputs.get(r["run_id"], []),
            ),
            outputs=wire.RunOutputs(model_outputs=outputs.get(r["run_id"], [])),
        )
        for r in rows
    }
    return [by_id[i] for i in ids if i in by_id]


def typed(node: Any) -> Any:
    """JSON with its types made visible: ``1`` and ``1.0`` differ, floats compare exactly."""
    if isinstance(node, dict):
        return {k: typed(v) for k, v in node.items()}
    if isinstance(node, list):
        return [typed(v) for v in node]
    if isinstance(node, float):
        return ("float", node.hex())
    return (type(node).__name__, node)


def as_json(run: wire.Run) -> Any:
    return typed(msgspec.json.decode(msgspec.json.encode(run)))


def without_model_inputs(run: Any) -> Any:
    """MLflow's search_runs leaves a run's model inputs out; runs/get has them."""
    inputs = dict(run["inputs"])
    inputs.pop("model_inputs", None)
    return {**run, "inputs": inputs}


# --------------------------------------------------------------------------- the data


class Client:
    def __init__(self, server: EvtrackServer) -> None:
        self.url = server.url
        self.session = requests.Session()

    def post(self, endpoint: str, body: dict[str, Any]) -> Any:
        r = self.session.post(f"{self.url}{API}/{endpoint}", json=body)
        assert r.status_code == 200, r.text
        return r.json()

    def get_raw(self, endpoint: str, **params: Any) -> Any:
        r = self.session.get(f"{self.url}{API}/{endpoint}", params=params)
        assert r.status_code == 200, r.text
        return msgspec.json.decode(r.content)

    def ingest(self, records: list[dict[str, Any]]) -> None:
        r = self.session.post(
            f"{self.url}/api/2.0/evtrack/ingest",
            data=msgspec.msgpack.encode(records),
            headers={"Content-Type": "application/msgpack"},
        )
        assert r.status_code == 200, r.text


def _log_runs(client: Client) -> tuple[str, list[str]]:
    exp = client.post("experiments/create", {"name": f"json-{uuid.uuid4().hex[:8]}"})
    experiment_id = exp["experiment_id"]

    def create(name: str, start: int, **extra: Any) -> str:
        body = {"experiment_id": experiment_id, "run_name": name, "start_time": start, **extra}
        return str(client.post("runs/create", body)["run"]["info"]["run_id"])

    full = create(ODD, 1000, user_id=ODD, tags=[{"key": "mlflow.note", "value": ODD}])
    client.post(
        "runs/log-batch",
        {
            "run_id": full,
            "metrics": [
                {"key": f"m{i:02}", "value": v, "timestamp": 10 + i, "step": i}
                for i, v in enumerate(METRIC_VALUES)
            ],
            "params": [
                {"key": "odd key: with/odd.chars-ü", "value": ODD},
                {"key": "empty", "value": ""},
                {"key": "B", "value": "upper"},
                {"key": "a", "value": "lower"},
            ],
            "tags": [{"key": "odd", "value": ODD}, {"key": "empty", "value": ""}],
        },
    )
    client.post(
        "runs/log-inputs",
        {
            "run_id": full,
            "datasets": [
                {
                    "dataset": {
                        "name": "train",
                        "digest": "d1",
                        "source_type": "local",
                        "source": '{"uri": "/data/train"}',
                        "schema": ODD,
                        "profile": '{"num_rows": 3}',
                    },
                    "tags": [
                        {"key": "mlflow.data.context", "value": "training"},
                        {"key": "z", "value": ODD},
                        {"key": "a", "value": ""},
                    ],
                },
                {"dataset": {"name": ODD, "digest": "d2", "source_type": "s", "source": "x"}},
            ],
            "models": [{"model_id": "m-" + "b" * 32}, {"model_id": "m-" + "a" * 32}],
        },
    )
    client.post(
        "runs/outputs",
        {"run_id": full, "models": [{"model_id": "m-" + "c" * 32, "step": 7}]},
    )
    client.post("runs/update", {"run_id": full, "status": "FINISHED", "end_time": 5000})

    bare = create("bare", 2000)
    deleted = create("deleted", 3000)
    client.post("runs/log-metric", {"run_id": deleted, "key": "m00", "value": 9, "timestamp": 1})
    client.post("runs/delete", {"run_id": deleted})
    nan_only = create("nan only", 4000)
    client.post(
        "runs/log-metric", {"run_id": nan_only, "key": "m00", "value": "NaN", "timestamp": 1}
    )
    # Native ingestion stores raw values: NaN and infinities as the doubles themselves.
    native = uuid.uuid4().hex
    client.ingest(
        [
            {
                "run_id": native,
                "start": {"experiment_id": experiment_id, "run_name": "native"},
                "metrics": {
                    "keys": ["m00", "m01", "m02", "m03"],
                    "values": [math.nan, math.inf, -math.inf, 2.0],
                    "timestamps": [1, 2, 3, 4],
                    "steps": [0, 0, 0, 0],
                },
                "params": [{"key": "p", "value": "v"}],
            }
        ]
    )
    more = [create(f"r{i}", 100 + i % 3) for i in range(5)]
    for i, run in enumerate(more):
        client.post(
            "runs/log-metric",
            {"run_id": run, "key": "m00", "value": [0.25, 3.0, 0.25, "NaN", 1][i], "timestamp": 1},
        )
    return experiment_id, [full, bare, deleted, nan_only, native, *more]


async def _store_raw_doubles(server: EvtrackServer, run_id: str) -> None:
    """Infinities and an unflagged NaN as stored values: no route stores them today (both clamp
    and flag), but the rendering must not depend on that."""
    conn = await _connect(server)
    try:
        await conn.execute(
            """UPDATE rm_runs.latest_metrics AS m SET value = v.value
               FROM (VALUES ('m01', 'Infinity'::float8), ('m02', '-Infinity'), ('m03', 'NaN'))
                    AS v(key, value)
               WHERE m.run_id = $1 AND m.key = v.key""",
            run_id,
        )
    finally:
        await conn.close()


@pytest.fixture(scope="module")
def logged(shared_server: EvtrackServer) -> Iterator[tuple[Client, str, list[str]]]:
    client = Client(shared_server)
    experiment_id, run_ids = _log_runs(client)
    for run_id in run_ids:  # reads wait for the read models, so the database is current after
        client.get_raw("runs/get", run_id=run_id)
    asyncio.run(_store_raw_doubles(shared_server, run_ids[4]))
    yield client, experiment_id, run_ids


async def _connect(server: EvtrackServer) -> asyncpg.Connection:
    conn: asyncpg.Connection = await asyncpg.connect(server.dsn)
    return conn


# --------------------------------------------------------------------------- the tests


async def test_runs_get_renders_as_before(
    shared_server: EvtrackServer, logged: tuple[Client, str, list[str]]
) -> None:
    client, _, run_ids = logged
    conn = await _connect(shared_server)
    try:
        expected = await reference_runs(conn, run_ids)
        decoded = await queries.get_runs(conn, [*run_ids, "no-such-run", run_ids[0]])
    finally:
        await conn.close()
    assert len(expected) == len(run_ids)
    for run in expected:
        body = client.get_raw("runs/get", run_id=run.info.run_id)
        assert set(body) == {"run"}
        assert typed(body["run"]) == as_json(run)
    # Objects for GraphQL and the create/update answers: same runs, same order, unknown skipped.
    assert decoded == [*expected, expected[0]]
    full, native = expected[0], expected[4]
    # Both routes clamp infinities to the largest double, as MLflow does.
    assert [m.value for m in full.data.metrics][-3:] == ["NaN", DOUBLE_MAX, -DOUBLE_MAX]
    assert [m.value for m in native.data.metrics] == ["NaN", "Infinity", "-Infinity", "NaN"]
    assert full.inputs.model_inputs and full.outputs.model_outputs
    assert full.inputs.dataset_inputs[1].tags


async def test_runs_search_renders_like_get(
    shared_server: EvtrackServer, logged: tuple[Client, str, list[str]]
) -> None:
    client, experiment_id, run_ids = logged
    by_id = {
        run_id: without_model_inputs(typed(client.get_raw("runs/get", run_id=run_id)["run"]))
        for run_id in run_ids
    }
    for order_by in ([], ["metrics.m00 DESC"], ["metrics.m00"], ["params.p", "metrics.m01"]):
        for view in ("ACTIVE_ONLY", "ALL"):
            page = client.post(
                "runs/search",
                {"experiment_ids": [experiment_id], "order_by": order_by, "run_view_type": view},
            )
            assert set(page) == {"runs"}
            found = [typed(run) for run in page["runs"]]
            assert len(found) == (len(run_ids) if view == "ALL" else len(run_ids) - 1)
            for run in found:
                assert run == by_id[run["info"]["run_id"][1]]
    empty = client.post(
        "runs/search", {"experiment_ids": [experiment_id], "filter": "metrics.m00 > 1e300"}
    )
    assert empty == {}


@pytest.mark.parametrize(
    ("filter_string", "order_by"),
    [
        ("", []),
        ("", ["metrics.m00 DESC"]),
        ("", ["metrics.m00"]),
        ("metrics.m00 != 3", ["metrics.m00 DESC"]),
        ("metrics.m00 >= 0.25", ["metrics.m00 DESC", "attributes.run_name"]),
        ("", ["params.p DESC"]),
        ("", ["attributes.run_name"]),
    ],
)
@pytest.mark.parametrize("page_size", [1, 2, 3, 1000])
async def test_search_pages_keep_the_compiled_order(
    shared_server: EvtrackServer,
    logged: tuple[Client, str, list[str]],
    filter_string: str,
    order_by: list[str],
    page_size: int,
) -> None:
    """Pages through the API list the runs in the search's own order, with its page tokens."""
    client, experiment_id, _ = logged
    conn = await _connect(shared_server)
    try:
        query = compile_run_search(
            [int(experiment_id)], "ALL", filter_string, order_by, 50_000, None
        )
        expected = [row["run_id"] for row in await conn.fetch(query.sql, *query.args)]
    finally:
        await conn.close()
    seen: list[str] = []
    token: str | None = None
    while True:
        body: dict[str, Any] = {
            "experiment_ids": [experiment_id],
            "filter": filter_string,
            "order_by": order_by,
            "run_view_type": "ALL",
            "max_results": page_size,
        }
        if token:
            body["page_token"] = token
        page = client.post("runs/search", body)
        seen += [run["info"]["run_id"] for run in page.get("runs", [])]
        token = page.get("next_page_token")
        assert len(page.get("runs", [])) == (page_size if token else len(page.get("runs", [])))
        if not token:
            break
    assert seen == expected
    assert len(expected) > 1

"""Differential harness: the same scripted REST session against two servers, transcripts compared.

Each scenario is a list of raw HTTP calls (exactly what the mlflow client sends: GET with a query
string, POST with a JSON body) covering compat doc §1.1-1.7 and 1.9. Every response (status
and JSON body) goes into a transcript; the transcript is normalised and the two are compared.

``server_pair[reference]`` runs the scenario twice against the reference: this proves the
normalisation masks all nondeterminism. ``server_pair[evtrack]`` compares the reference with
evtrack. On a mismatch the unified diff of the two transcripts is shown (see the end of this
docstring for where the full transcripts go).

Normalisation (applies to both sides):
  * experiment ids, run ids and server-generated run names are replaced by placeholders in the
    order they first appear (EXP1, RUN1, NAME1 ...), also inside strings (artifact URIs);
  * the unique name prefix of a session becomes "<P>"; the server URL becomes "<server>";
  * logged-model ids (``m-<32 hex>``) become MODEL1, MODEL2 ... in the order the normaliser
    meets them, also inside strings (request paths, artifact URIs, ``models:/`` sources);
  * server-made timestamps (experiment creation_time / last_update_time, registry
    creation_timestamp / last_updated_timestamp, logged-model *_timestamp_ms) become "<ts>";
    page tokens become "<token>" (opaque);
  * lists of {key, value} (tags, params), run metrics and artifact file lists are sorted: their
    order is not part of the contract (the client turns them into dicts / sorts them).

ALLOW-LIST: intentional or tolerated differences (each stripped on both sides):
  * ``workspace`` on experiments: the reference (workspaces feature) adds "default"; optional.
  * ``sqlstate`` / ``error_class`` in error bodies: optional extras of the reference.
  * ``message`` in error bodies: not compared here (the reference leaks SQL text in some);
    test_errors.py asserts the messages clients and users rely on.
  * empty objects (``"inputs": {}``) are treated as absent; ``file_size: 0`` as absent (the
    reference omits the proto default).
  * ``errors: null`` in GraphQL answers is treated as absent.
  * ``description: ""`` and ``run_link: ""`` (registered models, model versions) are treated as
    absent: the reference writes the proto3 default, evtrack omits it; the client cannot tell.
  * ``aliases`` on the model versions of ``model_versions`` (model-versions/search,
    get-latest-versions) and ``latest_versions`` (registered models) is dropped: the reference's
    SQL store only fills a version's aliases in model-versions/get (and alias GET), evtrack
    returns them everywhere (deliberate: the same version reads the same on every route). The
    alias itself is still compared through model-versions/get, registered-models/alias GET and
    the registered model's own ``aliases`` list.
  * GET /version: only the status (evtrack reports its own MLflow-compatible version).
  * GET /api/3.0/mlflow/server-info: only the multipart flags the client reads.

On a mismatch the two transcripts are also written to ``$EVTRACK_COMPAT_TRANSCRIPT_DIR`` (if
set) or the test's tmp_path.
"""

from __future__ import annotations

import copy
import difflib
import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ._support import API, ARTIFACTS_API, Server, unique

GENERATED_NAME_RE = re.compile(r"^[a-z]+-[a-z]+-\d+$")
DROP_KEYS_EVERYWHERE = {"workspace", "sqlstate", "error_class"}
SERVER_TIMESTAMPS = {
    "creation_time",
    "last_update_time",
    "creation_timestamp",  # registered models and model versions
    "last_updated_timestamp",
    "creation_timestamp_ms",  # logged models
    "last_updated_timestamp_ms",
}
MODEL_ID_RE = re.compile(r"m-[0-9a-f]{32}")
# Lists of model versions where the reference leaves out ``aliases`` (see the allow-list).
VERSION_LISTS_WITHOUT_ALIASES = {"model_versions", "latest_versions"}
KV_LISTS = {"tags", "params", "metrics"}


class Recorder:
    """Performs a scenario's calls against one server and keeps the raw transcript."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.prefix = unique("dfx")
        self.steps: list[dict[str, Any]] = []

    def call(
        self, label: str, method: str, path: str, *, record: str = "json", **kwargs: Any
    ) -> Any:
        """``record``: "json" (status + body), "text" (status + raw text), "status"."""
        if not path.startswith("/"):
            path = f"{API}/{path}"
        r = self.server.request(method, path, **kwargs)
        step: dict[str, Any] = {
            "step": label,
            "request": f"{method} {path.split('?')[0]}",
            "status": r.status,
        }
        if record == "json":
            step["body"] = r.body if r.is_json else {"<non-json>": str(r.body)[:80]}
        elif record == "text":
            step["body"] = r.body if isinstance(r.body, str) else json.dumps(r.body)
        self.steps.append(step)
        return r.body

    def get(self, label: str, endpoint: str, params: Any = None, **kw: Any) -> Any:
        return self.call(label, "GET", endpoint, params=params, **kw)

    def post(self, label: str, endpoint: str, body: Any = None, **kw: Any) -> Any:
        return self.call(label, "POST", endpoint, json=body if body is not None else {}, **kw)

    def name(self, suffix: str) -> str:
        return f"{self.prefix}-{suffix}"


# --------------------------------------------------------------------------------------------
# Normalisation
# --------------------------------------------------------------------------------------------


class Normaliser:
    def __init__(self, rec: Recorder) -> None:
        self.prefix = rec.prefix
        self.url = rec.server.url
        self.exp_ids: dict[str, str] = {}
        self.run_ids: dict[str, str] = {}
        self.names: dict[str, str] = {}
        self.model_ids: dict[str, str] = {}

    def _collect(self, node: Any) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                if k in ("experiment_id", "experimentId") and isinstance(v, str):
                    self.exp_ids.setdefault(v, f"EXP{len(self.exp_ids) + 1}")
                elif k in ("run_id", "run_uuid", "runId") and isinstance(v, str) and v:
                    self.run_ids.setdefault(v, f"RUN{len(self.run_ids) + 1}")
                elif k in ("run_name", "runName") and isinstance(v, str):
                    self._name(v)
                if k in ("tags",) and isinstance(v, list):
                    for t in v:
                        if isinstance(t, dict) and t.get("key") == "mlflow.runName":
                            self._name(t.get("value", ""))
                self._collect(v)
        elif isinstance(node, list):
            for v in node:
                self._collect(v)

    def _name(self, v: str) -> None:
        if self.prefix not in v and GENERATED_NAME_RE.match(v):
            self.names.setdefault(v, f"NAME{len(self.names) + 1}")

    def _string(self, s: str) -> str:
        s = s.replace(self.url, "<server>").replace(self.prefix, "<P>")
        s = MODEL_ID_RE.sub(
            lambda m: self.model_ids.setdefault(m.group(0), f"MODEL{len(self.model_ids) + 1}"), s
        )
        for rid, mask in self.run_ids.items():
            s = s.replace(rid, mask)
        if s in self.names:
            return self.names[s]

        def exp(m: re.Match[str]) -> str:
            return m.group(1) + self.exp_ids.get(m.group(2), m.group(2))

        s = re.sub(r"(mlflow-artifacts:/)(\d+)", exp, s)
        s = re.sub(r"(/api/2\.0/mlflow-artifacts/artifacts/)(\d+)", exp, s)
        return s

    def _walk(self, node: Any, parent_key: str = "") -> Any:
        if isinstance(node, dict):
            out = {}
            for k, v in node.items():
                if k in DROP_KEYS_EVERYWHERE:
                    continue
                if k == "message" and "error_code" in node:
                    continue
                if k == "errors" and v is None:
                    continue
                if k in ("next_page_token", "nextPageToken"):
                    out[k] = "<token>" if v else v
                    continue
                if k in SERVER_TIMESTAMPS and isinstance(v, int | str):
                    out[k] = "<ts>"
                    continue
                if k in ("experiment_id", "experimentId") and isinstance(v, str):
                    out[k] = self.exp_ids.get(v, v)
                    continue
                if k == "file_size" and v in (0, "0"):
                    continue
                if k in ("description", "run_link") and v == "":
                    continue
                if k == "aliases" and parent_key in VERSION_LISTS_WITHOUT_ALIASES:
                    continue
                w = self._walk(v, k)
                if w == {} and parent_key != "":
                    continue
                out[k] = w
            return out
        if isinstance(node, list):
            items = [self._walk(v, parent_key) for v in node]
            if parent_key in KV_LISTS and all(isinstance(i, dict) and "key" in i for i in items):
                items.sort(key=lambda i: json.dumps(i, sort_keys=True))
            if parent_key == "files" and all(isinstance(i, dict) for i in items):
                items.sort(key=lambda i: str(i.get("path")))
            return items
        if isinstance(node, str):
            return self._string(node)
        return node

    def normalise(self, steps: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for st in steps:
            self._collect(st.get("body"))
        return [self._walk(copy.deepcopy(st), "") for st in steps]


# --------------------------------------------------------------------------------------------
# Scenarios
# --------------------------------------------------------------------------------------------


def scenario_experiments(r: Recorder) -> None:
    r.get("default experiment", "experiments/get", {"experiment_id": "0"})
    a = r.post(
        "create A",
        "experiments/create",
        {"name": r.name("a"), "tags": [{"key": "team", "value": "ml"}]},
    )["experiment_id"]
    r.post("create A again", "experiments/create", {"name": r.name("a")})
    r.post("create with empty name", "experiments/create", {"name": ""})
    r.get("get A", "experiments/get", {"experiment_id": a})
    r.get("get A by name", "experiments/get-by-name", {"experiment_name": r.name("a")})
    r.get("get missing by name", "experiments/get-by-name", {"experiment_name": r.name("zz")})
    r.get("get missing", "experiments/get", {"experiment_id": "987654"})
    r.post(
        "tag A",
        "experiments/set-experiment-tag",
        {"experiment_id": a, "key": "owner", "value": "alice"},
    )
    r.post(
        "retag A",
        "experiments/set-experiment-tag",
        {"experiment_id": a, "key": "owner", "value": "bob"},
    )
    r.post(
        "empty tag A",
        "experiments/set-experiment-tag",
        {"experiment_id": a, "key": "empty", "value": ""},
    )
    r.post("delete tag A", "experiments/delete-experiment-tag", {"experiment_id": a, "key": "team"})
    r.post(
        "delete missing tag A",
        "experiments/delete-experiment-tag",
        {"experiment_id": a, "key": "team"},
    )
    r.get("get A after tags", "experiments/get", {"experiment_id": a})

    b = r.post("create B", "experiments/create", {"name": r.name("b")})["experiment_id"]
    r.post("rename B", "experiments/update", {"experiment_id": b, "new_name": r.name("b2")})
    r.get("get B", "experiments/get", {"experiment_id": b})
    r.get("old name of B", "experiments/get-by-name", {"experiment_name": r.name("b")})
    c = r.post(
        "create C",
        "experiments/create",
        {"name": r.name("c"), "artifact_location": "mlflow-artifacts:/elsewhere"},
    )["experiment_id"]
    r.get("get C", "experiments/get", {"experiment_id": c})

    like = f"name LIKE '{r.prefix}-%'"
    token = None
    for page in range(4):
        body = r.post(
            f"search page {page}",
            "experiments/search",
            {
                "filter": like,
                "order_by": ["name ASC"],
                "max_results": 2,
                **({"page_token": token} if token else {}),
            },
        )
        token = body.get("next_page_token") if isinstance(body, dict) else None
        if not token:
            break
    r.post(
        "search by tag",
        "experiments/search",
        {"filter": f"{like} AND tags.owner = 'bob'", "max_results": 10},
    )
    r.get(
        "search GET",
        "experiments/search",
        {"filter": like, "order_by": "name DESC", "max_results": 25},
    )

    run = r.post(
        "run in B",
        "runs/create",
        {"experiment_id": b, "run_name": r.name("rb"), "start_time": 1000},
    )["run"]["info"]["run_id"]
    r.post("delete B", "experiments/delete", {"experiment_id": b})
    r.post("delete B again", "experiments/delete", {"experiment_id": b})
    r.get("get deleted B", "experiments/get", {"experiment_id": b})
    r.get("get deleted B by name", "experiments/get-by-name", {"experiment_name": r.name("b2")})
    r.get("run of deleted B", "runs/get", {"run_id": run})
    r.post("run in deleted B", "runs/create", {"experiment_id": b, "start_time": 1})
    for view in ("ACTIVE_ONLY", "DELETED_ONLY", "ALL"):
        r.post(
            f"search {view}",
            "experiments/search",
            {"filter": like, "view_type": view, "order_by": ["name ASC"], "max_results": 10},
        )
    r.post("restore B", "experiments/restore", {"experiment_id": b})
    r.get("get restored B", "experiments/get", {"experiment_id": b})
    r.get("run of restored B", "runs/get", {"run_id": run})


def scenario_runs(r: Recorder) -> None:
    exp = r.post("create experiment", "experiments/create", {"name": r.name("runs")})[
        "experiment_id"
    ]
    r1 = r.post(
        "create named run",
        "runs/create",
        {
            "experiment_id": exp,
            "user_id": "alice",
            "run_name": r.name("r1"),
            "start_time": 1000,
            "tags": [
                {"key": "mlflow.user", "value": "alice"},
                {"key": "mlflow.source.type", "value": "LOCAL"},
            ],
        },
    )["run"]["info"]["run_id"]
    r2 = r.post("create unnamed run", "runs/create", {"experiment_id": exp, "start_time": 2000})[
        "run"
    ]["info"]["run_id"]
    r.post(
        "create run named by tag",
        "runs/create",
        {
            "experiment_id": exp,
            "start_time": 3000,
            "tags": [{"key": "mlflow.runName", "value": r.name("by-tag")}],
        },
    )
    r.post(
        "create run conflicting names",
        "runs/create",
        {"experiment_id": exp, "run_name": "a", "tags": [{"key": "mlflow.runName", "value": "b"}]},
    )
    r.post("create run in missing experiment", "runs/create", {"experiment_id": "987654"})

    r.post(
        "log param",
        "runs/log-parameter",
        {"run_id": r1, "run_uuid": r1, "key": "alpha", "value": "0.5"},
    )
    r.post("log same param", "runs/log-parameter", {"run_id": r1, "key": "alpha", "value": "0.5"})
    r.post("change param", "runs/log-parameter", {"run_id": r1, "key": "alpha", "value": "0.6"})
    r.post("log empty param", "runs/log-parameter", {"run_id": r1, "key": "empty", "value": ""})
    r.post(
        "log long param", "runs/log-parameter", {"run_id": r1, "key": "long", "value": "x" * 6001}
    )
    for step, value in enumerate((0.5, 0.7, 0.6)):
        r.post(
            f"log metric step {step}",
            "runs/log-metric",
            {
                "run_id": r1,
                "run_uuid": r1,
                "key": "acc",
                "value": value,
                "timestamp": 1100 + step,
                "step": step,
            },
        )
    for key, value in (("nan", "NaN"), ("inf", "Infinity"), ("ninf", "-Infinity")):
        r.post(
            f"log {key}",
            "runs/log-metric",
            {"run_id": r1, "key": key, "value": value, "timestamp": 1200, "step": 0},
        )
    r.post(
        "log metric bad timestamp",
        "runs/log-metric",
        {"run_id": r1, "key": "m", "value": 1, "timestamp": -1},
    )
    r.post(
        "set tag", "runs/set-tag", {"run_id": r1, "run_uuid": r1, "key": "stage", "value": "dev"}
    )
    r.post("set tag again", "runs/set-tag", {"run_id": r1, "key": "stage", "value": "prod"})
    r.post("set tag to delete", "runs/set-tag", {"run_id": r1, "key": "tmp", "value": "1"})
    r.post("delete tag", "runs/delete-tag", {"run_id": r1, "key": "tmp"})
    r.post("delete missing tag", "runs/delete-tag", {"run_id": r1, "key": "tmp"})
    r.post(
        "log batch",
        "runs/log-batch",
        {
            "run_id": r1,
            "metrics": [
                {"key": "loss", "value": 1.0 / (i + 1), "timestamp": 1300 + i, "step": i}
                for i in range(3)
            ],
            "params": [{"key": "beta", "value": "b"}, {"key": "gamma", "value": "3"}],
            "tags": [{"key": "team", "value": "ml"}, {"key": "long", "value": "t" * 8001}],
        },
    )
    r.post(
        "log batch too many metrics",
        "runs/log-batch",
        {
            "run_id": r1,
            "metrics": [{"key": "m", "value": 1, "timestamp": 1, "step": i} for i in range(1001)],
        },
    )
    r.post(
        "log batch invalid key",
        "runs/log-batch",
        {"run_id": r1, "params": [{"key": "a/../b", "value": "1"}]},
    )
    r.post(
        "log batch duplicate params",
        "runs/log-batch",
        {"run_id": r1, "params": [{"key": "d", "value": "1"}, {"key": "d", "value": "2"}]},
    )
    r.post(
        "log batch missing timestamp",
        "runs/log-batch",
        {"run_id": r1, "metrics": [{"key": "m", "value": 1}]},
    )
    r.get("get r1", "runs/get", {"run_id": r1})
    r.get("get r2 (run_uuid)", "runs/get", {"run_uuid": r2})
    r.get("get missing run", "runs/get", {"run_id": "0123456789abcdef0123456789abcdef"})

    r.post(
        "rename r2 via tag",
        "runs/set-tag",
        {"run_id": r2, "key": "mlflow.runName", "value": r.name("r2")},
    )
    r.post(
        "rename r1", "runs/update", {"run_id": r1, "run_uuid": r1, "run_name": r.name("r1-renamed")}
    )
    r.post(
        "finish r1",
        "runs/update",
        {"run_id": r1, "run_uuid": r1, "status": "FINISHED", "end_time": 5000},
    )
    r.post("kill r2", "runs/update", {"run_id": r2, "status": "KILLED", "end_time": 6000})
    r.get("get r1 finished", "runs/get", {"run_id": r1})
    r.get("get r2 killed", "runs/get", {"run_id": r2})

    r.post("delete r2", "runs/delete", {"run_id": r2})
    r.get("get deleted r2", "runs/get", {"run_id": r2})
    r.post("log to deleted r2", "runs/log-parameter", {"run_id": r2, "key": "p", "value": "1"})
    r.post(
        "log batch to deleted r2",
        "runs/log-batch",
        {"run_id": r2, "tags": [{"key": "t", "value": "1"}]},
    )
    r.post("restore r2", "runs/restore", {"run_id": r2})
    r.get("get restored r2", "runs/get", {"run_id": r2})
    r.post("delete missing run", "runs/delete", {"run_id": "0123456789abcdef0123456789abcdef"})


def scenario_metric_history(r: Recorder) -> None:
    exp = r.post("create experiment", "experiments/create", {"name": r.name("hist")})[
        "experiment_id"
    ]
    runs = [
        r.post(
            f"create run {i}",
            "runs/create",
            {"experiment_id": exp, "run_name": r.name(f"h{i}"), "start_time": 1000 + i},
        )["run"]["info"]["run_id"]
        for i in range(2)
    ]
    r.post(
        "log history",
        "runs/log-batch",
        {
            "run_id": runs[0],
            "metrics": [
                {"key": "acc", "value": i / 10, "timestamp": 100 - i, "step": i} for i in range(7)
            ],
        },
    )
    r.post(
        "log duplicate point",
        "runs/log-metric",
        {"run_id": runs[0], "key": "acc", "value": 0.3, "timestamp": 97, "step": 3},
    )
    r.post(
        "log same ts/step other value",
        "runs/log-metric",
        {"run_id": runs[0], "key": "acc", "value": -1, "timestamp": 97, "step": 3},
    )
    r.post(
        "log history run 2",
        "runs/log-batch",
        {
            "run_id": runs[1],
            "metrics": [
                {"key": "acc", "value": i, "timestamp": 10, "step": i * 2} for i in range(12)
            ],
        },
    )
    r.get("history", "metrics/get-history", {"run_id": runs[0], "metric_key": "acc"})
    token = None
    for page in range(5):
        body = r.get(
            f"history page {page}",
            "metrics/get-history",
            {
                "run_id": runs[0],
                "run_uuid": runs[0],
                "metric_key": "acc",
                "max_results": 3,
                **({"page_token": token} if token else {}),
            },
        )
        token = body.get("next_page_token") if isinstance(body, dict) else None
        if not token:
            break
    r.get(
        "history bad token",
        "metrics/get-history",
        {"run_id": runs[0], "metric_key": "acc", "page_token": "garbage"},
    )
    r.get(
        "history max_results 0",
        "metrics/get-history",
        {"run_id": runs[0], "metric_key": "acc", "max_results": 0},
    )
    r.get("history unknown key", "metrics/get-history", {"run_id": runs[0], "metric_key": "x"})
    r.get("history missing key param", "metrics/get-history", {"run_id": runs[0]})
    r.get(
        "history of missing run",
        "metrics/get-history",
        {"run_id": "0123456789abcdef0123456789abcdef", "metric_key": "acc"},
    )
    # Answers follow the order of the requested run ids (here: descending ids), not id order.
    r.get(
        "bulk interval",
        "metrics/get-history-bulk-interval",
        {"run_ids": sorted(runs, reverse=True), "metric_key": "acc"},
    )
    r.get(
        "bulk interval sampled",
        "metrics/get-history-bulk-interval",
        {"run_ids": runs, "metric_key": "acc", "max_results": 4},
    )
    r.get(
        "bulk interval steps",
        "metrics/get-history-bulk-interval",
        {"run_ids": runs, "metric_key": "acc", "start_step": 2, "end_step": 6},
    )
    r.get(
        "bulk interval one bound",
        "metrics/get-history-bulk-interval",
        {"run_ids": runs, "metric_key": "acc", "start_step": 2},
    )
    r.get(
        "bulk interval reversed",
        "metrics/get-history-bulk-interval",
        {"run_ids": runs, "metric_key": "acc", "start_step": 6, "end_step": 2},
    )
    r.get(
        "bulk interval max_results too big",
        "metrics/get-history-bulk-interval",
        {"run_ids": runs, "metric_key": "acc", "max_results": 2501},
    )
    r.get("bulk interval no runs", "metrics/get-history-bulk-interval", {"metric_key": "acc"})


def scenario_search(r: Recorder) -> None:
    exp = r.post("create experiment", "experiments/create", {"name": r.name("search")})[
        "experiment_id"
    ]
    seed = [
        ("a", 1000, 0.9, "cnn", "vision", None),
        ("b", 2000, 0.7, "rnn", "nlp", "FINISHED"),
        ("c", 3000, None, "CNN-large", "vision", None),
        ("d", 2500, 0.7, None, None, "FAILED"),  # no start_time ties: run ids are random
        ("e", 1500, "NaN", "x", None, None),
    ]
    ids = {}
    for name, start, acc, model, team, status in seed:
        rid = r.post(
            f"create {name}",
            "runs/create",
            {"experiment_id": exp, "run_name": r.name(name), "start_time": start},
        )["run"]["info"]["run_id"]
        ids[name] = rid
        batch: dict[str, Any] = {"run_id": rid, "metrics": [], "params": [], "tags": []}
        if acc is not None:
            batch["metrics"].append({"key": "acc", "value": acc, "timestamp": 5, "step": 0})
        if model is not None:
            batch["params"].append({"key": "model", "value": model})
        if team is not None:
            batch["tags"].append({"key": "team", "value": team})
        r.post(f"log {name}", "runs/log-batch", batch)
        if status:
            r.post(
                f"end {name}",
                "runs/update",
                {"run_id": rid, "status": status, "end_time": start + 100},
            )
    deleted = r.post(
        "create deleted",
        "runs/create",
        {"experiment_id": exp, "run_name": r.name("z"), "start_time": 9000},
    )["run"]["info"]["run_id"]
    r.post("delete z", "runs/delete", {"run_id": deleted})

    def search(label: str, **body: Any) -> Any:
        return r.post(label, "runs/search", {"experiment_ids": [exp], **body})

    search("default order")
    search("all views", run_view_type="ALL")
    search("deleted only", run_view_type="DELETED_ONLY")
    search("metric filter", filter="metrics.acc >= 0.7", order_by=["metrics.acc DESC"])
    search("metric !=", filter="metrics.acc != 0.7")
    search("param filter", filter="params.model ILIKE 'cnn%'", order_by=["params.model ASC"])
    search("param IS NULL", filter="params.model IS NULL")
    search("tag filter", filter="tags.team = 'vision' and attributes.status = 'RUNNING'")
    search("run_id IN", filter=f"attributes.run_id IN ('{ids['a']}', '{ids['d']}')")
    search(
        "run name LIKE",
        filter=f"attributes.run_name LIKE '{r.prefix}-%'",
        order_by=["attributes.run_name DESC"],
    )
    search("order nulls last", order_by=["metrics.acc ASC"])
    search("order params desc", order_by=["params.model DESC", "start_time ASC"])
    search("no match", filter="metrics.acc > 100")
    token = None
    for page in range(6):
        body = search(
            f"page {page}",
            max_results=2,
            order_by=["attributes.start_time ASC"],
            **({"page_token": token} if token else {}),
        )
        token = body.get("next_page_token") if isinstance(body, dict) else None
        if not token:
            break
    search("invalid OR", filter="metrics.acc > 1 OR metrics.acc < 0")
    search("invalid IN", filter="attributes.status IN ('RUNNING')")
    search("invalid order", order_by=["metrics.acc sideways"])
    search("invalid token", page_token="garbage")
    search("max_results too big", max_results=50001)


def scenario_run_shapes(r: Recorder) -> None:
    """Every part of a run through runs/get and runs/search: the JSON both render.

    Datasets are logged in name order: the reference lists a run's datasets in no defined order
    (in practice as logged), evtrack by name and digest.
    """
    exp = r.post("create experiment", "experiments/create", {"name": r.name("shapes")})[
        "experiment_id"
    ]
    odd = 'quote " backslash \\ newline \n tab \t ctl \u0001 é 🙂 </script>'
    model_a, model_b = "m-" + "a" * 32, "m-" + "b" * 32
    full = r.post(
        "create full run",
        "runs/create",
        {"experiment_id": exp, "run_name": r.name("full"), "start_time": 1000},
    )["run"]["info"]["run_id"]
    bare = r.post(
        "create bare run",
        "runs/create",
        {"experiment_id": exp, "run_name": r.name("bare"), "start_time": 2000},
    )["run"]["info"]["run_id"]
    # Not -0.0: the reference's SQLite store keeps it as 0.0, on PostgreSQL it stays -0.0.
    values = [0.5, 3.0, 1e20, 1.5e-7, 123456789012345.0, 1e15, "NaN", "Infinity", "-Infinity"]
    r.post(
        "log batch",
        "runs/log-batch",
        {
            "run_id": full,
            "metrics": [
                {"key": f"m{i}", "value": v, "timestamp": 10 + i, "step": i}
                for i, v in enumerate(values)
            ],
            "params": [{"key": "odd", "value": odd}, {"key": "empty", "value": ""}],
            "tags": [{"key": "odd", "value": odd}, {"key": "B", "value": "upper"}],
        },
    )
    r.post(
        "log inputs",
        "runs/log-inputs",
        {
            "run_id": full,
            "datasets": [
                {
                    "dataset": {
                        "name": "a-train",
                        "digest": "d1",
                        "source_type": "local",
                        "source": '{"uri": "/data/train"}',
                        "schema": '{"mlflow_colspec": []}',
                        "profile": '{"num_rows": 3}',
                    },
                    "tags": [{"key": "mlflow.data.context", "value": "training"}],
                },
            ],
            "models": [{"model_id": model_a}],
        },
    )
    r.post(
        "log more inputs",
        "runs/log-inputs",
        {
            "run_id": full,
            "datasets": [
                {
                    "dataset": {
                        "name": "b-eval",
                        "digest": "d2",
                        "source_type": "http",
                        "source": odd,
                    },
                },
            ],
        },
    )
    r.post("log outputs", "runs/outputs", {"run_id": full, "models": [{"model_id": model_b}]})
    r.get("get full run", "runs/get", {"run_id": full})
    r.get("get bare run", "runs/get", {"run_id": bare})
    for order in (["metrics.m0 DESC"], ["attributes.start_time ASC"], []):
        r.post(
            f"search {order}",
            "runs/search",
            {"experiment_ids": [exp], "order_by": order},
        )
    r.post(
        "search with a metric filter",
        "runs/search",
        {"experiment_ids": [exp], "filter": "metrics.m1 >= 3", "order_by": ["metrics.m1 DESC"]},
    )


def scenario_artifacts(r: Recorder) -> None:
    exp = r.post("create experiment", "experiments/create", {"name": r.name("art")})[
        "experiment_id"
    ]
    run = r.post(
        "create run",
        "runs/create",
        {"experiment_id": exp, "run_name": r.name("art"), "start_time": 1},
    )["run"]["info"]["run_id"]
    base = f"{ARTIFACTS_API}/{exp}/{run}/artifacts"
    files = {
        "a.txt": b"hello",
        "dir/b.bin": bytes(range(256)),
        "dir/sub/c.json": b'{"k": 1}',
        "empty.txt": b"",
        "with space.txt": b"s",
    }
    for path, data in files.items():
        r.call(f"put {path}", "PUT", f"{base}/{path}", data=data, record="status")
    for path in ("a.txt", "dir/sub/c.json", "with%20space.txt"):
        r.call(f"get {path}", "GET", f"{base}/{path}", record="text")
    r.call("get missing", "GET", f"{base}/missing.txt")
    for path in ("", "/dir", "/dir/sub", "/a.txt", "/nope"):
        r.call(
            f"list {path or '/'}",
            "GET",
            ARTIFACTS_API,
            params={"path": f"{exp}/{run}/artifacts{path}"},
        )
    r.call("list traversal", "GET", ARTIFACTS_API, params={"path": f"{exp}/../x"})
    r.call("put traversal", "PUT", f"{ARTIFACTS_API}/{exp}/%2e%2e/x", data=b"x")
    r.get("run list root", "artifacts/list", {"run_id": run})
    r.get("run list dir", "artifacts/list", {"run_uuid": run, "path": "dir"})
    r.get("run list missing dir", "artifacts/list", {"run_id": run, "path": "nope"})
    r.get("run list traversal", "artifacts/list", {"run_id": run, "path": "../x"})
    r.get("run list missing run", "artifacts/list", {"run_id": "0123456789abcdef0123456789abcdef"})
    r.call(
        "ui get-artifact",
        "GET",
        "/get-artifact",
        params={"run_uuid": run, "path": "a.txt"},
        record="text",
    )


def scenario_misc(r: Recorder) -> None:
    r.call("health", "GET", "/health", record="text")
    r.call("version", "GET", "/version", record="status")
    for prefix in ("/api/3.0", "/ajax-api/3.0"):
        body = r.server.request("GET", f"{prefix}/mlflow/server-info")
        r.steps.append(
            {
                "step": f"server-info {prefix}",
                "status": body.status,
                "body": {
                    k: body.body.get(k)
                    for k in ("multipart_uploads_enabled", "multipart_downloads_enabled")
                }
                if isinstance(body.body, dict)
                else str(body.body)[:80],
            }
        )
    exp = r.post("create experiment", "experiments/create", {"name": r.name("misc")})[
        "experiment_id"
    ]
    run = r.call(
        "ajax create run",
        "POST",
        "/ajax-api/2.0/mlflow/runs/create",
        json={"experiment_id": exp, "run_name": r.name("ui"), "start_time": 7},
    )["run"]["info"]["run_id"]
    r.call(
        "ajax log metric",
        "POST",
        "/ajax-api/2.0/mlflow/runs/log-metric",
        json={"run_id": run, "key": "acc", "value": 0.5, "timestamp": 9, "step": 1},
    )
    r.call(
        "ajax experiments/get",
        "GET",
        "/ajax-api/2.0/mlflow/experiments/get",
        params={"experiment_id": exp},
    )
    r.call(
        "ajax experiments/search",
        "GET",
        "/ajax-api/2.0/mlflow/experiments/search",
        params={
            "filter": f"name = '{r.name('misc')}'",
            "order_by": "last_update_time DESC",
            "max_results": 25,
        },
    )
    r.call(
        "ajax runs/search",
        "POST",
        "/ajax-api/2.0/mlflow/runs/search",
        json={
            "experiment_ids": [exp],
            "order_by": ["attributes.start_time DESC"],
            "max_results": 50,
            "run_view_type": "ALL",
        },
    )
    r.call("ajax runs/get", "GET", "/ajax-api/2.0/mlflow/runs/get", params={"run_uuid": run})
    r.call(
        "ajax bulk interval",
        "GET",
        "/ajax-api/2.0/mlflow/metrics/get-history-bulk-interval",
        params={"run_ids": run, "metric_key": "acc", "max_results": 320},
    )


def scenario_graphql(r: Recorder) -> None:
    """The operations the MLflow UI bundle sends to /graphql (compat doc §1.9)."""
    exp = r.post("create experiment", "experiments/create", {"name": r.name("gql")})[
        "experiment_id"
    ]
    run = r.post(
        "create run",
        "runs/create",
        {"experiment_id": exp, "run_name": r.name("gql"), "start_time": 7},
    )["run"]["info"]["run_id"]
    r.post(
        "log metric",
        "runs/log-metric",
        {"run_id": run, "key": "acc", "value": 0.5, "timestamp": 9, "step": 1},
    )
    gql = [
        (
            "graphql experiment",
            'query { mlflowGetExperiment(input: {experimentId: "'
            + exp
            + '"}) { experiment { experimentId name lifecycleStage artifactLocation '
            "tags { key value } } } }",
            None,
        ),
        (
            "graphql run",
            'query { mlflowGetRun(input: {runId: "' + run + '"}) { run { info { '
            "runId runName status startTime experimentId } data { metrics { key value step "
            "timestamp } } } } }",
            None,
        ),
        (
            "graphql search runs",
            "mutation SearchRuns($data: MlflowSearchRunsInput) { "
            "mlflowSearchRuns(input: $data) { runs { info { runId runName status } } } }",
            {"data": {"experimentIds": [exp], "maxResults": 10}},
        ),
        (
            "graphql bulk interval",
            "query Q($data: MlflowGetMetricHistoryBulkIntervalInput) { "
            "mlflowGetMetricHistoryBulkInterval(input: $data) { metrics { key value step timestamp "
            "runId } } }",
            {"data": {"runIds": [run], "metricKey": "acc", "maxResults": 10}},
        ),
        (
            "graphql list artifacts",
            'query { mlflowListArtifacts(input: {runId: "'
            + run
            + '"}) { rootUri files { path isDir fileSize } } }',
            None,
        ),
    ]
    for label, query, variables in gql:
        r.call(
            label,
            "POST",
            "/graphql",
            json={"query": query, **({"variables": variables} if variables else {})},
        )


def scenario_logged_models(r: Recorder) -> None:
    """Compat doc §1.5."""
    exp = r.post("create experiment", "experiments/create", {"name": r.name("lm")})["experiment_id"]
    run = r.post(
        "create run",
        "runs/create",
        {"experiment_id": exp, "run_name": r.name("lmrun"), "start_time": 1},
    )["run"]["info"]["run_id"]
    lm = r.post(
        "create model",
        "logged-models",
        {
            "experiment_id": exp,
            "name": r.name("model"),
            "model_type": "sklearn",
            "source_run_id": run,
            "params": [{"key": "alpha", "value": "0.5"}, {"key": "beta", "value": "x"}],
            "tags": [{"key": "team", "value": "ml"}, {"key": "tmp", "value": "1"}],
        },
    )["model"]["info"]["model_id"]
    other = r.post(
        "create second model",
        "logged-models",
        {"experiment_id": exp, "name": r.name("other"), "source_run_id": run},
    )["model"]["info"]["model_id"]
    r.get("get model", f"logged-models/{lm}")
    r.post(
        "log metric with model_id",
        "runs/log-metric",
        {"run_id": run, "key": "acc", "value": 0.9, "timestamp": 10, "step": 1, "model_id": lm},
    )
    r.post(
        "log batch with model_id",
        "runs/log-batch",
        {
            "run_id": run,
            "metrics": [
                {"key": "loss", "value": 0.1, "timestamp": 11, "step": 2, "model_id": lm},
                {"key": "plain", "value": 1.0, "timestamp": 11, "step": 2},
            ],
        },
    )
    r.call(
        "finalize",
        "PATCH",
        f"logged-models/{lm}",
        json={"model_id": lm, "status": "LOGGED_MODEL_READY"},
    )
    r.call(
        "set tags",
        "PATCH",
        f"logged-models/{lm}/tags",
        json={"tags": [{"key": "team", "value": "cv"}, {"key": "new", "value": "2"}]},
    )
    r.call("delete tag", "DELETE", f"logged-models/{lm}/tags/tmp")
    r.post(
        "log params",
        f"logged-models/{lm}/params",
        {"model_id": lm, "params": [{"key": "gamma", "value": "3"}]},
    )
    r.get("get model after writes", f"logged-models/{lm}")
    r.get("run sees model metrics", "runs/get", {"run_id": run})
    r.post(
        "search by name",
        "logged-models/search",
        {"experiment_ids": [exp], "filter": f"name = '{r.name('model')}'"},
    )
    token = None
    for page in range(3):
        body = r.post(
            f"search page {page}",
            "logged-models/search",
            {
                "experiment_ids": [exp],
                "order_by": [{"field_name": "name", "ascending": True}],
                "max_results": 1,
                **({"page_token": token} if token else {}),
            },
        )
        token = body.get("next_page_token") if isinstance(body, dict) else None
        if not token:
            break
    r.post(
        "search order desc",
        "logged-models/search",
        {"experiment_ids": [exp], "order_by": [{"field_name": "name", "ascending": False}]},
    )
    r.get("get missing model", "logged-models/m-0123456789abcdef0123456789abcdef")
    r.call("delete second model", "DELETE", f"logged-models/{other}", json={"model_id": other})
    r.get("get deleted model", f"logged-models/{other}")
    r.post("search after delete", "logged-models/search", {"experiment_ids": [exp]})


def scenario_registry(r: Recorder) -> None:
    """Compat doc §1.6."""
    exp = r.post("create experiment", "experiments/create", {"name": r.name("reg")})[
        "experiment_id"
    ]
    run = r.post(
        "create run",
        "runs/create",
        {"experiment_id": exp, "run_name": r.name("regrun"), "start_time": 1},
    )["run"]["info"]["run_id"]
    lm = r.post(
        "create logged model",
        "logged-models",
        {"experiment_id": exp, "name": r.name("lm"), "source_run_id": run},
    )["model"]["info"]["model_id"]
    name = r.name("rm")
    r.post(
        "create registered model",
        "registered-models/create",
        {"name": name, "tags": [{"key": "team", "value": "ml"}], "description": "first"},
    )
    r.get("get registered model", "registered-models/get", {"name": name})
    r.post("duplicate create", "registered-models/create", {"name": name})
    r.call(
        "update description",
        "PATCH",
        "registered-models/update",
        json={"name": name, "description": "second"},
    )
    r.post("create other", "registered-models/create", {"name": r.name("rm-b")})
    r.post(
        "rename other",
        "registered-models/rename",
        {"name": r.name("rm-b"), "new_name": r.name("rm-c")},
    )
    r.get("get old name", "registered-models/get", {"name": r.name("rm-b")})
    r.post("set tag", "registered-models/set-tag", {"name": name, "key": "tmp", "value": "1"})
    r.call(
        "delete tag", "DELETE", "registered-models/delete-tag", json={"name": name, "key": "tmp"}
    )
    r.get(
        "search registered models",
        "registered-models/search",
        {"filter": f"name LIKE '{r.prefix}-rm%'", "order_by": ["name DESC"]},
    )
    r.get(
        "search registered models default order",
        "registered-models/search",
        {"filter": f"name LIKE '{r.prefix}-%'", "max_results": 10},
    )

    r.post(
        "create version from run",
        "model-versions/create",
        {"name": name, "source": f"runs:/{run}/model", "run_id": run, "description": "v1"},
    )
    r.post(
        "create version bad source",
        "model-versions/create",
        {
            "name": name,
            "source": "runs:/0123456789abcdef0123456789abcdef/model",
            "run_id": run,
        },
    )
    r.post(
        "create version from logged model",
        "model-versions/create",
        {"name": name, "source": f"models:/{lm}", "model_id": lm, "run_id": run},
    )
    r.get("logged model after registration", f"logged-models/{lm}")
    r.get("get version 1", "model-versions/get", {"name": name, "version": "1"})
    r.call(
        "update version 1",
        "PATCH",
        "model-versions/update",
        json={"name": name, "version": "1", "description": "v1 updated"},
    )
    r.get("download uri v1", "model-versions/get-download-uri", {"name": name, "version": "1"})
    r.get("download uri v2", "model-versions/get-download-uri", {"name": name, "version": "2"})
    r.post(
        "v1 to Staging",
        "model-versions/transition-stage",
        {"name": name, "version": "1", "stage": "Staging", "archive_existing_versions": False},
    )
    r.post(
        "v2 to Staging",
        "model-versions/transition-stage",
        {"name": name, "version": "2", "stage": "staging", "archive_existing_versions": False},
    )
    r.post(
        "v2 to Production archiving",
        "model-versions/transition-stage",
        {"name": name, "version": "2", "stage": "Production", "archive_existing_versions": True},
    )
    r.post(
        "v1 to Production archiving",
        "model-versions/transition-stage",
        {"name": name, "version": "1", "stage": "Production", "archive_existing_versions": True},
    )
    r.post("latest versions", "registered-models/get-latest-versions", {"name": name})
    r.post(
        "latest Production",
        "registered-models/get-latest-versions",
        {"name": name, "stages": ["Production"]},
    )
    r.get(
        "latest archived (GET)",
        "registered-models/get-latest-versions",
        {"name": name, "stages": "archived"},
    )
    r.post(
        "set alias", "registered-models/alias", {"name": name, "alias": "champion", "version": "2"}
    )
    r.get("get alias", "registered-models/alias", {"name": name, "alias": "champion"})
    r.get("get registered model with alias", "registered-models/get", {"name": name})
    r.get("get version with alias", "model-versions/get", {"name": name, "version": "2"})
    r.post(
        "set version tag",
        "model-versions/set-tag",
        {"name": name, "version": "1", "key": "k", "value": "v"},
    )
    r.post(
        "set version tag to delete",
        "model-versions/set-tag",
        {"name": name, "version": "1", "key": "tmp", "value": "v"},
    )
    r.call(
        "delete version tag",
        "DELETE",
        "model-versions/delete-tag",
        json={"name": name, "version": "1", "key": "tmp"},
    )
    r.get(
        "search versions",
        "model-versions/search",
        {"filter": f"name = '{name}'", "order_by": ["version_number DESC"]},
    )
    r.call(
        "delete alias",
        "DELETE",
        "registered-models/alias",
        json={"name": name, "alias": "champion"},
    )
    r.get("get deleted alias", "registered-models/alias", {"name": name, "alias": "champion"})
    r.call(
        "delete version 2", "DELETE", "model-versions/delete", json={"name": name, "version": "2"}
    )
    r.get("get deleted version", "model-versions/get", {"name": name, "version": "2"})
    r.post(
        "create version 3",
        "model-versions/create",
        {"name": name, "source": f"runs:/{run}/model2", "run_id": run},
    )
    r.get(
        "search versions after delete",
        "model-versions/search",
        {"filter": f"name = '{name}'", "order_by": ["version_number DESC"]},
    )
    r.call("delete registered model", "DELETE", "registered-models/delete", json={"name": name})
    r.get("get deleted registered model", "registered-models/get", {"name": name})
    r.get("get version of deleted model", "model-versions/get", {"name": name, "version": "1"})


def scenario_reference_answers(r: Recorder) -> None:
    """Issue 8, point 8: places where evtrack used to answer differently from the reference."""
    exp = r.post("create experiment", "experiments/create", {"name": r.name("ref")})[
        "experiment_id"
    ]
    run = r.post(
        "create run",
        "runs/create",
        {"experiment_id": exp, "run_name": r.name("refrun"), "start_time": 1},
    )["run"]["info"]["run_id"]
    # A runs:/ source is only checked against the run_id argument, not against the runs table.
    name = r.name("rm")
    r.post("create registered model", "registered-models/create", {"name": name})
    ghost = "0123456789abcdef0123456789abcdef"
    r.post(
        "version from a run that does not exist",
        "model-versions/create",
        {"name": name, "source": f"runs:/{ghost}/model", "run_id": ghost},
    )
    r.get(
        "download uri of that version",
        "model-versions/get-download-uri",
        {"name": name, "version": "1"},
    )
    r.post(
        "runs source without run_id",
        "model-versions/create",
        {"name": name, "source": f"runs:/{ghost}/model"},
    )
    # The path is checked before the version is looked up.
    for label, version, path in (
        ("traversal", "1", "../x"),
        ("absolute", "1", "/etc/passwd"),
        ("traversal, missing version", "99", "../x"),
        ("traversal, bad version", "abc", "../x"),
    ):
        r.call(
            f"get-artifact {label}",
            "GET",
            "/model-versions/get-artifact",
            params={"name": name, "version": version, "path": path},
        )
    # Non-string keys are 400 on every logging route, never 500 (messages are not compared).
    for key in (5, 5.5, True, ["a"], {"a": 1}):
        r.post(
            f"log-metric key {key!r}",
            "runs/log-metric",
            {"run_id": run, "key": key, "value": 1, "timestamp": 1, "step": 0},
        )
    r.post("log-parameter int key", "runs/log-parameter", {"run_id": run, "key": 5, "value": "1"})
    r.post("set-tag int key", "runs/set-tag", {"run_id": run, "key": 5, "value": "1"})
    r.post("delete-tag int key", "runs/delete-tag", {"run_id": run, "key": 5})
    for field, item in (
        ("metrics", {"key": 5, "value": 1, "timestamp": 1, "step": 0}),
        ("params", {"key": 5, "value": "1"}),
        ("tags", {"key": 5, "value": "1"}),
    ):
        r.post(f"log-batch int key in {field}", "runs/log-batch", {"run_id": run, field: [item]})
    r.post(
        "experiment with int tag key",
        "experiments/create",
        {"name": r.name("inttag"), "tags": [{"key": 5, "value": "1"}]},
    )
    r.post(
        "registered model with int tag key",
        "registered-models/create",
        {"name": r.name("rm-inttag"), "tags": [{"key": 5, "value": "1"}]},
    )
    r.get("run after refused writes", "runs/get", {"run_id": run})
    # 1,000 run ids in the query (about 41 KB of request line): a JSON answer, not plain text.
    many = [f"{i:032x}" for i in range(1000)]
    r.call(
        "bulk history, 1000 run ids",
        "GET",
        "/ajax-api/2.0/mlflow/metrics/get-history-bulk",
        params={"run_id": many, "metric_key": "acc"},
    )
    r.get(
        "bulk interval, 1000 run ids",
        "metrics/get-history-bulk-interval",
        {"run_ids": many, "metric_key": "acc"},
    )
    r.get(
        "bulk interval, 100 run ids",
        "metrics/get-history-bulk-interval",
        {"run_ids": [run, *many[:99]], "metric_key": "acc"},
    )
    # A relative local artifact_location is made absolute against the server's directory.
    for label, location in (("relative", "rel/dir"), ("dot", "./rel2"), ("file:", "file:rel3")):
        created = r.post(
            f"experiment with {label} location",
            "experiments/create",
            {"name": r.name(f"loc-{label}"), "artifact_location": location},
        )
        got = r.server.request(
            "GET", f"{API}/experiments/get", params={"experiment_id": created["experiment_id"]}
        ).body["experiment"]["artifact_location"]
        tail = location.removeprefix("file:").removeprefix("./")
        r.steps.append(
            {
                "step": f"{label} location made absolute",
                "absolute": got.removeprefix("file://").startswith("/"),
                "scheme kept": got.startswith("file://") == location.startswith("file:"),
                "ends with": got.endswith("/" + tail),
            }
        )
    # GraphQL int64 fields (fileSize, timestamps, steps) are strings, as the reference's.
    r.call(
        "upload artifact",
        "PUT",
        f"{ARTIFACTS_API}/{exp}/{run}/artifacts/dir/f.txt",
        data=b"hello world",
        record="status",  # the reference answers an empty body, evtrack {}: both are "ok"
    )
    r.post(
        "log metric",
        "runs/log-metric",
        {"run_id": run, "key": "acc", "value": 0.5, "timestamp": 9, "step": 3},
    )
    r.call(
        "graphql list artifacts with sizes",
        "POST",
        "/graphql",
        json={
            "query": 'query { mlflowListArtifacts(input: {runId: "'
            + run
            + '", path: "dir"}) { rootUri files { path isDir fileSize } } }'
        },
    )
    r.call(
        "graphql run int64 fields",
        "POST",
        "/graphql",
        json={
            "query": 'query { mlflowGetRun(input: {runId: "' + run + '"}) { run { info { '
            "startTime endTime } data { metrics { key step timestamp } } } } }"
        },
    )


SCENARIOS: dict[str, Callable[[Recorder], None]] = {
    "experiments": scenario_experiments,
    "runs": scenario_runs,
    "metric_history": scenario_metric_history,
    "search": scenario_search,
    "run_shapes": scenario_run_shapes,
    "artifacts": scenario_artifacts,
    "misc": scenario_misc,
    "graphql": scenario_graphql,
    "logged_models": scenario_logged_models,
    "registry": scenario_registry,
    "reference_answers": scenario_reference_answers,
}


def transcript(server: Server, scenario: Callable[[Recorder], None]) -> list[dict[str, Any]]:
    rec = Recorder(server)
    scenario(rec)
    return Normaliser(rec).normalise(rec.steps)


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_differential(server_pair: tuple[Server, Server], scenario: str, tmp_path: Path) -> None:
    baseline_server, candidate_server = server_pair
    out_dir = Path(os.environ.get("EVTRACK_COMPAT_TRANSCRIPT_DIR") or tmp_path)
    out_dir.mkdir(parents=True, exist_ok=True)
    baseline = transcript(baseline_server, SCENARIOS[scenario])
    candidate = transcript(candidate_server, SCENARIOS[scenario])
    assert len(baseline) > 5
    if baseline == candidate:
        return
    a = json.dumps(baseline, indent=1, sort_keys=True).splitlines()
    b = json.dumps(candidate, indent=1, sort_keys=True).splitlines()
    (out_dir / f"{scenario}.{baseline_server.kind}.json").write_text("\n".join(a))
    (out_dir / f"{scenario}.{candidate_server.kind}.json").write_text("\n".join(b))
    diff = "\n".join(
        difflib.unified_diff(
            a, b, f"{baseline_server.kind}", f"{candidate_server.kind}", n=8, lineterm=""
        )
    )
    first = (
        next(i for i, (x, y) in enumerate(zip(baseline, candidate, strict=False)) if x != y)
        if any(x != y for x, y in zip(baseline, candidate, strict=False))
        else min(len(baseline), len(candidate))
    )
    step = (baseline + candidate)[first]["step"] if first < len(baseline) else "?"
    pytest.fail(
        f"transcripts differ from step {first} ({step!r}); files in {out_dir}\n{diff[:20000]}"
    )

#!/usr/bin/env python
"""Why is one runs/search answer bigger than another? Field by field, for the same runs.

    python benchmarks/search_answer_size.py [--runs 1000]

Starts the reference ``mlflow server``, FastTrackML (when its ``fml`` is installed) and evtrack
on fresh databases, loads the same ``--runs`` runs into each through the MLflow API
(``create_run`` + ``log_batch`` of metric ``acc`` and param ``p``, exactly as the client
would), asks each for ``runs/search`` of the 1000 best by ``metrics.acc`` (the query of
run.py's workload (e)), and prints the answer's size in bytes split by field: how many bytes
each JSON path contributes over all runs (key, punctuation and value), so a difference
between servers points at the fields that cause it.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import sys
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _mlflow_util as mu  # noqa: E402
from _context import Context  # noqa: E402
from _servers import (  # noqa: E402
    DEFAULT_DATABASE_URL,
    Databases,
    evtrack_server,
    fasttrackml_server,
    find_fml,
    mlflow_server,
)
from wl_search import FILTER, ORDER, RESULTS, load_mlflow_api  # noqa: E402


def field_bytes(value: Any, path: str, out: dict[str, int]) -> None:
    """Attribute every byte of compact JSON to the innermost path that holds it (lists of
    objects are folded: ``runs[].data.tags[].key``)."""
    import json

    if isinstance(value, dict):
        out[path] += 2 + max(0, len(value) - 1)  # braces and commas
        for k, v in value.items():
            sub = f"{path}.{k}" if path else k
            out[sub] += len(json.dumps(k)) + 1  # "key":
            field_bytes(v, sub, out)
    elif isinstance(value, list):
        out[path] += 2 + max(0, len(value) - 1)
        for v in value:
            field_bytes(v, path + "[]", out)
    else:
        out[path] += len(json.dumps(value, separators=(",", ":"), ensure_ascii=False))


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--runs", type=int, default=1000)
    p.add_argument(
        "--database-url", default=os.environ.get("BENCH_DATABASE_URL", DEFAULT_DATABASE_URL)
    )
    args = p.parse_args()
    import requests

    workdir = Path(tempfile.mkdtemp(prefix="evtrack-size-"))
    dbs = Databases(args.database_url)
    servers = []
    try:
        servers.append(mlflow_server(dbs.create("bench_size_mlflow"), workdir, sys.executable, 2))
        if fml := find_fml():
            servers.append(fasttrackml_server(dbs.create("bench_size_fml"), workdir, fml))
        servers.append(evtrack_server(dbs.create("bench_size_evtrack"), workdir, sys.executable))
        for s in servers:
            s.start()
        for s in servers:
            s.wait_healthy(240)
        ns = argparse.Namespace(load_procs=4)
        ctx = Context(ns, servers[0], servers[-1], workdir)
        sizes: dict[str, dict[str, int]] = {}
        totals: dict[str, int] = {}
        samples: dict[str, Any] = {}
        for s in servers:
            exp = mu.new_experiment(s.url, "size")
            load_mlflow_api(ctx, s, exp, args.runs)
            r = requests.post(
                s.url + "/api/2.0/mlflow/runs/search",
                json={
                    "experiment_ids": [exp],
                    "filter": FILTER,
                    "order_by": ORDER,
                    "max_results": RESULTS,
                },
                timeout=300,
                stream=True,  # to count the bytes on the wire before any decompression
            )
            wire = r.raw.read(decode_content=False)
            encoding = r.headers.get("Content-Encoding", "none")
            content = gzip.decompress(wire) if encoding == "gzip" else wire
            print(f"{s.name} answer starts: {content[:60]!r}")
            r.raise_for_status()
            body = json.loads(content)
            totals[s.name] = len(content)
            out: dict[str, int] = defaultdict(int)
            field_bytes(body, "", out)
            sizes[s.name] = out
            samples[s.name] = body["runs"][0]
            print(
                f"{s.name}: {len(body['runs'])} runs, {len(content):,} bytes of JSON as the "
                f"client parses it, {len(wire):,} on the wire (Content-Encoding {encoding}); "
                f"{sum(out.values()):,} as compact JSON"
            )
        names = [s.name for s in servers]
        paths = sorted(
            set().union(*sizes.values()), key=lambda k: -max(sizes[n].get(k, 0) for n in names)
        )
        print("\nbytes per JSON path over the whole answer (compact JSON):")
        print(f"{'path':55s}" + "".join(f"{n:>13s}" for n in names))
        for path in paths:
            row = [sizes[n].get(path, 0) for n in names]
            if len(set(row)) > 1 or max(row) > 1000:
                print(f"{path or '(top)':55s}" + "".join(f"{v:13,d}" for v in row))
        for n in names:
            print(f"\nfirst run as {n} answers it:\n{json.dumps(samples[n], indent=1)[:2500]}")
        ctx.close()
    finally:
        for s in servers:
            s.stop()
        dbs.drop_all()
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

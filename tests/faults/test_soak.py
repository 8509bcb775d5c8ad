"""The soak benchmark, short: half a minute of mixed load with zero errors, every
acknowledged point stored once, and no memory growth beyond a tolerance.

``benchmarks/soak.py`` runs minutes of ingest (native client and the official client's
``log_batch``), search, registry and artifact traffic at fixed rates against a fresh server
and compares the last window with the first. Here it runs for 25 s, as CI can afford. Its
latency comparison is printed but not asserted: on a shared 2-core machine a half-minute p99
says more about the neighbours than about the server (the benchmark itself, run for minutes,
checks it).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SOAK = Path(__file__).resolve().parents[2] / "benchmarks" / "soak.py"


def test_a_short_soak_has_no_errors_and_no_memory_growth(
    postgres_admin_dsn: str, tmp_path: Path
) -> None:
    out = tmp_path / "soak.json"
    done = subprocess.run(
        [
            sys.executable,
            str(SOAK),
            "--duration",
            "25",
            "--warmup",
            "5",
            "--window",
            "8",
            "--database-url",
            postgres_admin_dsn,
            "--rss-floor-mib",
            "24",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=240,
    )
    print(done.stdout[-6000:])
    assert out.exists(), done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["errors"]["count"] == 0, result["errors"]["first"]
    points = result["points"]
    assert points["acknowledged"] == points["stored"] > 0, points
    assert points["duplicates"] == 0, points
    assert result["requests"] > 300, "the load did not run"
    rss = result["rss"]
    assert result["checks"]["rss"], (
        f"server RSS grew {rss['growth_mib']:.1f} MiB between the windows "
        f"(allowed {rss['allowed_growth_mib']:.1f}): {rss['series']}"
    )

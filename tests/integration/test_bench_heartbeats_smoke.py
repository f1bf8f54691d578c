"""`python -m ops.bench --quick --only heartbeats` runs end to end on the test server and prints its rows."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from tests.conftest import ROOT

LABELS = (
    "GET /health (harness ceiling), 32 clients",
    "POST /v1/machine-agents/heartbeat, 32 clients",
    "latency p50 / p99",
    "heartbeats/s vs required 333/s (10,000 agents / 30 s)",
    "ratio heartbeats/s / GET /health ceiling (same run)",
    "heartbeat responses other than 200",
    "events an agent load replays (worst of 100 streams)",
    "events an endpoint load replays (worst of 100 streams)",
    "note: heartbeats streams after the run: hottest agent stream",
    "SUMMARY:",
)


def test_bench_quick_heartbeats_prints_its_rows(server_url: str) -> None:
    env = {**os.environ, "MM_DATABASE_URL": server_url}
    result = subprocess.run(
        [sys.executable, "-m", "ops.bench", "--quick", "--only", "heartbeats"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    # Rates depend on the machine; only the shape of the report is checked...
    missing = [label for label in LABELS if label not in out]
    assert not missing, f"missing {missing} in:\n{out}"
    # ...plus what does not depend on the machine: every heartbeat answered 200.
    assert re.search(r"heartbeat responses other than 200\s+\|\s+0 \|\s+<= 0 \| PASS", out), out

"""`python -m ops.bench --quick --only PHASE` runs end to end on the test server and prints that phase's rows.

Rates depend on the machine, so only the shape of each report is checked, plus the rows whose value does not
depend on it (every heartbeat answered 200; each due lease expired once and no renewed one did).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from tests.conftest import ROOT

PHASES = {
    "store": ((
        "raw asyncpg INSERT, 16 writers (baseline)",
        "ratio append/raw",
    ), None),
    "heartbeats": ((
        "GET /health (harness ceiling), 32 clients",
        "POST /v1/machine-agents/heartbeat, 32 clients",
        "latency p50 / p99",
        "heartbeats/s vs required 333/s (10,000 agents / 30 s)",
        "ratio heartbeats/s / GET /health ceiling (same run)",
        "events an agent load replays (worst of 100 streams)",
        "events an endpoint load replays (worst of 100 streams)",
        "note: heartbeats streams after the run: hottest agent stream",
    ), r"heartbeat responses other than 200\s+\|\s+0 \|\s+<= 0 \| PASS"),
    "timers": ((
        "broker.enqueue of the same timers, 1 thread (baseline)",
        "RelayProjection.apply_many -> PostgreSQL broker",
        "relay msg/s vs required 333/s",
        "ratio relay / broker.enqueue (same run)",
        "worker (8 threads): renewed-lease timers",
        "worker (8 threads): timers that expire a lease",
        "timer messages retried or dead-lettered",
        "note: timers worker: one dramatiq.Worker",
    ), r"Expired events: due leases / renewed leases\s+\|\s+50 / 0 \|\s+50 / 0 \| PASS"),
}


@pytest.mark.parametrize("phase", list(PHASES))
def test_bench_quick_phase_prints_its_rows(server_url: str, phase: str) -> None:
    labels, exact = PHASES[phase]
    env = {**os.environ, "MM_DATABASE_URL": server_url}
    result = subprocess.run(
        [sys.executable, "-m", "ops.bench", "--quick", "--only", phase],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    missing = [label for label in (*labels, "SUMMARY:") if label not in out]
    assert not missing, f"missing {missing} in:\n{out}"
    if exact is not None:
        assert re.search(exact, out), out

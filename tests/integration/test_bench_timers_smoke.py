"""`python -m ops.bench --quick --only timers` runs end to end on the test server and prints its rows."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from tests.conftest import ROOT

LABELS = (
    "broker.enqueue of the same timers, 1 thread (baseline)",
    "RelayProjection.apply_many -> PostgreSQL broker",
    "relay msg/s vs required 333/s",
    "ratio relay / broker.enqueue (same run)",
    "worker (8 threads): renewed-lease timers",
    "worker (8 threads): timers that expire a lease",
    "Expired events: due leases / renewed leases",
    "timer messages retried or dead-lettered",
    "note: timers worker: one dramatiq.Worker",
    "SUMMARY:",
)


def test_bench_quick_timers_prints_its_rows(server_url: str) -> None:
    env = {**os.environ, "MM_DATABASE_URL": server_url}
    result = subprocess.run(
        [sys.executable, "-m", "ops.bench", "--quick", "--only", "timers"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    # Rates depend on the machine; only the shape of the report is checked...
    missing = [label for label in LABELS if label not in out]
    assert not missing, f"missing {missing} in:\n{out}"
    # ...plus what does not depend on the machine: each due lease expired once, no renewed one did.
    assert re.search(r"Expired events: due leases / renewed leases\s+\|\s+50 / 0 \|\s+50 / 0 \| PASS", out), out

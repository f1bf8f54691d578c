"""`python -m ops.bench --quick --only store` runs end to end on the test server and prints the ratio line."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import ROOT


def test_bench_quick_store_prints_ratio(server_url: str) -> None:
    env = {**os.environ, "MM_DATABASE_URL": server_url}
    result = subprocess.run(
        [sys.executable, "-m", "ops.bench", "--quick", "--only", "store"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # Figures depend on the machine; only the shape of the report is checked.
    assert "ratio append/raw" in result.stdout, result.stdout
    assert "SUMMARY:" in result.stdout

"""`mm demo` against a fresh `mm up`: a task goes from listing to outcome through the real stack (API, projector
and its relay, worker, stub seller on loopback), and the printout never shows a secret."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.live_stack import ROOT, free_port, mm_processes


@pytest.mark.slow
def test_mm_demo_drives_a_task_to_its_outcome(fresh_database_sync: str, tmp_path: Path) -> None:
    env = {"MM_DATABASE_URL": fresh_database_sync, "MM_DATA_DIR": str(tmp_path), "MM_READ_YOUR_WRITES_TIMEOUT_S": "15"}
    with mm_processes(["up"], env, free_port()) as base:
        run = subprocess.run([sys.executable, "-m", "app.cli", "demo", "--base", base], cwd=ROOT,
                             capture_output=True, text=True, timeout=120,
                             env={"PATH": "/usr/local/bin:/usr/bin:/bin", "PYTHONPATH": str(ROOT),
                                  "MM_DATA_DIR": str(tmp_path), "MM_LOG_LEVEL": "WARNING"})
    out = run.stdout
    assert run.returncode == 0, f"{out[-4000:]}\n--- stderr\n{run.stderr[-3000:]}"
    for step in ("/identity/verify", "/runtime-endpoints/stub", "/discover", "/resolve", "/execute"):
        assert f"{step}" in out, step
    assert re.search(r"^task \S+ succeeded: output \{\"output\":\{\"text\":\"Machines trade work.\"\}\}$", out,
                     re.MULTILINE), out[-2000:]
    assert "the seller saw 1 call(s)" in out
    assert "why: place 1 of 1 by cheapest" in out
    # The second act: the order paid into escrow by a signed mandate, executed, confirmed and released.
    for step in ("/v1/market/orders", "/payment", "signs: mm-payment-v1", "/confirm", "/v1/accounts/me/balance"):
        assert step in out, step
    assert re.search(r"^order \S+ settled: escrow released, seller credited 25 USD cents, platform fee 0$", out,
                     re.MULTILINE), out[-2000:]
    admin = (tmp_path / "admin-token").read_text().strip()
    assert admin not in out and not re.search(r'"(key|authToken)":"(?!\*\*\*)', out), "a secret was printed"

"""The README's walkthrough runs as written: every ```bash block, in order, in one bash against a fresh `mm up`."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.live_stack import ROOT, free_port, mm_processes

_BLOCK = re.compile(r"^```bash\n(.*?)^```$", re.DOTALL | re.MULTILINE)
_UUID = "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"


def walkthrough() -> list[str]:
    return _BLOCK.findall((ROOT / "README.md").read_text())


def _script(blocks: list[str]) -> str:
    """One shell, so variables carry from block to block; a marker before each block names the one that failed."""
    steps = [f'echo "::block {i}::"\n{block}' for i, block in enumerate(blocks)]
    return "set -euo pipefail\n" + "\n".join(steps) + '\necho "::done::"\n'


def test_the_readme_has_a_walkthrough_that_covers_the_issue_list() -> None:
    text = "\n".join(walkthrough())
    assert len(walkthrough()) >= 8, "the walkthrough blocks are ```bash fences; did they become ```sh?"
    for needed in ("BASE=", "Idempotency-Key: $(uuid)", "/graph/nodes", "/graph/edges", "/revoke", "If-Match",
                   "Ed25519PrivateKey", "key.sign("):
        assert needed in text, needed
    # Every POST, PUT and PATCH with a body says it is JSON; every POST carries a fresh Idempotency-Key.
    calls = re.split(r"(?=\bcurl )", text)[1:]
    for call in calls:
        call = call.split("\n\n")[0]
        if " -d " in call:
            assert "Content-Type: application/json" in call, call
        if "-X POST" in call:
            assert 'Idempotency-Key: $(uuid)' in call, call


@pytest.mark.slow
def test_the_readme_walkthrough_runs_against_a_fresh_stack(fresh_database_sync: str, tmp_path: Path) -> None:
    # A stand-in for the repository root: .data is this stack's data dir, .venv the suite's own.
    (tmp_path / ".data").mkdir()
    (tmp_path / ".venv").symlink_to(sys.prefix)  # the suite's venv: its python has cryptography
    # A generous read-your-writes wait: the projector may still be starting when the first GET arrives.
    env = {"MM_DATABASE_URL": fresh_database_sync, "MM_DATA_DIR": str(tmp_path / ".data"),
           "MM_READ_YOUR_WRITES_TIMEOUT_S": "15"}
    started = time.monotonic()
    # No wait for /ready: the printed admin key works, and every read shows the writes before it, at once.
    with mm_processes(["up"], env, free_port()) as base:
        run = subprocess.run(["bash", "-c", _script(walkthrough())], cwd=tmp_path, capture_output=True, text=True,
                             timeout=180, env={"PATH": "/usr/local/bin:/usr/bin:/bin", "BASE": base})
    elapsed = time.monotonic() - started
    blocks = re.findall(r"::block (\d+)::", run.stdout)
    failed = walkthrough()[int(blocks[-1])] if blocks else "(none)"
    assert run.returncode == 0 and "::done::" in run.stdout, (
        f"README block failed:\n{failed}\n--- stdout\n{run.stdout[-3000:]}\n--- stderr\n{run.stderr[-3000:]}")
    out = run.stdout
    assert re.search(rf"^machine {_UUID} is active$", out, re.MULTILINE), out
    assert re.search(r"^403$", out, re.MULTILINE), out  # a revoked agent's heartbeat
    assert "endpoint vllm is expired" in out, out  # the revoked agent's lease ran out
    assert re.search(r"^2 nodes, 1 edge: .*\('summarise', 'active'\)", out, re.MULTILINE), out
    assert elapsed < 170, f"the walkthrough took {elapsed:.0f} s"

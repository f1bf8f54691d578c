"""`mm up` as a user runs it: one process group serving the API, projecting, and stopping cleanly on Ctrl-C."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from projections.audit_chain import public_key_of
from tests.integration.proc_tools import cleanup, lease_expires_through_the_whole_stack, tree

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_mm_up_serves_projects_and_stops_on_ctrl_c(fresh_database_sync: str, tmp_path: Path) -> None:
    port = _free_port()
    env = {**os.environ, "MM_DATABASE_URL": fresh_database_sync, "MM_PORT": str(port), "MM_DATA_DIR": str(tmp_path),
           "MM_LOG_LEVEL": "WARNING", "PYTHONPATH": str(ROOT)}
    env.pop("MM_AUDIT_SIGNING_KEY", None)  # so `mm up` keeps one of its own
    proc = subprocess.Popen([sys.executable, "-m", "app.cli", "up"], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    banner: list[str] = []
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            banner.append(line)
            if line.startswith("Press Ctrl-C"):
                break
        text = "".join(banner)
        assert f"http://127.0.0.1:{port}/docs" in text, text[-3000:]
        key = next(line.split(":", 1)[1].strip() for line in banner if "Admin key:" in line)
        assert key == (tmp_path / "admin-token").read_text().strip()
        assert (tmp_path / "admin-token").stat().st_mode & 0o777 == 0o600
        assert (tmp_path / "secret-key").stat().st_mode & 0o777 == 0o600  # seals endpoint credentials
        assert (tmp_path / "audit-signing-key").stat().st_mode & 0o777 == 0o600  # signs audit checkpoints
        base = f"http://127.0.0.1:{port}"
        published = httpx.get(base + "/v1/audit-events/signing-key", headers={"X-Api-Key": key}).json()
        assert published["publicKey"] == public_key_of((tmp_path / "audit-signing-key").read_text().strip())
        api = next(p for p in tree(proc.pid) if "api" in p.cmdline() and "app.cli" in p.cmdline())
        assert "MM_AUDIT_SIGNING_KEY" not in api.environ() and api.environ()["MM_AUDIT_PUBLIC_KEY"]  # §10
        # The printed key works the moment the banner shows it: authentication never waits for a projection.
        r = httpx.post(base + "/v1/accounts", json={"name": "up"}, headers={"X-Api-Key": key})
        assert r.status_code == 201, r.text
        assert httpx.get(base + "/ready").status_code == 200
        lease_expires_through_the_whole_stack(base, r.json()["apiKey"]["key"])
        # The development stack's workers may call a stub seller on loopback (MM_ALLOW_PRIVATE_ENDPOINTS).
        children = tree(proc.pid)[1:]
        assert children and all(c.environ().get("MM_ALLOW_PRIVATE_ENDPOINTS") == "true" for c in children)
    finally:
        procs = tree(proc.pid)
        proc.send_signal(signal.SIGINT)
        try:
            rest, _ = proc.communicate(timeout=60)
        finally:
            cleanup(proc, procs)
    assert proc.returncode == 0, rest[-3000:]
    for name in ("api", "projector", "worker"):
        # Each child stopped by itself within its grace period; the supervisor did not have to kill it.
        assert re.search(rf"mm up: {name} exited by itself [\d.]+s after SIGTERM \(exit code 0\)", rest), rest
    assert "killed after" not in rest
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)

"""`mm up` as a user runs it: one process group serving the API, projecting, and stopping cleanly on Ctrl-C."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.factories import MachineKeyFactory

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _lease_expires_through_the_whole_stack(base: str, key: str) -> None:
    """API -> log -> relay (projector) -> PostgreSQL broker -> worker -> Expired event -> read model."""
    h, keys = {"Authorization": f"Bearer {key}"}, MachineKeyFactory()
    mid = httpx.post(base + "/v1/machines", json={"name": "up", "publicKey": keys.public_key}, headers=h).json()["id"]
    c = httpx.post(f"{base}/v1/machines/{mid}/identity/challenge", headers=h).json()
    httpx.post(f"{base}/v1/machines/{mid}/identity/verify", headers=h,
               json={"challengeId": c["challengeId"], "signature": keys.sign(c["nonce"])}).raise_for_status()
    httpx.post(f"{base}/v1/machines/{mid}/activate", headers=h).raise_for_status()
    enrolled = httpx.post(f"{base}/v1/machines/{mid}/agents/enrollment", headers=h,
                          json={"name": "up", "allowedProviderKeys": ["gpu"], "leaseSeconds": 1})
    endpoint = {"providerKey": "gpu", "url": "https://g.example", "authToken": "sealed-by-the-api"}
    beat = httpx.post(base + "/v1/machine-agents/heartbeat",
                      json={"agentToken": enrolled.json()["agentToken"], "endpoints": [endpoint]})
    assert beat.status_code == 200, beat.text
    status = None
    for _ in range(300):
        r = httpx.get(f"{base}/v1/machines/{mid}/runtime-endpoints/gpu", headers=h)
        status = r.json().get("status")
        if status == "expired":
            break
        time.sleep(0.1)
    assert status == "expired", r.text


@pytest.mark.slow
def test_mm_up_serves_projects_and_stops_on_ctrl_c(fresh_database_sync: str, tmp_path: Path) -> None:
    port = _free_port()
    env = {**os.environ, "MM_DATABASE_URL": fresh_database_sync, "MM_PORT": str(port), "MM_DATA_DIR": str(tmp_path),
           "MM_LOG_LEVEL": "WARNING", "PYTHONPATH": str(ROOT)}
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
        base = f"http://127.0.0.1:{port}"
        for _ in range(100):  # the admin key authenticates once the projector has caught up
            r = httpx.post(base + "/v1/accounts", json={"name": "up"}, headers={"X-Api-Key": key})
            if r.status_code != 401:
                break
            time.sleep(0.1)
        assert r.status_code == 201, r.text
        assert httpx.get(base + "/ready").status_code == 200
        _lease_expires_through_the_whole_stack(base, r.json()["apiKey"]["key"])
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)

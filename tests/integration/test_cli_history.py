"""mm replay, mm debug bundle (and replaying it offline), mm events tail, against a real database."""

from __future__ import annotations

import asyncio
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from app.container import Container
from app.services.agents import ReportedEndpoint
from app.settings import Settings
from domain.shared.context import CommandContext
from tests.conftest import TEST_SECRET_KEY
from tests.integration.test_cli import ROOT, mm
from tests.journeys import enrolled_agent, operational_machine


async def _story(dsn: str, request_id: str) -> dict[str, str]:
    """A machine with a challenge (whose nonce is secret), an agent (token digest) and a heartbeat (sealed token)."""
    c = await Container.open(Settings(secret_key=TEST_SECRET_KEY), dsn, min_size=1, max_size=2)
    try:
        ctx = CommandContext(at=datetime.now(UTC), actor="test", account_id=uuid.uuid4())
        machine = await operational_machine(c, ctx)
        [nonce] = [e.data["nonce"] for e in await c.store.load(machine.id)
                   if e.type == "machines:Machine.IdentityChallengeIssued"]
        _, token = await enrolled_agent(c, ctx, machine.id, keys=["gpu"], lease_seconds=600)
        beat = CommandContext(at=datetime.now(UTC), actor="agent", request_id=request_id)
        await c.agents.heartbeat(beat, token, [ReportedEndpoint(provider_key="gpu", url="https://gpu.example",
                                                                auth_token="plain-endpoint-secret")])
        return {"machine": str(machine.id), "nonce": nonce, "token": token}
    finally:
        await c.close()


def test_replay_shows_each_event_and_the_state_change_with_secrets_redacted(fresh_database_sync: str) -> None:
    story = asyncio.run(_story(fresh_database_sync, "r-" + uuid.uuid4().hex))
    out = mm(fresh_database_sync, "replay", story["machine"])
    assert out.returncode == 0, out.stderr
    assert "machine.registered" in out.stdout and "machine.activated" in out.stdout
    assert '~ status: "registered" -> "active"' in out.stdout
    assert '+ challenge.nonce: "[redacted]"' in out.stdout and story["nonce"] not in out.stdout
    short = mm(fresh_database_sync, "replay", story["machine"], "--to-version", "2")
    assert short.returncode == 0 and "versions 1..2" in short.stdout and "machine.activated" not in short.stdout
    missing = mm(fresh_database_sync, "replay", str(uuid.uuid4()))
    assert missing.returncode == 1 and "has no events" in missing.stderr


def test_a_debug_bundle_replays_offline(fresh_database_sync: str, tmp_path: Path) -> None:
    request_id = "r-" + uuid.uuid4().hex
    story = asyncio.run(_story(fresh_database_sync, request_id))
    out = mm(fresh_database_sync, "debug", "bundle", "--correlation", request_id)
    assert out.returncode == 0, out.stderr
    for secret in (story["token"], "plain-endpoint-secret", story["nonce"]):
        assert secret not in out.stdout
    bundle = json.loads(out.stdout)
    assert bundle["correlationId"] == request_id and len(bundle["traced"]) == 2  # the heartbeat and the upsert
    assert {s["streamType"] for s in bundle["streams"]} == {"runtime:MachineAgent", "runtime:RuntimeEndpoint"}
    path = tmp_path / "bundle.json"
    path.write_text(out.stdout)
    offline = mm("postgresql://nobody@127.0.0.1:1/nothing", "replay", "--bundle", str(path))  # no database at all
    assert offline.returncode == 0, offline.stderr
    assert "machine-agent.enrolled" in offline.stdout and "*v2" in offline.stdout
    assert "- message expire_runtime_endpoint_lease" in offline.stdout
    assert '+ auth_token: "[redacted]"' in offline.stdout
    assert mm(fresh_database_sync, "debug", "bundle", "--correlation", "nothing-here").returncode == 1


def test_events_tail_follows_the_log_live_and_filters(fresh_database_sync: str) -> None:
    env = {**os.environ, "MM_DATABASE_URL": fresh_database_sync, "MM_LOG_LEVEL": "WARNING", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "app.cli", "events", "tail", "--type", "machine.activated"],
                            env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(x) for x in proc.stdout or []], daemon=True).start()
    try:
        assert proc.stderr is not None and "following" in proc.stderr.readline()
        started = time.monotonic()
        story = asyncio.run(_story(fresh_database_sync, "r-" + uuid.uuid4().hex))
        line = lines.get(timeout=15)
        assert "machine.activated" in line and story["machine"] in line, line
        assert time.monotonic() - started < 15
        time.sleep(1.5)  # nothing else matches the filter
        assert lines.empty()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0

"""Versioned loads with snapshots: a snapshot at or below the target is used, one above it never is."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from app.container import Container
from app.services.agents import ReportedEndpoint
from domain.runtime.agent import MachineAgent
from domain.shared.context import CommandContext
from domain.shared.errors import NotFound
from tests.journeys import enrolled_agent, operational_machine


async def test_every_version_of_a_snapshotted_stream(fresh_container: Container) -> None:
    c = fresh_container
    ctx = CommandContext(at=datetime.now(UTC), actor="test", account_id=uuid.uuid4())
    machine = await operational_machine(c, ctx)
    agent_id, token = await enrolled_agent(c, ctx, machine.id, keys=["gpu"], lease_seconds=60)
    seen = {1: (await c.repo.get(MachineAgent, agent_id)).__dict__.copy()}
    for _ in range(45):  # snapshots at 20 and 40
        out = await c.agents.heartbeat(CommandContext(at=datetime.now(UTC), actor="t"), token,
                                       [ReportedEndpoint(provider_key="gpu", url="https://gpu.example")])
        seen[out.agent.version] = out.agent.__dict__.copy()
    assert await c.pool.fetchval("SELECT version FROM snapshots WHERE stream_id = $1", agent_id) == 40
    for version, state in seen.items():
        got = await c.repo.get(MachineAgent, agent_id, version=version)
        assert got.version == version
        assert {k: v for k, v in got.__dict__.items() if k != "_pending_events"} == {
            k: v for k, v in state.items() if k != "_pending_events"}, version
    try:
        await c.repo.get(MachineAgent, agent_id, version=47)
    except NotFound:
        pass
    else:
        raise AssertionError("a version the stream never had must be NOT_FOUND")

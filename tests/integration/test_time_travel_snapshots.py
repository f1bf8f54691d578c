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
    history = await c.pool.fetch("SELECT version FROM snapshot_history WHERE stream_id = $1 ORDER BY 1", agent_id)
    assert [r["version"] for r in history] == [20, 40]
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


async def test_time_travel_starts_from_the_nearest_snapshot_at_or_below(fresh_container: Container) -> None:
    """A marked snapshot shows which one a load started from: 20 for versions 20..39, none below 20."""
    c = fresh_container
    ctx = CommandContext(at=datetime.now(UTC), actor="test", account_id=uuid.uuid4())
    machine = await operational_machine(c, ctx)
    agent_id, token = await enrolled_agent(c, ctx, machine.id, keys=["gpu"], lease_seconds=60)
    for _ in range(44):
        await c.agents.heartbeat(CommandContext(at=datetime.now(UTC), actor="t"), token,
                                 [ReportedEndpoint(provider_key="gpu", url="https://gpu.example")])
    await c.pool.execute("UPDATE snapshot_history SET state = jsonb_set(state, '{name}', '\"marked\"')"
                         " WHERE stream_id = $1 AND version = 20", agent_id)
    assert (await c.repo.get(MachineAgent, agent_id, version=25)).name == "marked"
    assert (await c.repo.get(MachineAgent, agent_id, version=20)).name == "marked"
    assert (await c.repo.get(MachineAgent, agent_id, version=19)).name == "a"
    assert (await c.repo.get(MachineAgent, agent_id, version=41)).name == "a"  # from the one at 40

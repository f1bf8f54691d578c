"""Heartbeat streams grow without bound; loading an agent or an endpoint replays a bounded tail."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from app.container import Container
from app.services.agents import ReportedEndpoint
from app.store.mapper import rebuild
from domain.runtime.agent import MachineAgent
from domain.runtime.endpoint import RuntimeEndpoint, endpoint_id
from domain.shared.context import CommandContext
from tests.journeys import enrolled_agent, operational_machine

BEATS = 57


async def test_loads_after_many_heartbeats_start_from_a_snapshot_and_equal_a_full_replay(
    fresh_container: Container,
) -> None:
    c, ctx = fresh_container, CommandContext(at=datetime.now(UTC), actor="t", account_id=uuid.uuid4())
    machine = await operational_machine(c, ctx)
    agent_id, token = await enrolled_agent(c, ctx, machine.id, keys=["gpu"], lease_seconds=30)
    for i in range(BEATS):
        await c.agents.heartbeat(CommandContext(at=datetime.now(UTC), actor="agent"), token,
                                 [ReportedEndpoint(provider_key="gpu", url=f"https://gpu.example/{i}",
                                                   auth_token=f"t{i}")])

    for cls, stream in ((MachineAgent, agent_id), (RuntimeEndpoint, endpoint_id(machine.id, "gpu"))):
        length = await c.pool.fetchval("SELECT max(version) FROM events WHERE stream_id = $1", stream)
        snap = await c.pool.fetchval("SELECT version FROM snapshots WHERE stream_id = $1", stream)
        every: Any = cls.SNAPSHOT_EVERY
        assert length >= BEATS and snap is not None and length - snap < every, (cls, length, snap)
        loaded = await c.repo.get(cls, stream)
        assert loaded.__dict__ == rebuild(await c.store.load(stream)).__dict__  # the snapshot changes nothing
    endpoint = await c.runtime.load(machine.id, "gpu")
    assert endpoint is not None and endpoint.url == f"https://gpu.example/{BEATS - 1}"
    assert c.runtime.reveal_auth_token(endpoint) == f"t{BEATS - 1}" and isinstance(endpoint.lease_expires_at, datetime)


async def test_a_heartbeat_that_snapshots_an_endpoint_for_an_agent_loaded_from_events(
    fresh_container: Container,
) -> None:
    """Ids read back from the database must be plain UUIDs: here the agent is rebuilt from its events and
    its id lands in the endpoint's snapshot (asyncpg's own UUID type made that snapshot fail, after the commit)."""
    c, ctx = fresh_container, CommandContext(at=datetime.now(UTC), actor="t", account_id=uuid.uuid4())
    machine = await operational_machine(c, ctx)
    for i in range(RuntimeEndpoint.SNAPSHOT_EVERY - 1):
        await c.runtime.put_manual(ctx, machine.id, "gpu", url=f"https://m.example/{i}", auth_token=None,
                                   metadata={})
    agent_id, token = await enrolled_agent(c, ctx, machine.id, keys=["gpu"], lease_seconds=30)
    out = await c.agents.heartbeat(CommandContext(at=datetime.now(UTC), actor="agent"), token,
                                   [ReportedEndpoint(provider_key="gpu", url="https://gpu.example")])
    stream = endpoint_id(machine.id, "gpu")
    assert out.endpoints[0].version == RuntimeEndpoint.SNAPSHOT_EVERY
    snapshot = await c.pool.fetchval("SELECT version FROM snapshots WHERE stream_id = $1", stream)
    assert snapshot == out.endpoints[0].version
    loaded = await c.repo.get(RuntimeEndpoint, stream)
    assert loaded.agent_id == agent_id and type(loaded.agent_id) is uuid.UUID

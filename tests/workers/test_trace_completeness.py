"""Trace completeness: a heartbeat whose lease later expires (relay -> real broker -> worker) is one tree holding
the heartbeat, the relay's timer and the expiry, all under the heartbeat request's correlation id."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import dramatiq
import pytest
from dramatiq.brokers.stub import StubBroker

from app.container import Container
from app.services.agents import ReportedEndpoint
from app.store.history import History
from app.trace_tree import build
from domain.runtime.endpoint import endpoint_id
from domain.shared.context import CommandContext
from tests.journeys import enrolled_agent, operational_machine
from tests.workers.harness import broker_url_for, eventually, relay_through, worker_on

dramatiq.set_broker(StubBroker())  # actors bind at import; never let dramatiq pick a default broker here
from workers.runtime_leases import expire_runtime_endpoint_lease  # noqa: E402


@pytest.mark.parametrize("kind", ["postgresql", "rabbitmq"])
async def test_heartbeat_timer_and_expiry_form_one_tree(c: Container, fresh_database: str, kind: str) -> None:
    async with worker_on(broker_url_for(kind, fresh_database), fresh_database,
                         [expire_runtime_endpoint_lease]) as (broker, worker):
        owner = CommandContext(at=datetime.now(UTC), actor="test", account_id=uuid.uuid4())
        machine = await operational_machine(c, owner)
        _, token = await enrolled_agent(c, owner, machine.id, keys=["gpu"], lease_seconds=1)
        request_id = f"hb-{uuid.uuid4().hex}"
        ctx = CommandContext(at=datetime.now(UTC), actor="agent", request_id=request_id)
        await c.agents.heartbeat(ctx, token, [ReportedEndpoint(provider_key="gpu", url="https://gpu.example")])
        stream = endpoint_id(machine.id, "gpu")
        await relay_through(c, broker, stream)
        worker.start()

        async def expired() -> bool:
            return any(e.type == "runtime:RuntimeEndpoint.Expired" for e in await c.store.load(stream))

        assert await eventually(expired, 20)
    events = await History(c.pool).traced(request_id)
    upsert = next(e for e in events if e.type == "runtime:RuntimeEndpoint.Opened")
    expiry = next(e for e in events if e.type == "runtime:RuntimeEndpoint.Expired")
    assert expiry.metadata["correlationId"] == request_id and expiry.metadata["causationId"] == str(upsert.event_id)
    nodes = build(events)
    by_id = {n.id: n for n in nodes}
    assert [(n.kind, n.type, n.depth) for n in nodes] == [
        ("event", "machine-agent.heartbeat", 0),
        ("event", "runtime-endpoint.upserted", 0),
        ("message", "expire_runtime_endpoint_lease", 1),
        ("event", "runtime-endpoint.expired", 2),
    ]
    timer = by_id[str(expiry.event_id)].parent_id
    assert timer is not None and by_id[timer].parent_id == str(upsert.event_id)
    assert by_id[timer].at <= expiry.recorded_at  # the timer was due before the expiry was recorded

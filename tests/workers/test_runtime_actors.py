"""Lease expiry end to end: agent heartbeat -> relay -> real broker (PostgreSQL, RabbitMQ) -> worker -> expired."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import dramatiq
import pytest
from dramatiq.brokers.stub import StubBroker

from app.container import Container
from app.services.agents import ReportedEndpoint
from domain.runtime.endpoint import endpoint_id
from domain.shared.context import CommandContext
from tests.journeys import enrolled_agent, operational_machine
from tests.workers.harness import Enqueues, broker_url_for, eventually, relay_through, worker_on
from workers import runtime

dramatiq.set_broker(StubBroker())  # actors bind at import; never let dramatiq pick a default broker here
from workers.runtime_leases import expire_lease_job, expire_runtime_endpoint_lease  # noqa: E402

EXPIRED = "runtime:RuntimeEndpoint.Expired"


def _ctx(account_id: uuid.UUID | None = None) -> CommandContext:
    return CommandContext(at=datetime.now(UTC), actor="test", account_id=account_id)


async def agent_with_lease(c: Container, lease_seconds: int) -> tuple[uuid.UUID, str]:
    """An operational machine with an enrolled agent; returns (machine id, agent token)."""
    ctx = _ctx(uuid.uuid4())
    machine = await operational_machine(c, ctx)
    _, token = await enrolled_agent(c, ctx, machine.id, keys=["gpu"], lease_seconds=lease_seconds)
    return machine.id, token


async def beat(c: Container, token: str) -> None:
    await c.agents.heartbeat(_ctx(), token, [ReportedEndpoint(provider_key="gpu", url="https://gpu.example")])


async def expired_events(c: Container, stream_id: uuid.UUID) -> int:
    return sum(1 for e in await c.store.load(stream_id) if e.type == EXPIRED)


async def test_the_actor_expires_once_and_ignores_renewed_or_early_timers(c: Container, fresh_database: str) -> None:
    runtime.use_database(fresh_database)
    machine_id, token = await agent_with_lease(c, lease_seconds=3600)
    await beat(c, token)
    stream = endpoint_id(machine_id, "gpu")
    await expire_lease_job(str(stream), 1, str(uuid.uuid4()))  # due in an hour: re-sent for later, not expired
    assert await expired_events(c, stream) == 0
    await beat(c, token)
    await expire_lease_job(str(stream), 1, str(uuid.uuid4()))  # version 1's lease was renewed by version 2
    assert await expired_events(c, stream) == 0


async def test_redelivered_timer_expires_once(c: Container, fresh_database: str) -> None:
    runtime.use_database(fresh_database)
    machine_id, token = await agent_with_lease(c, lease_seconds=1)
    await beat(c, token)
    stream = endpoint_id(machine_id, "gpu")
    assert await eventually(lambda: _lease_over(c, stream), 5)
    event_id = str(uuid.uuid4())
    for _ in range(3):  # redelivery is normal; the effect happens once
        await expire_lease_job(str(stream), 1, event_id)
    assert await expired_events(c, stream) == 1


async def _lease_over(c: Container, stream: uuid.UUID) -> bool:
    endpoint = await c.runtime.load_stream(stream)
    return endpoint is not None and endpoint.lease_expires_at is not None and (
        endpoint.lease_expires_at <= datetime.now(UTC))


@pytest.mark.parametrize("kind", ["postgresql", "rabbitmq"])
async def test_short_lease_expires_through_a_real_broker_and_a_heartbeat_revives_it(
    c: Container, fresh_database: str, kind: str
) -> None:
    async with worker_on(broker_url_for(kind, fresh_database), fresh_database,
                         [expire_runtime_endpoint_lease]) as (broker, worker):
        machine_id, token = await agent_with_lease(c, lease_seconds=1)
        stream = endpoint_id(machine_id, "gpu")
        await beat(c, token)
        await beat(c, token)  # renews: the first timer must find a newer version and do nothing
        await relay_through(c, broker, stream)  # the real relay enqueues the delayed timers from the log
        worker.start()
        assert await eventually(lambda: _expired(c, stream), 15)
        endpoint = await c.runtime.load_stream(stream)
        assert endpoint is not None and endpoint.status == "expired" and endpoint.version == 3

        await beat(c, token)  # a later heartbeat revives it, and its own timer expires it again
        revived = await c.runtime.load_stream(stream)
        assert revived is not None and revived.status == "active"
        await relay_through(c, broker, stream)
        assert await eventually(lambda: _expired_count(c, stream, 2), 15)
    assert await expired_events(c, stream) == 2  # two leases ran out; each expired exactly once


async def _expired(c: Container, stream: uuid.UUID) -> bool:
    return await expired_events(c, stream) >= 1


async def _expired_count(c: Container, stream: uuid.UUID, n: int) -> bool:
    return await expired_events(c, stream) >= n


@pytest.mark.parametrize("kind", ["postgresql", "rabbitmq"])
async def test_a_timer_delivered_early_is_resent_delayed_through_the_broker(
    c: Container, fresh_database: str, kind: str
) -> None:
    async with worker_on(broker_url_for(kind, fresh_database), fresh_database,
                         [expire_runtime_endpoint_lease], private_queues=True) as (broker, worker):
        enqueues = Enqueues()
        broker.add_middleware(enqueues)
        machine_id, token = await agent_with_lease(c, lease_seconds=8)  # room for a slow worker start
        await beat(c, token)
        stream = endpoint_id(machine_id, "gpu")
        endpoint = await c.runtime.load_stream(stream)
        assert endpoint is not None and endpoint.lease_expires_at is not None
        # Due now, eight seconds before the lease ends (as after clock skew between relay and worker).
        expire_runtime_endpoint_lease.send(str(stream), endpoint.version, str(uuid.uuid4()))
        worker.start()
        assert await eventually(lambda: _expired(c, stream), 40)
    [expired] = [e for e in await c.store.load(stream) if e.type == EXPIRED]
    assert expired.recorded_at >= endpoint.lease_expires_at, "expired before its lease ended"
    assert enqueues.sent[0] == ("expire_runtime_endpoint_lease", None)
    [resent] = enqueues.delays("expire_runtime_endpoint_lease")  # the early delivery came back once, delayed
    assert 0 < resent <= 8_001

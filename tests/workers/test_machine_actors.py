"""The challenge-expiry actor: directly, then end to end (relay -> real broker -> worker) on PostgreSQL and RabbitMQ."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import dramatiq
import pytest
from dramatiq.brokers.stub import StubBroker

from app.container import Container
from app.services.machines import MachinesService
from app.settings import Settings
from domain.shared.context import CommandContext
from tests.workers.harness import Enqueues, broker_url_for, eventually, relay_through, worker_on
from workers import runtime

dramatiq.set_broker(StubBroker())  # actors bind at import; never let dramatiq pick a default broker here
from workers.machines import expire_challenge_job, expire_identity_challenge  # noqa: E402

KEY = "A" * 43 + "="
EXPIRED = "machines:Machine.IdentityChallengeExpired"


@pytest.fixture
async def c(fresh_database: str) -> AsyncIterator[Container]:
    container = await Container.open(Settings(), fresh_database, min_size=1, max_size=4)
    # Challenges that are already due, so the actor acts at once.
    container.machines = MachinesService(container.repo, challenge_ttl_seconds=0)
    try:
        yield container
    finally:
        await container.close()
        await runtime.close()
        runtime.use_database(None)


async def issue(c: Container) -> tuple[uuid.UUID, uuid.UUID]:
    ctx = CommandContext(at=datetime.now(UTC), actor="test", account_id=uuid.uuid4())
    machine = (await c.machines.register(ctx, name="m", description="", public_key=KEY, labels={})).machine
    out = await c.machines.issue_challenge(ctx, machine.id)
    assert out.machine.challenge is not None
    return machine.id, out.machine.challenge["id"]


async def expired_events(c: Container, machine_id: uuid.UUID) -> int:
    return sum(1 for e in await c.store.load(machine_id) if e.type == EXPIRED)


async def test_actor_expires_once_even_when_redelivered(c: Container, fresh_database: str) -> None:
    runtime.use_database(fresh_database)
    machine_id, challenge_id = await issue(c)
    event_id = str(uuid.uuid4())
    for _ in range(3):  # redelivery is normal; the effect happens once
        await expire_challenge_job(str(machine_id), str(challenge_id), event_id)
    assert await expired_events(c, machine_id) == 1
    machine = await c.machines.get(CommandContext(at=datetime.now(UTC), actor="t", is_admin=True), machine_id)
    assert machine.challenge is None


async def test_actor_ignores_a_challenge_that_is_no_longer_open(c: Container, fresh_database: str) -> None:
    runtime.use_database(fresh_database)
    machine_id, _ = await issue(c)
    await expire_challenge_job(str(machine_id), str(uuid.uuid4()), str(uuid.uuid4()))
    await expire_challenge_job(str(uuid.uuid4()), str(uuid.uuid4()), str(uuid.uuid4()))  # unknown machine
    assert await expired_events(c, machine_id) == 0


async def _end_to_end(c: Container, dsn: str, broker_url: str) -> None:
    async with worker_on(broker_url, dsn, [expire_identity_challenge]) as (broker, worker):
        machine_id, _ = await issue(c)
        await relay_through(c, broker, machine_id)  # the real relay enqueues from the log
        worker.start()
        assert await eventually(lambda: _has_expired(c, machine_id))
        assert await expired_events(c, machine_id) == 1


async def _has_expired(c: Container, machine_id: uuid.UUID) -> bool:
    return await expired_events(c, machine_id) > 0


@pytest.mark.parametrize("kind", ["postgresql", "rabbitmq"])
async def test_relay_to_worker_through_a_real_broker(c: Container, fresh_database: str, kind: str) -> None:
    await _end_to_end(c, fresh_database, broker_url_for(kind, fresh_database))


@pytest.mark.parametrize("kind", ["postgresql", "rabbitmq"])
async def test_a_timer_delivered_early_is_resent_delayed_through_the_broker(
    c: Container, fresh_database: str, kind: str
) -> None:
    c.machines = MachinesService(c.repo, challenge_ttl_seconds=8)  # room for a slow worker start
    async with worker_on(broker_url_for(kind, fresh_database), fresh_database,
                         [expire_identity_challenge], private_queues=True) as (broker, worker):
        enqueues = Enqueues()
        broker.add_middleware(enqueues)
        machine_id, challenge_id = await issue(c)
        machine = await c.machines.get(CommandContext(at=datetime.now(UTC), actor="t", is_admin=True), machine_id)
        assert machine.challenge is not None
        deadline = machine.challenge["expires_at"]
        # Due now, eight seconds before the challenge expires (as after clock skew between relay and worker).
        expire_identity_challenge.send(str(machine_id), str(challenge_id), str(uuid.uuid4()))
        worker.start()
        assert await eventually(lambda: _has_expired(c, machine_id), 40)
    [expired] = [e for e in await c.store.load(machine_id) if e.type == EXPIRED]
    assert expired.recorded_at >= deadline, "expired before the challenge's deadline"
    assert enqueues.sent[0] == ("expire_identity_challenge", None)
    [resent] = enqueues.delays("expire_identity_challenge")  # the early delivery came back once, delayed
    assert 0 < resent <= 8_001


async def test_the_expiry_carries_the_challenge_requests_correlation_id(c: Container, fresh_database: str) -> None:
    """A message without correlation_id (sent before the relay added it) takes the triggering event's."""
    runtime.use_database(fresh_database)
    ctx = CommandContext(at=datetime.now(UTC), actor="test", account_id=uuid.uuid4(), request_id="req-challenge")
    machine = (await c.machines.register(ctx, name="m", description="", public_key=KEY, labels={})).machine
    challenge = (await c.machines.issue_challenge(ctx, machine.id)).machine.challenge
    assert challenge is not None
    [issued] = [e for e in await c.store.load(machine.id) if e.type == "machines:Machine.IdentityChallengeIssued"]
    await expire_challenge_job(str(machine.id), str(challenge["id"]), str(issued.event_id))
    [expired] = [e for e in await c.store.load(machine.id) if e.type == EXPIRED]
    assert expired.metadata["correlationId"] == "req-challenge"
    assert expired.metadata["causationId"] == str(issued.event_id)

"""The challenge-expiry actor: directly, then end to end (relay -> real broker -> worker) on PostgreSQL and RabbitMQ."""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import dramatiq
import pytest
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware.asyncio import AsyncIO

from app.container import Container
from app.services.machines import MachinesService
from app.settings import Settings
from domain.shared.context import CommandContext
from projections.relay import RelayProjection
from projections.runner import ProjectionRunner
from workers import runtime

dramatiq.set_broker(StubBroker())  # actors bind at import; never let dramatiq pick a default broker here
from workers.broker import make_broker  # noqa: E402
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


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


async def _end_to_end(c: Container, dsn: str, broker_url: str) -> None:
    broker = make_broker(broker_url)
    broker.add_middleware(AsyncIO())
    broker.add_middleware(runtime.CloseContainer())
    previous = expire_identity_challenge.broker
    expire_identity_challenge.broker = broker
    broker.declare_actor(expire_identity_challenge)
    runtime.use_database(dsn)
    worker = dramatiq.Worker(broker, worker_threads=2, worker_timeout=100)
    try:
        broker.flush_all()
        machine_id, _ = await issue(c)
        relay = ProjectionRunner(c.pool, c.store, [])
        assert await relay.catch_up(RelayProjection(broker)) >= 2  # the real relay enqueues from the log
        worker.start()
        for _ in range(200):
            if await expired_events(c, machine_id):
                break
            await asyncio.sleep(0.05)
        assert await expired_events(c, machine_id) == 1
    finally:
        worker.stop()
        broker.close()
        expire_identity_challenge.broker = previous


async def test_relay_to_worker_through_the_postgresql_broker(c: Container, fresh_database: str) -> None:
    await _end_to_end(c, fresh_database, fresh_database)


async def test_relay_to_worker_through_rabbitmq(c: Container, fresh_database: str) -> None:
    if not _reachable("127.0.0.1", 5672):
        pytest.skip("RabbitMQ is not running on 127.0.0.1:5672")
    await _end_to_end(c, fresh_database, "amqp://guest:guest@127.0.0.1:5672/")

"""A real Dramatiq worker on a real broker for end-to-end actor tests (relay -> broker -> worker)."""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import dramatiq
import pytest
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.common import dq_name, xq_name
from dramatiq.middleware import Middleware

from app.container import Container
from app.settings import Settings
from projections import checkpoints
from projections.relay import RelayProjection
from projections.runner import ProjectionRunner
from workers import runtime
from workers.broker import make_broker

RABBITMQ_URL = "amqp://guest:guest@127.0.0.1:5672/"


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def require_rabbitmq() -> str:
    """RabbitMQ's URL; when it is not running the test is skipped on a laptop but fails under CI=true,
    where `.ci/run` has started it, so a broken broker can never pass CI as a row of skips."""
    if not _reachable("127.0.0.1", 5672):
        reason = "RabbitMQ is not running on 127.0.0.1:5672"
        if os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}:
            pytest.fail(f"{reason}, and CI=true requires it (.ci/run starts it)", pytrace=False)
        pytest.skip(reason)
    return RABBITMQ_URL


def broker_url_for(kind: str, dsn: str) -> str:
    """The PostgreSQL broker on the test database, or RabbitMQ (see require_rabbitmq)."""
    if kind == "postgresql":
        return dsn
    return require_rabbitmq()


@asynccontextmanager
async def worker_on(broker_url: str, dsn: str, actors: list[Any], *, private_queues: bool = False,
                    settings: Settings | None = None) -> AsyncIterator[tuple[dramatiq.Broker, dramatiq.Worker]]:
    """Binds `actors` to a fresh broker for `broker_url` and yields it with a worker not yet started
    (so a test can enqueue first); stops both afterwards.

    `private_queues` moves the actors to queues of their own for the test (deleted afterwards): RabbitMQ is
    shared by everything on this host, and another run's worker or flush on `machines` would take our
    messages. Only for tests that send directly: the relay addresses the actors' real queues.
    `settings` replace the environment's for the actors' container and outbound client.
    """
    broker = make_broker(broker_url)
    runtime.add_worker_middleware(broker)
    previous = [(a.broker, a.queue_name) for a in actors]
    for a in actors:
        a.broker = broker
        if private_queues:
            a.queue_name = f"{a.queue_name}_{uuid.uuid4().hex[:12]}"
        broker.declare_actor(a)
    runtime.use_database(dsn, settings)
    broker.flush_all()
    worker = dramatiq.Worker(broker, worker_threads=2, worker_timeout=100)
    try:
        yield broker, worker
    finally:
        worker.stop()
        if private_queues and isinstance(broker, RabbitmqBroker):
            for a in actors:
                for name in (a.queue_name, dq_name(a.queue_name), xq_name(a.queue_name)):
                    broker.channel.queue_delete(name)
        broker.close()
        for a, (b, queue_name) in zip(actors, previous, strict=True):
            a.broker, a.queue_name = b, queue_name


class Enqueues(Middleware):
    """Records every message the broker accepts, as (actor name, delay in ms or None)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, int | None]] = []

    def after_enqueue(self, broker: dramatiq.Broker, message: dramatiq.Message[Any], delay: int | None) -> None:
        self.sent.append((message.actor_name, delay))

    def delays(self, actor_name: str) -> list[int]:
        return [d for name, d in self.sent if name == actor_name and d]


async def eventually(check: Callable[[], Awaitable[bool]], seconds: float = 10.0) -> bool:
    for _ in range(int(seconds / 0.05)):
        if await check():
            return True
        await asyncio.sleep(0.05)
    return await check()


async def relay_through(c: Container, broker: dramatiq.Broker, stream_id: uuid.UUID, seconds: float = 10.0) -> None:
    """Run the real relay until it has handed over `stream_id`'s latest event. One catch-up is not enough:
    readers stop below the oldest transaction still open anywhere on the server (another test's, say)."""
    target = (await c.store.load(stream_id))[-1].log_position
    runner, relay = ProjectionRunner(c.pool, c.store, []), RelayProjection(broker)

    async def reached() -> bool:
        await runner.catch_up(relay)
        async with c.pool.acquire() as conn:
            position = await checkpoints.position(conn, relay.name)
        return position is not None and position >= target

    assert await eventually(reached, seconds), f"the relay did not reach {target}"

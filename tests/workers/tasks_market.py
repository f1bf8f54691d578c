"""A small market for task-worker tests: real sellers (machine, capability node, endpoint on a stub seller),
a buyer, the catalogue and seller_stats projections caught up, and tasks driven to ExecutionRequested."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import dramatiq

from app.container import Container
from domain.shared.context import CommandContext
from domain.tasks.aggregate import FINISHED, Task
from domain.tasks.commands import CHEAPEST, Constraints
from projections.catalogue import CatalogueProjection
from projections.relay import RelayProjection
from projections.runner import ProjectionRunner
from projections.seller_stats import CooldownPolicy, SellerStatsProjection
from tests.journeys import all_visible, operational_machine
from tests.workers.harness import eventually

CAPABILITY = "summarise"
TOKEN = "seller-secret-token"
POLICY = CooldownPolicy(failures=3, cooldown_s=600, window=100)


def ctx(account_id: uuid.UUID | None = None) -> CommandContext:
    return CommandContext(at=datetime.now(UTC), actor="test", account_id=account_id)


async def seller(c: Container, url: str, price: int, *, token: str | None = TOKEN,
                 capability: str = CAPABILITY) -> uuid.UUID:
    """An operational seller machine listing `capability` at `price` USD cents, served at `url`."""
    account = uuid.uuid4()
    machine = await operational_machine(c, ctx(account))
    data = {"name": capability, "price": {"amount": price, "currency": "USD"}, "providerKey": "stub",
            "inputSchema": {"type": "object"}}
    await c.graph.create_node(ctx(account), machine.id, node_type="capability", label=capability, status="active",
                              data=data)
    await c.runtime.put_manual(ctx(account), machine.id, "stub", url=url, auth_token=token, metadata={})
    return machine.id


async def buyer(c: Container) -> tuple[uuid.UUID, uuid.UUID]:
    """(account id, machine id)."""
    account = uuid.uuid4()
    return account, (await operational_machine(c, ctx(account))).id


async def read_models(c: Container) -> None:
    """The catalogue and seller_stats as of now (discovery and resolve read them)."""
    await all_visible(c)
    runner = ProjectionRunner(c.pool, c.store, [])
    await runner.catch_up(CatalogueProjection())
    await runner.catch_up(SellerStatsProjection(POLICY))


async def resolved(c: Container, buyer_ids: tuple[uuid.UUID, uuid.UUID], input: Any = None, *,
                   fallbacks: int = 2, timeout_ms: int = 5_000, execute: bool = True) -> Task:
    """A task discovered and resolved (cheapest first) by the service, execution requested unless told not."""
    account, machine = buyer_ids
    await read_models(c)
    constraints = Constraints(strategy=CHEAPEST, fallbacks=fallbacks, timeout_ms=timeout_ms)
    task = (await c.tasks.submit(ctx(account), machine, capability=CAPABILITY,
                                 input={"text": "hello"} if input is None else input, constraints=constraints,
                                 auto=False)).task
    await c.tasks.discover(ctx(account), machine, task.id)
    await c.tasks.resolve(ctx(account), machine, task.id)
    if execute:
        await c.tasks.request_execution(ctx(account), machine, task.id)
    return await c.tasks.load(task.id)


async def relay_until_finished(c: Container, broker: dramatiq.Broker, task_id: uuid.UUID,
                               seconds: float = 30.0) -> Task:
    """Run the real relay (and the catalogue, which auto discovery reads) until the task has finished."""
    runner, relay = ProjectionRunner(c.pool, c.store, []), RelayProjection(broker)

    async def finished() -> bool:
        await runner.catch_up(relay)
        await runner.catch_up(CatalogueProjection())
        return (await c.tasks.load(task_id)).status in FINISHED

    assert await eventually(finished, seconds), f"task {task_id} did not finish: {await c.tasks.load(task_id)}"
    return await c.tasks.load(task_id)


async def events(c: Container, task_id: uuid.UUID, kind: str) -> list[dict[str, Any]]:
    return [e.data for e in await c.store.load(task_id) if e.type == f"tasks:Task.{kind}"]

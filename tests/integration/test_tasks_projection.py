"""The tasks read models through the real services: rows as the API reads them, any batch size, and a rebuild that
reproduces them exactly."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from app.container import Container
from domain.shared.context import CommandContext
from domain.tasks.commands import Constraints, RunResult
from projections.catalogue import CatalogueProjection
from projections.rebuild import rebuild
from projections.runner import ProjectionRunner
from projections.tasks import TasksProjection
from projections.tasks_reader import get_outcome, get_task, list_routes, list_runs
from tests.journeys import all_visible, operational_machine

T0 = datetime(2026, 1, 1, tzinfo=UTC)
SCHEMA = {"type": "object", "required": ["text"]}


class Clock:
    def __init__(self, account_id: uuid.UUID) -> None:
        self.account_id, self.i = account_id, 0

    def __call__(self, **kw: Any) -> CommandContext:
        self.i += 1
        return CommandContext(at=T0 + timedelta(seconds=self.i), actor="test", account_id=self.account_id, **kw)


async def catch_up(c: Container, projection: Any, batch_size: int = 500) -> None:
    await all_visible(c)
    await ProjectionRunner(c.pool, c.store, [], batch_size=batch_size).catch_up(projection)


async def snapshot(pool: asyncpg.Pool) -> list[list[tuple[Any, ...]]]:
    keys = {"task_outcomes_view": "task_id"}
    return [[tuple(r) for r in await pool.fetch(f"SELECT * FROM {t} ORDER BY {keys.get(t, 'id')}")]
            for t in TasksProjection.tables]


async def _market(c: Container, clock: Clock) -> tuple[uuid.UUID, list[uuid.UUID]]:
    """Two sellers of 'translate' (prices 100 and 200) and a buyer; returns (buyer, sellers)."""
    sellers = []
    for price in (100, 200):
        mid = (await operational_machine(c, clock())).id
        data = {"name": "translate", "price": {"amount": price, "currency": "USD"}, "providerKey": "p1",
                "inputSchema": SCHEMA}
        await c.graph.create_node(clock(), mid, node_type="capability", label="t", status="active", data=data)
        await c.runtime.put_manual(clock(), mid, "p1", url="https://seller.example/run", auth_token="s3cr3t-token",
                                   metadata={})
        sellers.append(mid)
    await catch_up(c, CatalogueProjection())
    return (await operational_machine(c, clock())).id, sellers


async def _drive(c: Container, clock: Clock, buyer: uuid.UUID, results: list[tuple[int, Any]]) -> uuid.UUID:
    """A task submitted, discovered, resolved, executed through `results` (one per run)."""
    task = (await c.tasks.submit(clock(), buyer, capability="translate", input={"text": "hi"},
                                 constraints=Constraints(strategy="cheapest", fallbacks=1), auto=False)).task
    await c.tasks.discover(clock(), buyer, task.id)
    await c.tasks.resolve(clock(), buyer, task.id)
    await c.tasks.request_execution(clock(), buyer, task.id)
    for status, body in results:
        _, run = await c.tasks.next_run(clock(), task.id)
        assert run is not None
        await c.tasks.finish_run(clock(), task.id, RunResult(run_id=run["run_id"], http_status=status, latency_ms=7,
                                                             error_class=None, response_digest="d", body=body))
    return task.id


@pytest.mark.parametrize("batch_size", [1, 3, 500])
async def test_rows_and_rebuild(fresh_container: Container, batch_size: int) -> None:
    c = fresh_container
    clock = Clock(uuid.uuid4())
    buyer, (cheap, dear) = await _market(c, clock)
    ok = await _drive(c, clock, buyer, [(503, {"busy": True}), (200, {"out": "hola"})])
    refused = await _drive(c, clock, buyer, [(422, {"error": "bad"})])
    cancelled = (await c.tasks.submit(clock(), buyer, capability="translate", input=None,
                                      constraints=Constraints(), auto=False)).task.id
    await c.tasks.cancel(clock(), buyer, cancelled, "no longer needed")
    await catch_up(c, TasksProjection(), batch_size)

    task = await get_task(c.pool, buyer, ok)
    assert task is not None and task["status"] == "succeeded" and task["candidates_count"] == 2
    assert task["runs_count"] == 2 and task["outcome_code"] is None and task["version"] == 9
    outcome = await get_outcome(c.pool, ok)
    assert outcome is not None and outcome["output"] == {"out": "hola"} and outcome["http_status"] == 200
    runs = await list_runs(c.pool, buyer, role="buyer", task_id=ok, status=None, capability=None, after=None,
                           limit=10)
    assert [(r["attempt"], r["status"], r["seller_machine_id"]) for r in runs] == [(1, "failed", cheap),
                                                                                   (2, "succeeded", dear)]
    refused_outcome = await get_outcome(c.pool, refused)
    assert refused_outcome is not None and refused_outcome["code"] == "UPSTREAM_REJECTED"
    assert refused_outcome["output"] == {"error": "bad"}
    gone = await get_outcome(c.pool, cancelled)
    assert gone is not None and gone["status"] == "cancelled" and gone["detail"] == "no longer needed"
    routes = await list_routes(c.pool, buyer, task_id=None, capability="translate", after=None, limit=10)
    assert len(routes) == 2 and [s["seller_machine_id"] for s in routes[0]["steps"]] == [str(cheap), str(dear)]
    assert routes[0]["ranked"][0]["reason"].startswith("place 1 of 2 by cheapest")

    before = await snapshot(c.pool)
    text = str(before)
    assert "s3cr3t-token" not in text and "seller.example" not in text  # endpoint secrets never reach these rows
    assert await rebuild(c.pool, c.store, TasksProjection(), batch_size=7) > 0
    assert await snapshot(c.pool) == before

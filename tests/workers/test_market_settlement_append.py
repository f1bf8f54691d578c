"""Settlement's one append (the first run's result with the order's execution) and its way back to the general
path when anything else moved the task first."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from app.container import Container
from app.outbound.stub_seller import StubSeller
from domain.shared.context import CommandContext
from domain.tasks.commands import RunResult
from tests.workers.orders_market import balances, funded_buyer, order_events, paid_order, seller, verified


def worker_ctx(key: str) -> CommandContext:
    return CommandContext(at=datetime.now(UTC), actor="worker:settle_order_payment", is_admin=True,
                          causation_id=str(uuid.uuid4()), idempotency_key=f"test:{key}")


def ok(run_id: uuid.UUID) -> RunResult:
    return RunResult(run_id=run_id, http_status=200, latency_ms=5, error_class=None, response_digest=None,
                     body={"ok": True})


async def test_the_run_result_and_the_execution_are_one_append(c: Container, fresh_database: str,
                                                               stub: StubSeller) -> None:
    await seller(c, stub.url, 300)
    b = await funded_buyer(c, 300)
    order = await paid_order(c, b)
    held = await c.order_settlement.hold(worker_ctx("hold"), order.id)
    assert held.first is not None and held.first[1] is not None
    task_id, run_id = held.first[0].id, held.first[1]["run_id"]
    done = await c.order_settlement.finish_first_run(worker_ctx("finish"), held, ok(run_id))
    assert done is not None and done.order.status == "executed"
    task_events = [e for e in await c.store.load(task_id) if e.type.endswith(("RunFinished", "Succeeded"))]
    executed = [e for e in await c.store.load(order.id) if e.type.endswith("Executed")]
    assert len(task_events) == 2 and len(executed) == 1
    assert {e.tx_id for e in [*task_events, *executed]} == {executed[0].tx_id}  # one transaction
    await verified(fresh_database)


async def test_a_run_finished_elsewhere_first_loses_the_race_and_the_general_way_records_it_once(
    c: Container, fresh_database: str, stub: StubSeller
) -> None:
    await seller(c, stub.url, 300)
    b = await funded_buyer(c, 300)
    order = await paid_order(c, b)
    held = await c.order_settlement.hold(worker_ctx("hold"), order.id)
    assert held.first is not None and held.first[1] is not None
    task_id, run_id = held.first[0].id, held.first[1]["run_id"]
    # Another worker (a redelivered message) finished the same run first: the task's version moved on.
    await c.tasks.finish_run(worker_ctx("other"), task_id, ok(run_id))
    assert await c.order_settlement.finish_first_run(worker_ctx("finish"), held, ok(run_id)) is None
    assert (await c.orders.load(order.id)).status == "executing"  # nothing of the losing append was recorded
    outcome = await c.order_settlement.record_execution(worker_ctx("executed"), order.id)
    assert outcome is not None and outcome.order.status == "executed"
    assert (await order_events(c, order.id)).count("Executed") == 1
    assert [e.type for e in await c.store.load(task_id)].count("tasks:Task.RunFinished") == 1
    assert (await balances(c))[f"escrow:{b.account}"] == 300
    await verified(fresh_database)

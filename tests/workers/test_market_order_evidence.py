"""What an order keeps of its execution, through a real broker, worker and stub seller: `market.order.executed`
carries the task's run, its outcome and the result digest the run recorded; a dispute attaches the task's runs as
evidence; the order's view has a timeline of its events by their public names."""

from __future__ import annotations

import dramatiq
from dramatiq.brokers.stub import StubBroker

from app.api.order_views import order_of
from app.container import Container
from app.outbound.stub_seller import StubSeller
from domain.shared.context import CommandContext
from domain.tasks.aggregate import Task
from tests.workers.harness import broker_url_for, worker_on
from tests.workers.orders_market import ADMIN, funded_buyer, paid_order, relay_until, seller, verified
from tests.workers.tasks_market import ctx

dramatiq.set_broker(StubBroker())  # actors bind at import; never let dramatiq pick a default broker here
from tests.workers.test_market_orders import ACTORS, PRIVATE_OK  # noqa: E402


async def test_executed_carries_the_run_outcome_and_digest_and_a_dispute_attaches_the_runs(
    c: Container, fresh_database: str, stub: StubSeller
) -> None:
    await seller(c, stub.url, 1000)
    b = await funded_buyer(c, 1000)
    order = await paid_order(c, b, window=60)
    async with worker_on(broker_url_for("postgresql", fresh_database), fresh_database, ACTORS,
                         settings=PRIVATE_OK) as (broker, worker):
        worker.start()
        order = await relay_until(c, broker, order.id, {"executed"})
    task = await c.repo.get(Task, order.task_id, what="task")
    assert task.outcome is not None and task.runs, task.outcome
    run = next(r for r in task.runs if r["run_id"] == task.outcome["run_id"])
    [executed] = [e for e in await c.store.load(order.id) if e.type == "market:Order.Executed"]
    assert executed.data["run_id"] == str(run["run_id"]) and executed.data["succeeded"] is True
    assert executed.data["result_digest"] == run["response_digest"] and len(run["response_digest"]) == 64
    assert executed.data["http_status"] == task.outcome["http_status"] == 200

    disputed = (await c.orders.dispute(ctx(b.account), order.id, "the output is wrong")).order
    assert disputed.dispute is not None
    assert disputed.dispute["evidence_run_ids"] == [r["run_id"] for r in task.runs]
    admin = CommandContext(at=ctx().at, actor=ADMIN, is_admin=True)
    settled = (await c.orders.resolve_dispute(admin, order.id, "refund", None, "refunded after review")).order
    assert (settled.status, settled.escrow) == ("settled", "refunded")

    view = order_of(settled, await c.store.load(order.id))
    assert [t.type for t in view.timeline] == [
        "market.order.created", "market.payment.intent-created", "market.payment.proof-recorded",
        "market.payment.escrow-held", "market.order.executed",
        "market.order.disputed", "market.dispute.resolved", "market.payment.refunded"]
    assert [t.version for t in view.timeline] == list(range(1, len(view.timeline) + 1))
    assert view.dispute is not None and view.dispute.evidence_run_ids == [r["run_id"] for r in task.runs]
    await verified(fresh_database)

"""The orders read model folds an order's events to the status, payment and escrow its aggregate has, in any
batch size, and a rebuild reproduces it exactly."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from app.container import Container
from app.outbound.stub_seller import StubSeller
from domain.market.order import Order
from domain.market.order_commands import Execution
from domain.shared.context import CommandContext
from projections.orders import OrdersProjection
from projections.rebuild import rebuild
from projections.runner import ProjectionRunner
from tests.journeys import all_visible
from tests.workers.orders_market import funded_buyer, paid_order, seller
from tests.workers.tasks_market import ctx

OK = Execution(run_id=None, succeeded=True, code=None, http_status=200, result_digest="0" * 64, receipt=None,
               receipt_verified=False)


def worker() -> CommandContext:
    return CommandContext(at=datetime.now(UTC), actor="worker:test", is_admin=True)


async def executed(c: Container, order: Order) -> Order:
    held = (await c.order_settlement.hold(worker(), order.id)).order
    held.record_execution(OK, datetime.now(UTC))
    await c.repo.save(held, worker())
    return await c.orders.load(order.id)


async def rows(c: Container) -> dict[uuid.UUID, dict[str, Any]]:
    return {r["id"]: dict(r) for r in await c.pool.fetch("SELECT * FROM orders_view")}


@pytest.mark.parametrize("batch_size", [1, 3, 500])
async def test_rows_match_each_orders_aggregate_and_a_rebuild_reproduces_them(
    fresh_container: Container, batch_size: int
) -> None:
    c = fresh_container
    with StubSeller() as stub:
        await seller(c, stub.url, 500)
    b = await funded_buyer(c, 1500)
    orders = [await paid_order(c, b) for _ in range(4)]
    settled = await executed(c, orders[0])
    await c.orders.confirm(ctx(b.account), settled.id)
    split = await executed(c, orders[1])
    await c.orders.dispute(ctx(b.account), split.id, "half done")
    await c.orders.resolve_dispute(worker(), split.id, "split", 200, None)
    await c.order_settlement.hold(worker(), orders[2].id)  # the balance covers three: this one is executing
    await c.order_settlement.hold(worker(), orders[3].id)  # INSUFFICIENT_FUNDS
    placed = (await c.orders.place(ctx(b.account), b.machine.id, listing_id=None, capability="summarise",
                                   constraints=None, input={"text": "x"}, confirm_window_s=60)).order
    await c.orders.cancel(ctx(b.account), placed.id, "no")
    await all_visible(c)
    await ProjectionRunner(c.pool, c.store, [], batch_size=batch_size).catch_up(OrdersProjection())
    seen = await rows(c)
    assert len(seen) == 5
    for oid, row in seen.items():
        order = await c.orders.load(oid)
        assert (row["status"], row["payment_status"], row["escrow_status"], row["version"]) == (
            order.status, order.payment, order.escrow, order.version), oid
        assert (row["buyer_account_id"], row["seller_machine_id"], row["amount"], row["fee"]) == (
            order.account_id, order.seller_machine_id, order.price.amount, order.fee.amount)
    assert sorted(r["status"] for r in seen.values()) == ["cancelled", "executing", "payment-failed", "settled",
                                                          "settled"]
    assert await rebuild(c.pool, c.store, OrdersProjection(), batch_size=2) > 0
    assert await rows(c) == seen

"""Market orders through a real broker, a real worker and a real stub seller: the full lifecycle with balances,
refunds on failure, auto-confirm, races, redelivery, and 64 concurrent holds on one buyer's balance."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import dramatiq
import pytest
from dramatiq.brokers.stub import StubBroker

from app.container import Container
from app.outbound.stub_seller import StubSeller
from app.services.orders import OrdersService
from app.settings import Settings
from domain.market.order_commands import Execution
from domain.market.order_errors import ConfirmWindowClosed, OrderStateConflict
from domain.shared.context import CommandContext
from tests.conftest import TEST_SECRET_KEY
from tests.factories import MachineKeyFactory
from tests.workers.harness import broker_url_for, eventually, worker_on
from tests.workers.orders_market import (
    balances,
    funded_buyer,
    order_events,
    paid_order,
    relay_until,
    seed_of,
    seller,
    verified,
)
from tests.workers.tasks_market import CAPABILITY, ctx, read_models

dramatiq.set_broker(StubBroker())  # actors bind at import; never let dramatiq pick a default broker here
from workers.market import (  # noqa: E402
    auto_confirm_job,
    auto_confirm_order,
    expire_payment_intent,
    settle_order_payment,
    settle_payment_job,
)
from workers.tasks import execute_task  # noqa: E402

ACTORS = [settle_order_payment, auto_confirm_order, expire_payment_intent, execute_task]
PRIVATE_OK = Settings(secret_key=TEST_SECRET_KEY, allow_private_endpoints=True)


@pytest.mark.parametrize("kind", ["postgresql", "rabbitmq"])
async def test_full_lifecycle_create_pay_hold_execute_confirm_release(
    c: Container, fresh_database: str, stub: StubSeller, kind: str
) -> None:
    s = await seller(c, stub.url, 1000)
    b = await funded_buyer(c, 5000)
    order = await paid_order(c, b)
    async with worker_on(broker_url_for(kind, fresh_database), fresh_database, ACTORS, settings=PRIVATE_OK,
                         private_queues=kind == "rabbitmq") as (broker, worker):
        worker.start()
        if kind == "rabbitmq":  # shared broker: a queue of our own, the message sent directly
            settle_order_payment.send(str(order.id), str(uuid.uuid4()))

            async def executed() -> bool:
                return (await c.orders.load(order.id)).status == "executed"

            assert await eventually(executed, 30)
            order = await c.orders.load(order.id)
        else:
            order = await relay_until(c, broker, order.id, {"executed"})
    assert order.execution is not None and order.execution["succeeded"] and order.execution["result_digest"]
    assert order.execution["receipt"] and order.execution["receipt_verified"] is True
    assert stub.stats.total == 1
    mid = await balances(c)
    assert (mid[f"available:{b.account}"], mid[f"escrow:{b.account}"]) == (4000, 1000)
    done = (await c.orders.confirm(ctx(b.account), order.id)).order
    assert (done.status, done.escrow) == ("settled", "released")
    after = await balances(c)
    assert after[f"available:{b.account}"] == 4000 and after[f"escrow:{b.account}"] == 0
    assert after[f"available:{s.account}"] == 975 and after["fees"] == 25 and after["external"] == -5000
    assert await order_events(c, order.id) == ["Placed", "PaymentIntentCreated", "ProofRecorded", "EscrowHeld",
                                               "Executed", "Confirmed", "Released"]
    await verified(fresh_database)


async def test_failed_execution_refunds_automatically(c: Container, fresh_database: str, stub: StubSeller) -> None:
    await seller(c, stub.url, 700, path="status/503", receipts=False)
    b = await funded_buyer(c, 1000)
    order = await paid_order(c, b)
    async with worker_on(fresh_database, fresh_database, ACTORS, settings=PRIVATE_OK) as (broker, worker):
        worker.start()
        order = await relay_until(c, broker, order.id, {"execution-failed"})
    assert order.escrow == "refunded" and order.execution is not None and not order.execution["succeeded"]
    totals = await balances(c)
    assert (totals[f"available:{b.account}"], totals[f"escrow:{b.account}"], totals["fees"]) == (1000, 0, 0)
    await verified(fresh_database)


async def test_auto_release_after_a_one_second_window(c: Container, fresh_database: str, stub: StubSeller) -> None:
    s = await seller(c, stub.url, 400)
    b = await funded_buyer(c, 400)
    order = await paid_order(c, b, window=1)
    async with worker_on(fresh_database, fresh_database, ACTORS, settings=PRIVATE_OK) as (broker, worker):
        worker.start()
        order = await relay_until(c, broker, order.id, {"settled"}, seconds=30)
    assert order.confirmed_auto is True and order.escrow == "released"
    totals = await balances(c)
    assert totals[f"available:{s.account}"] == 390 and totals["fees"] == 10 and totals[f"available:{b.account}"] == 0
    # The buyer is too late now, and a redelivered timer changes nothing.
    with pytest.raises(OrderStateConflict):
        await c.orders.confirm(ctx(b.account), order.id)
    before = await order_events(c, order.id)
    await auto_confirm_job(str(order.id), str(uuid.uuid4()))
    assert await order_events(c, order.id) == before


async def test_redelivered_settlement_messages_change_nothing_twice(
    c: Container, fresh_database: str, stub: StubSeller
) -> None:
    await seller(c, stub.url, 300)
    b = await funded_buyer(c, 300)
    order = await paid_order(c, b)
    async with worker_on(fresh_database, fresh_database, ACTORS, settings=PRIVATE_OK) as (broker, worker):
        worker.start()
        await relay_until(c, broker, order.id, {"executed"})
        proof = next(e for e in await c.store.load(order.id) if e.type == "market:Order.ProofRecorded")
        count = len(await c.store.load(order.id))
        before = await balances(c)
    for _ in range(3):  # the same message again, as a broker redelivers it
        await settle_payment_job(str(order.id), str(proof.event_id))
    assert len(await c.store.load(order.id)) == count and await balances(c) == before
    assert stub.stats.total == 1
    await verified(fresh_database)


async def test_confirm_dispute_and_auto_release_racing_exactly_one_wins(c: Container, fresh_database: str,
                                                                         stub: StubSeller) -> None:
    s = await seller(c, stub.url, 1000)
    b = await funded_buyer(c, 1000)
    order = await paid_order(c, b, window=60)
    settle = c.order_settlement
    await settle.hold(_worker(), order.id)
    # The execution, recorded directly (the broker tests above run it for real).
    order = await c.orders.load(order.id)
    ok = Execution(run_id=None, succeeded=True, code=None, http_status=200, result_digest="0" * 64, receipt=None,
                   receipt_verified=False)
    order.record_execution(ok, datetime.now(UTC))
    await c.repo.save(order, _worker())
    order = await c.orders.load(order.id)
    assert order.confirm_by is not None
    due = order.confirm_by
    buyer_at = due - timedelta(milliseconds=1)

    async def confirm() -> str:
        return _outcome(await _try(c.orders.confirm(_as(b.account, buyer_at), order.id)))

    async def dispute() -> str:
        return _outcome(await _try(c.orders.dispute(_as(b.account, buyer_at), order.id, "bad")))

    async def timer() -> str:
        return _outcome(await _try(settle.auto_confirm(_worker(due), order.id)))

    results = await asyncio.gather(confirm(), dispute(), timer(), confirm(), dispute())
    kinds = await order_events(c, order.id)
    winners = [k for k in kinds if k in ("Confirmed", "Disputed")]
    assert len(winners) == 1, (results, kinds)
    assert results.count("won") == 1, results
    assert all(r in ("won", "409", "noop") for r in results), results
    totals = await balances(c)
    assert totals[f"escrow:{b.account}"] + totals[f"available:{s.account}"] + totals["fees"] == 1000
    await verified(fresh_database)


async def test_64_concurrent_orders_on_a_balance_that_covers_10(c: Container, fresh_database: str,
                                                                stub: StubSeller) -> None:
    await seller(c, stub.url, 100)
    b = await funded_buyer(c, 1000)
    await read_models(c)
    orders = [await paid_order(c, b, catch_up=False) for _ in range(64)]
    settle = c.order_settlement
    results = await asyncio.gather(*(settle.hold(_worker(), o.id) for o in orders))
    statuses = [r.order.status for r in results]
    assert statuses.count("executing") == 10 and statuses.count("payment-failed") == 54, statuses
    failures = {r.order.failure["code"] for r in results if r.order.failure}
    assert failures == {"INSUFFICIENT_FUNDS"}
    totals = await balances(c)
    assert (totals[f"available:{b.account}"], totals[f"escrow:{b.account}"]) == (0, 1000)
    # Failed payments cancelled their tasks (nothing will execute without escrow).
    cancelled = [await c.tasks.load(r.order.task_id) for r in results if r.order.status == "payment-failed"]
    assert {t.status for t in cancelled} == {"cancelled"}
    await verified(fresh_database)


def _worker(at: datetime | None = None) -> CommandContext:
    return CommandContext(at=at or datetime.now(UTC), actor="worker:test", is_admin=True,
                          idempotency_key=f"test:{uuid.uuid4()}")


def _as(account: uuid.UUID, at: datetime) -> CommandContext:
    return CommandContext(at=at, actor="test", account_id=account)


async def _try(coro: object) -> object:
    try:
        return await coro  # type: ignore[misc]
    except (OrderStateConflict, ConfirmWindowClosed) as exc:
        return exc


def _outcome(result: object) -> str:
    if isinstance(result, Exception):
        return "409"
    recorded = getattr(result, "position", None)
    return "won" if recorded is not None else "noop"


async def test_an_unpaid_intent_expires_on_its_timer(c: Container, fresh_database: str, stub: StubSeller) -> None:
    await seller(c, stub.url, 100)
    b = await funded_buyer(c, 100)
    await read_models(c)
    short = OrdersService(c.repo, c.pool, c.tasks, c.orders.escrow, fee_bps=250, intent_ttl_s=1)
    order = (await short.place(ctx(b.account), b.machine.id, listing_id=None, capability=CAPABILITY,
                               constraints=None, input={"text": "hi"}, confirm_window_s=60)).order
    async with worker_on(fresh_database, fresh_database, ACTORS, settings=PRIVATE_OK) as (broker, worker):
        worker.start()
        order = await relay_until(c, broker, order.id, {"cancelled"}, seconds=20)
    assert order.payment == "expired" and order.cancel_reason == "the payment intent expired"
    assert (await c.tasks.load(order.task_id)).status == "cancelled"
    late = b.key.sign(order.signing_payload)
    with pytest.raises(OrderStateConflict):  # a mandate after the timer: nothing to pay any more
        await c.orders.pay(ctx(b.account), order.id, late)


async def test_a_receipt_signed_by_another_key_is_kept_but_not_verified(
    c: Container, fresh_database: str, stub: StubSeller
) -> None:
    impostor = seed_of(MachineKeyFactory())
    await seller(c, stub.url, 100, path=f"echo/receipt/{impostor}", receipts=False)
    b = await funded_buyer(c, 100)
    order = await paid_order(c, b)
    async with worker_on(fresh_database, fresh_database, ACTORS, settings=PRIVATE_OK) as (broker, worker):
        worker.start()
        order = await relay_until(c, broker, order.id, {"executed"})
    assert order.execution is not None and order.execution["receipt"]
    assert order.execution["receipt_verified"] is False and order.execution["result_digest"]

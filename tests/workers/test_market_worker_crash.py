"""The `mm worker` process SIGKILLed mid-settlement (escrow held, the seller's call in flight): after a restart
the order is executed exactly once, the escrow held once, and confirm releases it once."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from collections.abc import AsyncIterator

import pytest

from app.container import Container
from app.outbound.stub_seller import StubSeller
from tests.workers.harness import eventually, relay_through
from tests.workers.orders_market import balances, funded_buyer, order_events, paid_order, seller, verified
from tests.workers.tasks_market import ctx
from tests.workers.test_task_worker_crash import start_worker
from workers.broker import make_broker


@pytest.fixture
async def c(fresh_container: Container) -> AsyncIterator[Container]:
    yield fresh_container


async def test_a_worker_killed_mid_settlement_settles_exactly_once_after_restart(
    c: Container, fresh_database: str, stub: StubSeller
) -> None:
    s = await seller(c, stub.url, 1000, path="sleep/3000/echo")
    b = await funded_buyer(c, 1000)
    order = await paid_order(c, b)
    broker = make_broker(fresh_database)
    try:
        await relay_through(c, broker, order.id)  # the settlement message waits in the broker's table
    finally:
        broker.close()
    first, out = start_worker(fresh_database)
    second: subprocess.Popen[str] | None = None
    try:
        deadline = time.monotonic() + 60
        while stub.stats.total == 0:  # escrow is held and the seller has the call; its answer is 3 s away
            assert first.poll() is None and time.monotonic() < deadline, f"no call reached the seller:\n{out.text}"
            await asyncio.sleep(0.02)
        os.kill(first.pid, signal.SIGKILL)
        first.wait(10)
        assert (await c.orders.load(order.id)).status == "executing"
        second, out2 = start_worker(fresh_database)

        async def executed() -> bool:
            return (await c.orders.load(order.id)).status == "executed"

        assert await eventually(executed, 60), f"the order was not executed after the restart:\n{out2.text}"
    finally:
        if first.poll() is None:
            first.kill()
        if second is not None:
            second.send_signal(signal.SIGTERM)
            try:
                second.wait(40)
            except subprocess.TimeoutExpired:
                second.kill()
    kinds = await order_events(c, order.id)
    assert [kinds.count(k) for k in ("EscrowHeld", "Executed")] == [1, 1], kinds
    assert list(stub.stats.by_key.values()) == [2]  # one run, re-sent under its key after the restart
    await c.orders.confirm(ctx(b.account), order.id)
    totals = await balances(c)
    assert (totals[f"available:{b.account}"], totals[f"escrow:{b.account}"]) == (0, 0)
    assert totals[f"available:{s.account}"] == 975 and totals["fees"] == 25
    await verified(fresh_database)

"""Backtests replay recorded orders as well as tasks: each order placed is judged as the action `order` (its own
task is not judged again), and the report names what orders the policy would have refused, the amounts and the
order ids. The answer is computed here, independently, from the history the test seeded."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from app.container import Container
from tests.api.task_helpers import capability, submit
from tests.api.test_market_orders import market, place


async def test_orders_in_the_window_are_judged_as_orders_with_counts_amounts_and_ids(
    client: httpx.AsyncClient, container: Container, admin: dict[str, str], tenant: dict[str, Any]
) -> None:
    h = tenant["headers"]
    since = datetime.now(UTC) - timedelta(seconds=1)
    cheap = await market(client, container, admin, tenant, price=100)
    dear = await market(client, container, admin, tenant, price=300)
    placed: list[tuple[str, str, int]] = []  # (order id, its task id, price), in log order
    for i in range(5):
        m = dear if i % 2 else cheap
        r = await place(client, m)
        assert r.status_code == 201, r.text
        placed.append((r.json()["id"], r.json()["taskId"], r.json()["price"]["amount"]))
    cancelled = placed[0][0]  # a cancelled order was still placed: the policy would have judged it
    assert (await client.post(f"/v1/market/orders/{cancelled}/cancel", headers=h)).status_code == 200
    unlisted = capability()
    for _ in range(2):
        await submit(client, h, cheap["buyer"], unlisted)
    until = datetime.now(UTC) + timedelta(seconds=1)

    r = await client.post("/v1/policies", headers=h, json={"name": "bt-orders", "mode": "disabled", "rules": [
        {"type": "capabilities", "deny": [unlisted]},
        {"type": "price-ceiling", "max": {"amount": 200, "currency": "USD"}}]})
    assert r.status_code == 201, r.text
    window = {"since": since.isoformat(), "until": until.isoformat()}
    bt = await client.post(f"/v1/policies/{r.json()['id']}/backtest", headers=h, json=window)
    assert bt.status_code == 200, bt.text
    report = bt.json()
    over = [(oid, tid, p) for oid, tid, p in placed if p > 200]
    # Orders are judged once, as orders: their tasks' submissions and resolutions are not replayed again.
    assert report["evaluated"] == {"order": 5, "create-task": 2} and report["replayed"] == 7, report
    assert report["denied"] == {"order": len(over), "create-task": 2}, report
    assert report["deniedByRule"] == {"price-ceiling": len(over), "capabilities": 2}, report
    assert report["deniedAmounts"] == {"USD": sum(p for _, _, p in over)}
    assert report["deniedAmountsByAction"] == {"order": {"USD": sum(p for _, _, p in over)}}
    order_samples = [s for s in report["samples"] if s["action"] == "order"]
    assert [(s["orderId"], s["taskId"]) for s in order_samples] == [(oid, tid) for oid, tid, _ in over]
    assert all(s["ruleType"] == "price-ceiling" for s in order_samples)
    assert all(s["orderId"] is None for s in report["samples"] if s["action"] != "order")

    # A draft daily spend limit of 450, simulated over the same orders in log order (refused ones spend nothing).
    spent, refused = 0, []
    for oid, _, p in placed:
        if spent + p > 450:
            refused.append((oid, p))
        else:
            spent += p
    assert refused, "the seeded history must make the cap bite"
    draft = {**window, "rules": [{"type": "spend-limit", "amount": {"amount": 450, "currency": "USD"},
                                  "period": "day"}]}
    d = await client.post("/v1/policies/backtest", headers=h, json=draft)
    assert d.status_code == 200, d.text
    assert d.json()["denied"] == {"order": len(refused)}, d.json()
    assert d.json()["deniedAmountsByAction"] == {"order": {"USD": sum(p for _, p in refused)}}
    assert [s["orderId"] for s in d.json()["samples"]] == [oid for oid, _ in refused]

    # A buyer machine outside the policy's scope: its orders are evaluated, none refused.
    scoped = {**window, "rules": [{"type": "price-ceiling", "max": {"amount": 200, "currency": "USD"}}],
              "scope": {"type": "machines", "machineIds": [cheap["buyer"]]}}
    s = await client.post("/v1/policies/backtest", headers=h, json=scoped)
    assert s.status_code == 200, s.text
    assert s.json()["evaluated"]["order"] == 5 and s.json()["denied"] == {}, s.json()

"""Backtests over a seeded task history: the answer is computed independently here from what was recorded."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from app.container import Container
from tests.api.helpers import active_machine, assert_problem
from tests.api.task_helpers import buyer, capability, resolved_task, seller, submit


async def test_a_saved_policy_and_a_draft_over_recorded_history(
    client: httpx.AsyncClient, tenant: dict[str, Any], container: Container
) -> None:
    h, listed, unlisted = tenant["headers"], capability(), capability()
    since = datetime.now(UTC) - timedelta(seconds=1)
    cheap, _, _ = await seller(client, h, listed, price=100)
    dear, _, last = await seller(client, h, listed, price=300)
    bid = await buyer(client, h)
    prices = []  # resolved prices, in order
    for i in range(5):
        pick = dear if i % 2 else cheap
        await resolved_task(client, container, h, bid, listed, last, constraints={"sellers": {"allow": [pick]}})
        prices.append(300 if i % 2 else 100)
    for _ in range(3):
        await submit(client, h, bid, unlisted)
    until = datetime.now(UTC) + timedelta(seconds=1)

    r = await client.post("/v1/policies", headers=h, json={"name": "bt", "mode": "disabled", "rules": [
        {"type": "capabilities", "deny": [unlisted]},
        {"type": "price-ceiling", "max": {"amount": 200, "currency": "USD"}}]})
    assert r.status_code == 201, r.text
    pid = r.json()["id"]
    window = {"since": since.isoformat(), "until": until.isoformat()}
    bt = await client.post(f"/v1/policies/{pid}/backtest", headers=h, json=window)
    assert bt.status_code == 200, bt.text
    report = bt.json()
    over = [p for p in prices if p > 200]
    assert report["evaluated"] == {"create-task": 8, "resolve": 5} and report["replayed"] == 13
    assert report["denied"] == {"create-task": 3, "resolve": len(over)}
    assert report["deniedByRule"] == {"capabilities": 3, "price-ceiling": len(over)}
    assert report["deniedAmounts"] == {"USD": sum(over)}
    assert report["policyId"] == pid and report["policyVersion"] == 1 and not report["truncated"]
    assert {s["ruleType"] for s in report["samples"]} == {"capabilities", "price-ceiling"}

    # A draft: a daily spend limit of 250, simulated over the same history in log order.
    spent, refused = 0, []
    for p in prices:
        if spent + p > 250:
            refused.append(p)
        else:
            spent += p
    draft = {**window, "rules": [{"type": "spend-limit", "amount": {"amount": 250, "currency": "USD"},
                                  "period": "day"}]}
    for url in (f"/v1/policies/{pid}/backtest", "/v1/policies/backtest"):
        d = await client.post(url, headers=h, json=draft)
        assert d.status_code == 200, d.text
        assert d.json()["denied"] == {"resolve": len(refused)} and d.json()["deniedAmounts"] == {"USD": sum(refused)}
        assert d.json()["policyId"] is None
    few = await client.post(f"/v1/policies/{pid}/backtest", headers=h, json={**window, "limit": 4})
    assert few.json()["replayed"] == 4 and few.json()["truncated"] is True


async def test_backtest_refusals(client: httpx.AsyncClient, tenant: dict[str, Any], admin: dict[str, str]) -> None:
    h = tenant["headers"]
    now = datetime.now(UTC)
    ok = {"since": (now - timedelta(days=1)).isoformat(), "until": now.isoformat()}
    r = await client.post("/v1/policies", headers=admin, json={"name": "x", "mode": "disabled", "rules": [
        {"type": "capabilities", "deny": ["x"]}]})
    theirs = r.json()["id"]
    assert_problem(await client.post(f"/v1/policies/{theirs}/backtest", headers=h, json=ok), 404, "NOT_FOUND")
    for body in ({"since": ok["until"], "until": ok["since"]},
                 {"since": (now - timedelta(days=40)).isoformat(), "until": now.isoformat()},
                 {**ok, "rules": [{"type": "capabilities", "allow": ["a"], "deny": ["b"]}]}):
        assert_problem(await client.post("/v1/policies/backtest", headers=h,
                                          json={"rules": [{"type": "capabilities", "deny": ["x"]}], **body}),
                       400, "VALIDATION_ERROR")
    assert_problem(await client.post("/v1/policies/backtest", headers=h, json=ok), 400, "VALIDATION_ERROR")


async def test_a_label_selector_is_judged_on_the_labels_each_machine_had_at_the_time(
    client: httpx.AsyncClient, tenant: dict[str, Any], container: Container
) -> None:
    """Two machines swap labels half-way; the backtest must use the labels of the moment, not today's."""
    h, cap = tenant["headers"], capability()
    since = datetime.now(UTC) - timedelta(seconds=1)
    one = (await active_machine(client, h, name="one", labels={"team": "red"})).json()["id"]
    two = (await active_machine(client, h, name="two", labels={"team": "blue"})).json()["id"]
    history: list[tuple[str, str]] = []  # (task id, the machine's team when it was created), in order

    async def create(machine: str, team: str, n: int) -> None:
        for _ in range(n):
            history.append(((await submit(client, h, machine, cap)).json()["id"], team))

    await create(one, "red", 2)
    await create(two, "blue", 3)
    for mid, team in ((one, "blue"), (two, "red")):
        r = await client.patch(f"/v1/machines/{mid}", headers=h, json={"labels": {"team": team}})
        assert r.status_code == 200, r.text
    await create(one, "blue", 1)
    await create(two, "red", 4)
    window = {"since": since.isoformat(), "until": (datetime.now(UTC) + timedelta(seconds=1)).isoformat()}
    red = {"type": "labels", "labels": {"team": "red"}}

    deny = await client.post("/v1/policies/backtest", headers=h, json={
        **window, "scope": red, "rules": [{"type": "capabilities", "deny": [cap]}]})
    assert deny.status_code == 200, deny.text
    expected = [t for t, team in history if team == "red"]
    assert len(expected) == 6  # today's labels would say 7 (machine two's every task)
    assert deny.json()["denied"] == {"create-task": 6} and deny.json()["evaluated"] == {"create-task": 10}
    assert {s["taskId"] for s in deny.json()["samples"]} == set(expected)

    # A rate limit counts only what the policy governed at the time (machine two's blue tasks do not count).
    allowed, refused = 0, []
    for t, team in history:
        if team == "red":
            if allowed + 1 > 3:
                refused.append(t)
            else:
                allowed += 1
    rate = await client.post("/v1/policies/backtest", headers=h, json={
        **window, "scope": red, "rules": [{"type": "rate-limit", "tasks": 3, "perSeconds": 3600}]})
    assert rate.status_code == 200, rate.text
    assert len(refused) == 3 and rate.json()["denied"] == {"create-task": len(refused)}
    assert {s["taskId"] for s in rate.json()["samples"]} == set(refused)

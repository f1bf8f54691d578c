"""Policies enforced on task create / discover / resolve / execute over HTTP: 403 POLICY_DENIED with the policy,
rule, reason and decision id; policy.denied and policy.would-deny in the log; discovery drops forbidden sellers."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import msgspec

from app.container import Container
from domain.shared.context import CommandContext
from domain.tasks.commands import RunResult
from tests.api.helpers import assert_problem, audit_feed
from tests.api.task_helpers import buyer, capability, caught_up, resolved_task, seller, submit, task_url


async def policy(client: httpx.AsyncClient, container: Container, h: dict[str, str], *rules: dict[str, Any],
                 **fields: Any) -> dict[str, Any]:
    """Defined, and in the read model enforcement reads."""
    r = await client.post("/v1/policies", headers=h, json={"name": f"p-{uuid.uuid4().hex[:6]}", "rules": list(rules),
                                                           **fields})
    assert r.status_code == 201, r.text
    await caught_up(container, r, "policies")
    body: dict[str, Any] = r.json()
    return body


async def decisions(container: Container, decision_id: str) -> list[dict[str, Any]]:
    rows = await container.pool.fetch("SELECT type, data::text AS data FROM events WHERE stream_id = $1",
                                      uuid.UUID(decision_id))
    return [{"type": r["type"], **msgspec.json.decode(r["data"])} for r in rows]


async def test_a_refused_task_creation_is_403_recorded_and_creates_nothing(
    client: httpx.AsyncClient, tenant: dict[str, Any], container: Container
) -> None:
    h, cap = tenant["headers"], capability()
    bid = await buyer(client, h)
    p = await policy(client, container, h, {"type": "capabilities", "deny": [cap]})
    r = await client.post(f"/v1/machines/{bid}/tasks", headers=h, json={"capability": cap, "input": {"text": "x"}})
    body = assert_problem(r, 403, "POLICY_DENIED")
    assert body["policyId"] == p["id"] and body["rule"] == "capabilities"
    assert f"capability '{cap}' is on the deny list" in body["reason"] and body["reason"] in body["detail"]
    assert body["extra"] == {"ruleIndex": 0, "policyVersion": 1}
    (denied,) = await decisions(container, body["decisionId"])
    assert denied["type"] == "policies:PolicyDecision.Denied" and denied["action"] == "create-task"
    assert denied["denied_by"]["policy_id"] == p["id"] and denied["machine_id"] == bid
    tasks = await container.pool.fetchval("SELECT count(*) FROM events WHERE type = 'tasks:Task.Submitted'"
                                          " AND data->>'machine_id' = $1", bid)
    assert tasks == 0
    other = await client.post(f"/v1/machines/{bid}/tasks", headers=h,
                              json={"capability": capability(), "input": {"text": "x"}})
    assert other.status_code == 201, other.text
    feed = await audit_feed(client, h, other, type="policy.denied")
    assert [e["subject"] for e in feed] == [f"policy-decision:{body['decisionId']}"]
    assert feed[0]["machineId"] == bid and feed[0]["data"]["deniedBy"]["reason"] == body["reason"]


async def test_a_shadow_objection_is_recorded_with_the_task_and_never_blocks(
    client: httpx.AsyncClient, tenant: dict[str, Any], container: Container
) -> None:
    h, cap = tenant["headers"], capability()
    bid = await buyer(client, h)
    await policy(client, container, h, {"type": "capabilities", "deny": [cap]}, mode="shadow")
    r = await submit(client, h, bid, cap)
    tid = r.json()["id"]
    rows = await container.pool.fetch(
        "SELECT e.type, e.stream_id, e.tx_id FROM events e WHERE e.tx_id = (SELECT tx_id FROM events"
        " WHERE stream_id = $1 LIMIT 1) ORDER BY position", uuid.UUID(tid))
    assert [x["type"] for x in rows] == ["tasks:Task.Submitted", "policies:PolicyDecision.WouldDeny"]  # one commit
    (would,) = await decisions(container, str(rows[1]["stream_id"]))
    assert would["subject_id"] == tid and would["denied_by"]["mode"] == "shadow"
    feed = await audit_feed(client, h, r, type="policy.would-deny")
    assert f"policy-decision:{rows[1]['stream_id']}" in [e["subject"] for e in feed]


async def test_discovery_drops_sellers_a_policy_forbids_and_says_why(
    client: httpx.AsyncClient, tenant: dict[str, Any], container: Container
) -> None:
    h, cap = tenant["headers"], capability()
    banned, _, _ = await seller(client, h, cap, price=100)
    kept, kept_listing, last = await seller(client, h, cap, price=300)
    dear, _, last = await seller(client, h, cap, price=900)
    bid = await buyer(client, h)
    await policy(client, container, h, {"type": "sellers", "deny": [banned]},
                 {"type": "price-ceiling", "max": {"amount": 500, "currency": "USD"}, "capability": cap})
    await caught_up(container, last, "catalogue")
    tid = (await submit(client, h, bid, cap)).json()["id"]
    r = await client.post(task_url(bid, tid, "discover"), headers=h)
    assert r.status_code == 200, r.text
    task = r.json()
    assert [c["listingId"] for c in task["candidates"]] == [kept_listing]
    reasons = {d["sellerMachineId"]: d["reason"] for d in task["dropped"]}
    assert "rule 0 sellers" in reasons[banned] and "is on the deny list" in reasons[banned]
    assert "rule 1 price-ceiling" in reasons[dear] and "900 USD is above the ceiling of 500 USD" in reasons[dear]
    assert kept not in reasons


async def test_resolve_and_execute_are_judged_again(
    client: httpx.AsyncClient, tenant: dict[str, Any], container: Container
) -> None:
    h, cap = tenant["headers"], capability()
    _, _, last = await seller(client, h, cap, price=200, provider_key="gpu")
    bid = await buyer(client, h)
    await caught_up(container, last, "catalogue")
    tid = (await submit(client, h, bid, cap)).json()["id"]
    assert (await client.post(task_url(bid, tid, "discover"), headers=h)).status_code == 200
    ceiling = await policy(client, container, h, {"type": "price-ceiling", "max": {"amount": 100, "currency": "USD"}})
    refused = assert_problem(await client.post(task_url(bid, tid, "resolve"), headers=h), 403, "POLICY_DENIED")
    assert refused["policyId"] == ceiling["id"] and refused["rule"] == "price-ceiling"
    task = await client.get(task_url(bid, tid), headers=h)
    assert task.json()["status"] == "discovered"  # nothing recorded on the task

    off = await client.patch(f"/v1/policies/{ceiling['id']}", json={"mode": "disabled"}, headers=h)
    assert off.status_code == 200, off.text
    await caught_up(container, off, "policies")
    assert (await client.post(task_url(bid, tid, "resolve"), headers=h)).status_code == 201

    keys = await policy(client, container, h, {"type": "provider-keys", "deny": ["gpu"]})
    r = await client.post(task_url(bid, tid, "execute"), headers={**h, "Prefer": "wait=0"})
    body = assert_problem(r, 403, "POLICY_DENIED")
    assert body["policyId"] == keys["id"] and "provider key 'gpu' is on the deny list" in body["reason"]
    assert (await container.tasks.load(uuid.UUID(tid))).status == "resolved"


async def test_rate_and_spend_limits_count_the_accounts_recent_history(
    client: httpx.AsyncClient, tenant: dict[str, Any], container: Container
) -> None:
    h, cap = tenant["headers"], capability()
    _, _, last = await seller(client, h, cap, price=100)
    bid = await buyer(client, h)
    await policy(client, container, h, {"type": "rate-limit", "tasks": 3, "perSeconds": 3600},
                 {"type": "spend-limit", "amount": {"amount": 150, "currency": "USD"}, "period": "day"})
    await resolved_task(client, container, h, bid, cap, last)  # spends 100 of 150
    second = await submit(client, h, bid, cap)
    await caught_up(container, second, "tasks")
    r = await client.post(task_url(bid, second.json()["id"], "discover"), headers=h)
    assert r.status_code == 200, r.text
    spend = assert_problem(await client.post(task_url(bid, second.json()["id"], "resolve"), headers=h), 403,
                           "POLICY_DENIED")
    assert spend["rule"] == "spend-limit" and "100 spent + 100 = 200 of 150 USD this day" in spend["reason"]
    third = await submit(client, h, bid, cap)
    await caught_up(container, third, "tasks")
    rate = assert_problem(await client.post(f"/v1/machines/{bid}/tasks", headers=h,
                                            json={"capability": cap, "input": {"text": "x"}}), 403, "POLICY_DENIED")
    assert rate["rule"] == "rate-limit" and "3 tasks in the last 3600 s + this one, limit 3" in rate["reason"]


async def test_64_concurrent_commits_never_exceed_a_spend_cap_and_a_cancel_releases(
    client: httpx.AsyncClient, tenant: dict[str, Any], container: Container
) -> None:
    h, cap = tenant["headers"], capability()
    _, _, last = await seller(client, h, cap, price=100)
    bid = await buyer(client, h)
    await policy(client, container, h, {"type": "spend-limit", "amount": {"amount": 1000, "currency": "USD"},
                                        "period": "day"})
    await caught_up(container, last, "catalogue")
    tids = []
    for _ in range(64):
        tid = (await submit(client, h, bid, cap)).json()["id"]
        assert (await client.post(task_url(bid, tid, "discover"), headers=h)).status_code == 200
        tids.append(tid)

    answers = await asyncio.gather(*[client.post(task_url(bid, t, "resolve"), headers=h) for t in tids])
    statuses = [a.status_code for a in answers]
    assert statuses.count(201) == 10 and statuses.count(403) == 54, statuses
    for a in answers:
        if a.status_code == 403:
            assert assert_problem(a, 403, "POLICY_DENIED")["rule"] == "spend-limit"
    (budget,) = await container.pool.fetch(
        "SELECT stream_id, count(*) FILTER (WHERE type LIKE '%.Reserved') AS reserved,"
        " sum((data->>'amount')::bigint) FILTER (WHERE type LIKE '%.Reserved') AS total"
        " FROM events WHERE stream_type = 'policies:SpendBudget' AND metadata->>'ownerAccountId' = $1"
        " GROUP BY stream_id", tenant["id"])
    assert (budget["reserved"], budget["total"]) == (10, 1000)  # not one minor unit over the cap
    dry = await client.post("/v1/policies/evaluate", headers=h, json={
        "action": "resolve", "machineId": bid, "capability": cap, "price": {"amount": 1, "currency": "USD"}})
    assert dry.json()["effect"] == "deny" and "1000 spent + 1 = 1001 of 1000 USD" in dry.json()["deniedBy"]["reason"]

    won = [t for t, a in zip(tids, answers, strict=True) if a.status_code == 201]
    lost = [t for t, a in zip(tids, answers, strict=True) if a.status_code == 403]
    cancelled = await client.post(task_url(bid, won[0], "cancel"), headers=h, json={"reason": "changed my mind"})
    assert cancelled.status_code == 200, cancelled.text
    released = await container.pool.fetchval(
        "SELECT count(*) FROM events WHERE stream_id = $1 AND type = 'policies:SpendBudget.Released'"
        " AND data->>'task_id' = $2", budget["stream_id"], won[0])
    assert released == 1
    assert (await client.post(task_url(bid, lost[0], "resolve"), headers=h)).status_code == 201
    assert_problem(await client.post(task_url(bid, lost[1], "resolve"), headers=h), 403, "POLICY_DENIED")


async def test_a_task_that_fails_releases_its_reservation(
    client: httpx.AsyncClient, tenant: dict[str, Any], container: Container
) -> None:
    """The executor's path: the run fails on every step, the task fails, and its reserved price is freed."""
    h, cap = tenant["headers"], capability()
    _, _, last = await seller(client, h, cap, price=100)
    bid = await buyer(client, h)
    await policy(client, container, h, {"type": "spend-limit", "amount": {"amount": 100, "currency": "USD"},
                                        "period": "month"})
    tid, _ = await resolved_task(client, container, h, bid, cap, last, constraints={"fallbacks": 0})
    blocked = (await submit(client, h, bid, cap)).json()["id"]
    assert (await client.post(task_url(bid, blocked, "discover"), headers=h)).status_code == 200
    assert_problem(await client.post(task_url(bid, blocked, "resolve"), headers=h), 403, "POLICY_DENIED")

    ctx = CommandContext(at=datetime.now(UTC), actor="worker:test")
    await container.tasks.request_execution(msgspec.structs.replace(ctx, account_id=uuid.UUID(tenant["id"])),
                                            uuid.UUID(bid), uuid.UUID(tid))
    _, run = await container.tasks.next_run(ctx, uuid.UUID(tid))
    assert run is not None
    failed = await container.tasks.finish_run(ctx, uuid.UUID(tid), RunResult(
        run_id=run["run_id"], http_status=503, latency_ms=5, error_class="http-5xx", response_digest=None, body=None))
    assert failed.task.status == "failed"
    kinds = await container.pool.fetch("SELECT type FROM events WHERE type LIKE 'policies:SpendBudget.%'"
                                       " AND data->>'task_id' = $1 ORDER BY position", tid)
    assert [k["type"].rpartition(".")[2] for k in kinds] == ["Reserved", "Released"]
    assert (await client.post(task_url(bid, blocked, "resolve"), headers=h)).status_code == 201  # room again

"""The decision travels in the task's events; rate limits are exact and per scope; a dry-run resolve is judged."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import msgspec

from app.container import Container
from tests.api.helpers import assert_problem, audit_feed
from tests.api.task_helpers import buyer, capability, caught_up, seller, submit, task_url
from tests.api.test_policy_enforcement import policy


async def task_events(container: Container, task_id: str) -> dict[str, dict[str, Any]]:
    rows = await container.pool.fetch("SELECT type, data::text AS data FROM events WHERE stream_id = $1"
                                      " ORDER BY version", uuid.UUID(task_id))
    return {r["type"].rpartition(".")[2]: msgspec.json.decode(r["data"]) for r in rows}


async def recorded_decisions(container: Container, machine_id: str) -> int:
    count: int = await container.pool.fetchval(
        "SELECT count(*) FROM events WHERE stream_type = 'policies:PolicyDecision' AND data->>'machine_id' = $1",
        machine_id)
    return count


async def test_each_commands_event_carries_the_decision_that_let_it_through(
    client: httpx.AsyncClient, tenant: dict[str, Any], container: Container
) -> None:
    h, cap = tenant["headers"], capability()
    _, _, last = await seller(client, h, cap, price=200)
    bid = await buyer(client, h)
    enforced = await policy(client, container, h, {"type": "price-ceiling", "max": {"amount": 500, "currency": "USD"}})
    shadow = await policy(client, container, h, {"type": "capabilities", "deny": [cap]}, mode="shadow")
    await caught_up(container, last, "catalogue")
    created = await submit(client, h, bid, cap)
    tid = created.json()["id"]
    assert (await client.post(task_url(bid, tid, "discover"), headers=h)).status_code == 200
    assert (await client.post(task_url(bid, tid, "resolve"), headers=h)).status_code == 201
    r = await client.post(task_url(bid, tid, "execute"), headers={**h, "Prefer": "wait=0"})
    assert r.status_code in (200, 202), r.text

    events = await task_events(container, tid)
    judged = [{"policy_id": enforced["id"], "version": 1, "mode": "enforce"},
              {"policy_id": shadow["id"], "version": 1, "mode": "shadow"}]
    ids = set()
    for kind, action in (("Submitted", "create-task"), ("Resolved", "resolve"), ("ExecutionRequested", "execute")):
        d = events[kind]["decision"]
        assert (d["action"], d["effect"]) == (action, "would-deny"), (kind, d)
        assert d["policies"] == judged  # the versions judged, platform first, then by age
        # A would-deny is recorded under the same id as the one the task's event carries.
        (would,) = await container.pool.fetch("SELECT type, data->>'subject_id' AS subject, data->'command' AS c,"
                                              " data->'denied_by' AS by FROM events WHERE stream_id = $1",
                                              uuid.UUID(d["decision_id"]))
        assert (would["type"], would["subject"]) == ("policies:PolicyDecision.WouldDeny", tid)
        command, by = msgspec.json.decode(would["c"]), msgspec.json.decode(would["by"])
        assert (command["kind"], command["capability"], command["machine_id"]) == (action, cap, bid)
        assert (by["policy_id"], by["policy_version"], by["rule_type"]) == (shadow["id"], 1, "capabilities")
        assert by["reason"] == f"capability '{cap}' is on the deny list"
        if action != "create-task":
            assert command["price"] == {"amount": 200, "currency": "USD"}
        ids.add(d["decision_id"])
    assert len(ids) == 3
    feed = await audit_feed(client, h, created, type="task.created", machineId=bid)
    assert feed[0]["data"]["decision"]["decision_id"] == events["Submitted"]["decision"]["decision_id"]

    # An allow carries its id too (nothing else records it: the task's event is the record).
    plain = capability()
    other = (await submit(client, h, bid, plain)).json()["id"]
    d = (await task_events(container, other))["Submitted"]["decision"]
    assert d["effect"] == "allow" and d["action"] == "create-task"
    assert d["policies"] == judged
    assert await container.pool.fetchval("SELECT count(*) FROM events WHERE stream_id = $1",
                                         uuid.UUID(d["decision_id"])) == 0


async def test_concurrent_creates_against_a_rate_limit_let_exactly_the_limit_through_per_scope(
    client: httpx.AsyncClient, tenant: dict[str, Any], container: Container
) -> None:
    h, cap = tenant["headers"], capability()
    limited, free = await buyer(client, h), await buyer(client, h)
    limit = await policy(client, container, h, {"type": "rate-limit", "tasks": 5, "perSeconds": 3600},
                         scope={"type": "machines", "machineIds": [limited]})
    body = {"capability": cap, "input": {"text": "x"}}
    # An idempotent retry of an allowed create is the same task, counted once.
    key = {**h, "Idempotency-Key": uuid.uuid4().hex}
    first = await client.post(f"/v1/machines/{limited}/tasks", headers=key, json=body)
    again = await client.post(f"/v1/machines/{limited}/tasks", headers=key, json=body)
    assert first.status_code == again.status_code == 201 and first.json()["id"] == again.json()["id"]
    answers = await asyncio.gather(*[client.post(f"/v1/machines/{limited}/tasks", headers=h, json=body)
                                     for _ in range(24)])
    statuses = [a.status_code for a in answers]
    assert statuses.count(201) == 4 and statuses.count(403) == 20, statuses
    for a in answers:
        if a.status_code == 403:
            p = assert_problem(a, 403, "POLICY_DENIED")
            assert p["policyId"] == limit["id"] and p["rule"] == "rate-limit"
            assert "5 tasks in the last 3600 s + this one, limit 5" in p["reason"]
    created = await container.pool.fetchval("SELECT count(*) FROM events WHERE type = 'tasks:Task.Submitted'"
                                            " AND data->>'machine_id' = $1", limited)
    assert created == 5
    # Counted in the same append as each task, on the policy's own window (no read model in between).
    counted = await container.pool.fetchval(
        "SELECT count(DISTINCT data->>'task_id') FROM events WHERE type = 'policies:RateWindow.Counted'"
        " AND stream_id IN (SELECT stream_id FROM events WHERE type = 'policies:RateWindow.Opened'"
        " AND data->>'policy_id' = $1)", limit["id"])
    assert counted == 5
    # The same account's machine outside the policy's scope is not counted, nor limited.
    for _ in range(6):
        await submit(client, h, free, cap)
    retried = await client.post(f"/v1/machines/{limited}/tasks", headers=key, json=body)
    assert retried.status_code == 201 and retried.json()["id"] == first.json()["id"]  # still the same, not refused
    dry = await client.post("/v1/policies/evaluate", headers=h, json={
        "action": "create-task", "machineId": limited, "capability": cap})
    assert dry.json()["effect"] == "deny" and dry.json()["deniedBy"]["ruleType"] == "rate-limit"


async def test_a_dry_run_resolve_is_judged_as_resolve_would_be_and_records_nothing(
    client: httpx.AsyncClient, tenant: dict[str, Any], container: Container
) -> None:
    h, cap = tenant["headers"], capability()
    _, _, last = await seller(client, h, cap, price=300)
    bid = await buyer(client, h)
    await caught_up(container, last, "catalogue")
    tid = (await submit(client, h, bid, cap)).json()["id"]
    assert (await client.post(task_url(bid, tid, "discover"), headers=h)).status_code == 200
    ceiling = await policy(client, container, h, {"type": "price-ceiling", "max": {"amount": 100, "currency": "USD"}},
                           {"type": "spend-limit", "amount": {"amount": 1000, "currency": "USD"}, "period": "day"})
    before = await recorded_decisions(container, bid)
    dry = assert_problem(await client.post(task_url(bid, tid, "resolve"), headers=h, params={"dryRun": "true"}),
                         403, "POLICY_DENIED")
    real = assert_problem(await client.post(task_url(bid, tid, "resolve"), headers=h), 403, "POLICY_DENIED")
    for key in ("policyId", "rule", "reason", "extra"):
        assert dry[key] == real[key], key
    assert dry["policyId"] == ceiling["id"] and dry["detail"].startswith("dry run, nothing recorded: ")
    assert "decisionId" not in dry and real["decisionId"]
    assert await recorded_decisions(container, bid) == before + 1  # the real refusal only

    shadow = await client.patch(f"/v1/policies/{ceiling['id']}", json={"mode": "shadow"}, headers=h)
    assert shadow.status_code == 200, shadow.text
    await caught_up(container, shadow, "policies")
    version = await container.pool.fetchval("SELECT max(version) FROM events WHERE stream_id = $1", uuid.UUID(tid))
    r = await client.post(task_url(bid, tid, "resolve"), headers=h, params={"dryRun": "true"})
    assert r.status_code == 200, r.text
    preview = r.json()
    assert preview["dryRun"] is True and preview["policy"]["effect"] == "would-deny"
    assert preview["policy"]["deniedBy"]["ruleType"] == "price-ceiling"
    assert "300 USD is above the ceiling of 100 USD" in preview["policy"]["deniedBy"]["reason"]
    assert await recorded_decisions(container, bid) == before + 1
    assert await container.pool.fetchval("SELECT max(version) FROM events WHERE stream_id = $1",
                                         uuid.UUID(tid)) == version
    budgets = await container.pool.fetchval("SELECT count(*) FROM events WHERE type = 'policies:SpendBudget.Reserved'"
                                            " AND data->>'task_id' = $1", tid)
    assert budgets == 0  # a dry run reserves nothing either
    done = await client.post(task_url(bid, tid, "resolve"), headers=h)
    assert done.status_code == 201, done.text
    assert "policy" not in done.json() or done.json()["policy"] is None

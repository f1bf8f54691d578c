"""POST /v1/policies/evaluate: a dry run of one action against the policies governing a machine; records nothing."""

from __future__ import annotations

import uuid
from typing import Any

import httpx

from app.container import Container
from tests.api.helpers import active_machine, assert_problem, new_tenant

USD = "USD"


async def setup(client: httpx.AsyncClient, tenant: dict[str, Any], admin: dict[str, str],
                *policies: dict[str, Any]) -> tuple[str, dict[str, Any], httpx.Response | None]:
    """A labelled buyer machine of the tenant, a seller machine of another account, these policies defined."""
    buyer = (await active_machine(client, tenant["headers"], labels={"team": "a"})).json()["id"]
    seller_tenant = await new_tenant(client, admin)
    seller = (await active_machine(client, seller_tenant["headers"])).json()
    return buyer, seller, await define(client, tenant, *policies)


async def define(client: httpx.AsyncClient, tenant: dict[str, Any], *policies: dict[str, Any]) -> httpx.Response | None:
    last = None
    for p in policies:
        last = await client.post("/v1/policies", json={"name": f"p-{uuid.uuid4().hex[:6]}", **p},
                                 headers=tenant["headers"])
        assert last.status_code == 201, last.text
    return last


async def evaluate(client: httpx.AsyncClient, tenant: dict[str, Any], last: httpx.Response | None,
                   **body: Any) -> httpx.Response:
    h = {**tenant["headers"], **({"X-Min-Position": last.headers["x-log-position"]} if last else {})}
    return await client.post("/v1/policies/evaluate", json=body, headers=h)


async def test_a_deny_names_the_first_denying_policy_and_rule_and_every_rule_is_explained(
    client: httpx.AsyncClient, tenant: dict[str, Any], admin: dict[str, str], container: Container
) -> None:
    buyer, seller, _ = await setup(client, tenant, admin)
    last = await define(
        client, tenant,
        {"rules": [{"type": "capabilities", "allow": ["translate"]}]},
        {"rules": [{"type": "provider-keys", "allow": ["openai"]},
                   {"type": "price-ceiling", "max": {"amount": 100, "currency": USD}}]},
        {"rules": [{"type": "sellers", "deny": [seller["accountId"]]}], "mode": "shadow"},
        {"rules": [{"type": "capabilities", "deny": ["translate"]}], "scope": {"type": "labels",
                                                                             "labels": {"team": "b"}}},
    )
    assert last is not None
    before = await container.pool.fetchval("SELECT count(*) FROM events")
    r = await evaluate(client, tenant, last, action="resolve", machineId=buyer, capability="translate",
                       sellerMachineId=seller["id"], price={"amount": 250, "currency": USD}, providerKey="OpenAI")
    assert r.status_code == 200, r.text
    d = r.json()
    assert d["effect"] == "deny" and d["action"] == "resolve"
    uuid.UUID(d["decisionId"])
    assert d["deniedBy"]["ruleType"] == "price-ceiling" and d["deniedBy"]["ruleIndex"] == 1
    assert "250 USD is above the ceiling of 100 USD" in d["deniedBy"]["reason"]
    mine = [x for x in d["results"] if x["policyName"].startswith("p-")]
    assert [(x["ruleType"], x["outcome"], x["mode"]) for x in mine] == [
        ("capabilities", "pass", "enforce"), ("provider-keys", "pass", "enforce"),
        ("price-ceiling", "deny", "enforce"), ("sellers", "deny", "shadow")]  # team=b's policy does not govern
    assert seller["accountId"] not in mine[3]["reason"]  # the seller's account is not the buyer's to see
    assert await container.pool.fetchval("SELECT count(*) FROM events") == before  # a dry run records nothing


async def test_shadow_only_would_deny_and_create_task_skips_what_it_cannot_know(
    client: httpx.AsyncClient, tenant: dict[str, Any], admin: dict[str, str]
) -> None:
    buyer, seller, last = await setup(
        client, tenant, admin,
        {"rules": [{"type": "capabilities", "deny": ["translate"]}], "mode": "shadow"},
        {"rules": [{"type": "min-seller-reputation", "successRate": 0.9, "minRuns": 5},
                   {"type": "rate-limit", "tasks": 1, "perSeconds": 60}]},
    )
    r = await evaluate(client, tenant, last, action="create-task", machineId=buyer, capability="translate")
    d = r.json()
    assert d["effect"] == "would-deny" and d["deniedBy"]["mode"] == "shadow", d
    mine = {x["ruleType"]: x["outcome"] for x in d["results"] if x["policyName"].startswith("p-")}
    assert mine == {"capabilities": "deny", "min-seller-reputation": "not-applicable", "rate-limit": "pass"}
    # A seller with no runs yet does not meet a minimum of five.
    r = await evaluate(client, tenant, last, action="execute", machineId=buyer, capability="summarise",
                       sellerMachineId=seller["id"], price={"amount": 1, "currency": USD})
    d = r.json()
    assert d["effect"] == "deny" and d["deniedBy"]["ruleType"] == "min-seller-reputation", d
    assert "0 runs, fewer than the 5 required" in d["deniedBy"]["reason"]


async def test_no_policies_allow(client: httpx.AsyncClient, tenant: dict[str, Any], admin: dict[str, str]) -> None:
    buyer, _, _ = await setup(client, tenant, admin)
    r = await evaluate(client, tenant, None, action="order", machineId=buyer, capability="x")
    assert r.status_code == 200 and r.json()["effect"] == "allow" and r.json()["deniedBy"] is None


async def test_refusals(client: httpx.AsyncClient, tenant: dict[str, Any], admin: dict[str, str]) -> None:
    buyer, _, _ = await setup(client, tenant, admin)
    stranger = await new_tenant(client, admin)
    theirs = (await active_machine(client, stranger["headers"])).json()["id"]
    h = tenant["headers"]
    assert_problem(await client.post("/v1/policies/evaluate", json={"action": "resolve", "machineId": theirs},
                                     headers=h), 404, "NOT_FOUND")
    assert_problem(await client.post("/v1/policies/evaluate", json={
        "action": "resolve", "machineId": buyer, "sellerMachineId": str(uuid.uuid4())}, headers=h), 404, "NOT_FOUND")
    for body in ({"action": "teleport", "machineId": buyer}, {"machineId": buyer},
                 {"action": "resolve", "machineId": buyer, "price": {"amount": -1, "currency": USD}},
                 {"action": "resolve", "machineId": buyer, "extra": 1}):
        assert_problem(await client.post("/v1/policies/evaluate", json=body, headers=h), 400, "VALIDATION_ERROR")

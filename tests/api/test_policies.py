"""Policies over HTTP: define, read, list with filters and cursors, revise with If-Match, versions, tenancy."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from tests.api.helpers import active_machine, assert_problem, audit_feed, fresh, new_tenant, walk_pages

CAPS = {"type": "capabilities", "deny": ["translate"]}
SPEND = {"type": "spend-limit", "amount": {"amount": 5000, "currency": "USD"}, "period": "month"}


async def create(client: httpx.AsyncClient, headers: dict[str, str], **fields: Any) -> httpx.Response:
    body = {"name": f"p-{uuid.uuid4().hex[:6]}", "rules": [CAPS], **fields}
    r = await client.post("/v1/policies", json=body, headers=headers)
    assert r.status_code == 201, r.text
    return r


# --- create --------------------------------------------------------------------------------------


async def test_create_answers_201_with_location_etag_and_normalised_rules(
    client: httpx.AsyncClient, tenant: dict[str, Any]
) -> None:
    rules = [SPEND, {"type": "provider-keys", "allow": ["OpenAI", "openai", "anthropic"]},
             {"type": "min-seller-reputation", "successRate": 0.9, "minRuns": 20},
             {"type": "rate-limit", "tasks": 10, "perSeconds": 60},
             {"type": "price-ceiling", "max": {"amount": 100, "currency": "USD"}, "capability": "translate"},
             {"type": "sellers", "deny": [str(uuid.uuid4())]}, CAPS]
    r = await client.post("/v1/policies", headers=tenant["headers"], json={
        "name": " budget ", "description": "monthly cap", "rules": rules, "mode": "shadow",
        "scope": {"type": "labels", "labels": {"team": "a"}}})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["name"] == "budget" and body["accountId"] == tenant["id"] and body["platform"] is False
    assert body["mode"] == "shadow" and body["scope"] == {"type": "labels", "labels": {"team": "a"}}
    assert body["rules"][1] == {"type": "provider-keys", "allow": ["openai", "anthropic"]}
    assert body["rules"][0] == SPEND and body["rules"][2:] == rules[2:]
    assert body["version"] == 1
    assert r.headers["location"] == f"/v1/policies/{body['id']}" and r.headers["etag"] == '"1"'
    got = await client.get(r.headers["location"], headers=tenant["headers"])  # read-your-writes, no header needed
    assert got.status_code == 200 and got.json() == body and got.headers["etag"] == '"1"'


async def test_defaults_are_account_scope_and_enforce(client: httpx.AsyncClient, tenant: dict[str, Any]) -> None:
    body = (await create(client, tenant["headers"])).json()
    assert body["scope"] == {"type": "account"} and body["mode"] == "enforce" and body["description"] == ""


@pytest.mark.parametrize("payload", [
    {"name": "x", "rules": [{"type": "teleport"}]},
    {"name": "x", "rules": [{"type": "capabilities", "allow": ["a"], "deny": ["b"]}]},
    {"name": "x", "rules": [{"type": "capabilities"}]},
    {"name": "x", "rules": [{"type": "provider-keys", "deny": ["not a key"]}]},
    {"name": "x", "rules": [{"type": "min-seller-reputation", "successRate": 1.5, "minRuns": 1}]},
    {"name": "x", "rules": [{"type": "rate-limit", "tasks": 0, "perSeconds": 60}]},
    {"name": "x", "rules": [{"type": "spend-limit", "amount": {"amount": 1, "currency": "usd"}, "period": "day"}]},
    {"name": "x", "rules": [{"type": "spend-limit", "amount": {"amount": 1, "currency": "USD"}, "period": "year"}]},
    {"name": "x", "rules": [CAPS], "mode": "sometimes"},
    {"name": "x", "rules": [CAPS], "scope": {"type": "machines", "machineIds": []}},
    {"name": "x", "rules": [CAPS], "colour": "blue"},
    {"name": "   ", "rules": [CAPS]},
    {"rules": [CAPS]},
])
async def test_invalid_definitions_are_400(client: httpx.AsyncClient, tenant: dict[str, Any],
                                           payload: dict[str, Any]) -> None:
    assert_problem(await client.post("/v1/policies", json=payload, headers=tenant["headers"]), 400,
                   "VALIDATION_ERROR")


async def test_an_idempotent_retry_defines_one_policy(client: httpx.AsyncClient, tenant: dict[str, Any]) -> None:
    h = {**tenant["headers"], "Idempotency-Key": f"p-{uuid.uuid4()}"}
    payload = {"name": "once", "rules": [CAPS]}
    first = await client.post("/v1/policies", json=payload, headers=h)
    second = await client.post("/v1/policies", json=payload, headers=h)
    assert first.status_code == second.status_code == 201 and second.json()["id"] == first.json()["id"]
    listed = await client.get("/v1/policies", headers=fresh(tenant["headers"], second))
    # Platform policies (other tests define some) are listed to every tenant; this account's own are one.
    assert [p["id"] for p in listed.json()["data"] if not p["platform"]] == [first.json()["id"]]


# --- platform policies and tenancy ---------------------------------------------------------------


async def test_only_admins_define_platform_policies_which_every_tenant_sees_but_cannot_change(
    client: httpx.AsyncClient, tenant: dict[str, Any], admin: dict[str, str]
) -> None:
    refused = await client.post("/v1/policies", json={"name": "x", "rules": [CAPS], "platform": True},
                                headers=tenant["headers"])
    assert_problem(refused, 403, "PERMISSION_DENIED")
    platform = await create(client, admin, platform=True, mode="disabled")
    pid = platform.json()["id"]
    seen = await client.get(f"/v1/policies/{pid}", headers=tenant["headers"])
    assert seen.status_code == 200 and seen.json()["platform"] is True
    listed = await client.get("/v1/policies", headers=fresh(tenant["headers"], platform))
    assert pid in [p["id"] for p in listed.json()["data"]]
    change = await client.patch(f"/v1/policies/{pid}", json={"mode": "enforce"}, headers=tenant["headers"])
    assert_problem(change, 403, "PERMISSION_DENIED")
    assert (await client.patch(f"/v1/policies/{pid}", json={"name": "renamed"}, headers=admin)).status_code == 200


async def test_a_platform_policys_history_does_not_name_the_admin_to_tenants(
    client: httpx.AsyncClient, tenant: dict[str, Any], admin: dict[str, str]
) -> None:
    platform = await create(client, admin, platform=True, mode="disabled")
    pid = platform.json()["id"]
    revised = await client.patch(f"/v1/policies/{pid}", json={"name": "renamed"}, headers=admin)
    assert revised.status_code == 200, revised.text
    theirs = await client.get(f"/v1/policies/{pid}/versions", headers=fresh(tenant["headers"], revised))
    assert [v["actor"] for v in theirs.json()["data"]] == [None, None]
    ours = await client.get(f"/v1/policies/{pid}/versions", headers=fresh(admin, revised))
    assert all(v["actor"] for v in ours.json()["data"])
    events = await client.get(f"/v1/streams/{pid}/events", headers=tenant["headers"])
    assert events.status_code == 200 and [e["version"] for e in events.json()["data"]] == [1, 2]
    assert {v for e in events.json()["data"] for v in e["metadata"].values()} == {None}
    assert events.json()["data"][1]["data"]["changed"] == ["name"]
    seen = await client.get(f"/v1/streams/{pid}/events", headers=admin)
    assert all(e["metadata"]["actor"] and e["metadata"]["requestId"] for e in seen.json()["data"])


async def test_another_accounts_policy_is_404_everywhere(
    client: httpx.AsyncClient, tenant: dict[str, Any], admin: dict[str, str]
) -> None:
    other = await new_tenant(client, admin)
    r = await create(client, other["headers"])
    pid = r.json()["id"]
    for call in (client.get(f"/v1/policies/{pid}", headers=tenant["headers"]),
                 client.get(f"/v1/policies/{pid}/versions", headers=tenant["headers"]),
                 client.patch(f"/v1/policies/{pid}", json={"mode": "shadow"}, headers=tenant["headers"])):
        assert_problem(await call, 404, "NOT_FOUND")
    listed = await client.get("/v1/policies", headers=fresh(tenant["headers"], r))
    assert pid not in [p["id"] for p in listed.json()["data"]]
    assert (await client.get(f"/v1/policies/{pid}", headers=admin)).status_code == 200  # admins see all
    assert_problem(await client.get(f"/v1/policies/{uuid.uuid4()}", headers=tenant["headers"]), 404, "NOT_FOUND")


# --- revise and versions -------------------------------------------------------------------------


async def test_patch_with_if_match_makes_a_version_and_a_stale_etag_is_412(
    client: httpx.AsyncClient, tenant: dict[str, Any]
) -> None:
    r = await create(client, tenant["headers"])
    pid, h = r.json()["id"], tenant["headers"]
    changed = await client.patch(f"/v1/policies/{pid}", json={"mode": "shadow", "rules": [SPEND]},
                                 headers={**h, "If-Match": '"1"'})
    assert changed.status_code == 200, changed.text
    assert changed.json()["version"] == 2 and changed.headers["etag"] == '"2"'
    assert changed.json()["rules"] == [SPEND] and changed.json()["mode"] == "shadow"
    stale = await client.patch(f"/v1/policies/{pid}", json={"mode": "enforce"}, headers={**h, "If-Match": '"1"'})
    assert_problem(stale, 412, "PRECONDITION_FAILED")
    same = await client.patch(f"/v1/policies/{pid}", json={"mode": "shadow"}, headers=h)  # changes nothing
    assert same.status_code == 200 and same.json()["version"] == 2
    bad = await client.patch(f"/v1/policies/{pid}", json={"rules": [{"type": "capabilities"}]}, headers=h)
    assert_problem(bad, 400, "VALIDATION_ERROR")
    got = await client.get(f"/v1/policies/{pid}", headers=h)
    assert got.json()["version"] == 2 and got.json()["rules"] == [SPEND]


async def test_every_version_is_kept_and_paged(client: httpx.AsyncClient, tenant: dict[str, Any]) -> None:
    r = await create(client, tenant["headers"], name="v1")
    pid, h = r.json()["id"], tenant["headers"]
    for n in range(2, 5):
        last = await client.patch(f"/v1/policies/{pid}", json={"name": f"v{n}"}, headers=h)
        assert last.status_code == 200
    mode = await client.patch(f"/v1/policies/{pid}", json={"mode": "disabled"}, headers=h)
    versions, pages = [], 0
    cursor = None
    while True:
        page = await client.get(f"/v1/policies/{pid}/versions", headers=fresh(h, mode),
                                params={"limit": 2, **({"cursor": cursor} if cursor else {})})
        assert page.status_code == 200, page.text
        versions += page.json()["data"]
        pages += 1
        cursor = page.json()["nextCursor"]
        if cursor is None:
            break
    assert pages == 3
    assert [v["version"] for v in versions] == [1, 2, 3, 4, 5]
    assert [v["name"] for v in versions] == ["v1", "v2", "v3", "v4", "v4"]
    assert versions[-1]["mode"] == "disabled" and versions[-1]["changed"] == ["mode"]
    assert versions[0]["rules"] == [CAPS] and versions[0]["actor"].startswith("api-key:")
    bad = await client.get(f"/v1/policies/{pid}/versions", params={"cursor": "bm9wZQ"}, headers=h)
    assert_problem(bad, 400, "VALIDATION_ERROR")


async def test_policy_changes_are_in_the_audit_feed(client: httpx.AsyncClient, tenant: dict[str, Any]) -> None:
    r = await create(client, tenant["headers"])
    pid = r.json()["id"]
    last = await client.patch(f"/v1/policies/{pid}", json={"mode": "shadow"}, headers=tenant["headers"])
    feed = await audit_feed(client, tenant["headers"], last)
    mine = [e for e in feed if e["subject"] == f"policy:{pid}"]
    assert [e["type"] for e in mine] == ["policy.created", "policy.updated"]
    assert mine[1]["data"]["changed"] == ["mode"]


# --- list filters --------------------------------------------------------------------------------


async def test_list_filters_by_mode_and_by_the_machine_governed(
    client: httpx.AsyncClient, tenant: dict[str, Any], admin: dict[str, str]
) -> None:
    h = tenant["headers"]
    machine = (await active_machine(client, h, labels={"team": "a", "tier": "gold"})).json()
    other_machine = (await active_machine(client, h, labels={"team": "b"})).json()
    whole = await create(client, h, name="whole")
    listed = await create(client, h, name="listed", mode="shadow",
                          scope={"type": "machines", "machineIds": [machine["id"]]})
    labelled = await create(client, h, name="labelled", scope={"type": "labels", "labels": {"tier": "gold"}})
    elsewhere = await create(client, h, name="elsewhere", scope={"type": "labels", "labels": {"team": "b"}})
    off = await create(client, h, name="off", mode="disabled")
    fh = fresh(h, off)

    async def names(**params: Any) -> list[str]:
        r = await client.get("/v1/policies", params=params, headers=fh)
        assert r.status_code == 200, r.text
        return [p["name"] for p in r.json()["data"] if not p["platform"]]

    assert await names() == ["whole", "listed", "labelled", "elsewhere", "off"]
    assert await names(mode="shadow") == ["listed"]
    assert await names(mode=["enforce", "disabled"]) == ["whole", "labelled", "elsewhere", "off"]
    assert await names(machineId=machine["id"]) == ["whole", "listed", "labelled"]  # disabled ones govern nothing
    assert await names(machineId=other_machine["id"]) == ["whole", "elsewhere"]
    ids, pages = await walk_pages(client, "/v1/policies", fh, 2)
    mine = [i for i in ids if i in {r.json()["id"] for r in (whole, listed, labelled, elsewhere, off)}]
    assert len(mine) == 5 and len(ids) == len(set(ids)) and pages >= 3
    stranger = await new_tenant(client, admin)
    theirs = (await active_machine(client, stranger["headers"])).json()
    assert_problem(await client.get("/v1/policies", params={"machineId": theirs["id"]}, headers=h), 404, "NOT_FOUND")
    assert_problem(await client.get("/v1/policies", params={"cursor": "x"}, headers=h), 400, "VALIDATION_ERROR")

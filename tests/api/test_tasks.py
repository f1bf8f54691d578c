"""Tasks over HTTP: submit, read (read-your-writes), list with filters and pages, cancel, guards, isolation."""

from __future__ import annotations

import uuid
from typing import Any

import httpx

from app.container import Container
from tests.api.helpers import action, active_machine, assert_problem, audit_feed, fresh, new_tenant, register
from tests.api.task_helpers import buyer, capability, submit, task_url


async def test_submit_then_read_it_back(client: httpx.AsyncClient, tenant: dict[str, Any]) -> None:
    h = tenant["headers"]
    mid, cap = await buyer(client, h), capability()
    body = {"capability": f"  {cap} ", "input": {"text": "hi", "n": [1, 2]}, "auto": False,
            "constraints": {"maxPrice": {"amount": 500, "currency": "USD"}, "providerKeys": ["OpenAI"],
                            "sellers": {"deny": [str(uuid.uuid4())]}, "strategy": "cheapest", "fallbacks": 1,
                            "timeoutMs": 5000}}
    r = await client.post(f"/v1/machines/{mid}/tasks", headers=h, json=body)
    assert r.status_code == 201, r.text
    task = r.json()
    assert r.headers["location"] == task_url(mid, task["id"]) and r.headers["etag"] == '"1"'
    assert task["capability"] == cap and task["status"] == "queued" and task["machineId"] == mid
    assert task["accountId"] == tenant["id"] and task["input"] == {"text": "hi", "n": [1, 2]}
    k = task["constraints"]
    assert k["providerKeys"] == ["openai"] and k["maxPrice"] == {"amount": 500, "currency": "USD"}
    assert k["strategy"] == "cheapest" and k["fallbacks"] == 1 and k["timeoutMs"] == 5000
    assert task["candidatesCount"] == 0 and task["routeId"] is None and task["outcomeCode"] is None
    got = await client.get(r.headers["location"], headers=h)  # no X-Min-Position: read-your-writes
    assert got.status_code == 200, got.text
    assert got.json() == task and got.headers["etag"] == '"1"'


async def test_defaults(client: httpx.AsyncClient, tenant: dict[str, Any]) -> None:
    h = tenant["headers"]
    mid = await buyer(client, h)
    r = await client.post(f"/v1/machines/{mid}/tasks", headers=h, json={"capability": "x"})
    assert r.status_code == 201, r.text
    t = r.json()
    assert t["input"] is None and t["auto"] is False
    assert t["constraints"] == {"maxPrice": None, "providerKeys": [], "sellers": {"allow": [], "deny": []},
                                "strategy": "balanced", "fallbacks": 2, "timeoutMs": 30000}


async def test_list_filters_and_pages(client: httpx.AsyncClient, tenant: dict[str, Any]) -> None:
    h = tenant["headers"]
    mid, a, b = await buyer(client, h), capability(), capability()
    ids = [(await submit(client, h, mid, a if i % 2 == 0 else b)).json()["id"] for i in range(5)]
    last = await client.post(task_url(mid, ids[0], "cancel"), headers=h, json={"reason": "changed my mind"})
    assert last.status_code == 200 and last.json()["status"] == "cancelled", last.text
    hh = fresh(h, last)
    seen: list[str] = []
    cursor = None
    while True:
        r = await client.get(f"/v1/machines/{mid}/tasks", headers=hh,
                             params={"limit": 2, **({"cursor": cursor} if cursor else {})})
        assert r.status_code == 200, r.text
        seen += [t["id"] for t in r.json()["data"]]
        cursor = r.json()["nextCursor"]
        if cursor is None:
            break
    assert seen == ids
    r = await client.get(f"/v1/machines/{mid}/tasks", headers=hh, params={"capability": b})
    assert [t["id"] for t in r.json()["data"]] == [ids[1], ids[3]]
    r = await client.get(f"/v1/machines/{mid}/tasks", headers=hh, params={"status": ["cancelled", "resolved"]})
    assert [t["id"] for t in r.json()["data"]] == [ids[0]]
    r = await client.get(f"/v1/machines/{mid}/tasks", headers=hh, params={"cursor": "garbage"})
    assert_problem(r, 400, "VALIDATION_ERROR")


async def test_cancel(client: httpx.AsyncClient, tenant: dict[str, Any]) -> None:
    h = tenant["headers"]
    mid = await buyer(client, h)
    tid = (await submit(client, h, mid, capability())).json()["id"]
    r = await client.post(task_url(mid, tid, "cancel"), headers=h)
    assert r.status_code == 200 and r.json()["status"] == "cancelled", r.text
    again = await client.post(task_url(mid, tid, "cancel"), headers=h)
    assert again.status_code == 200 and again.json()["version"] == r.json()["version"]  # nothing new recorded
    assert_problem(await client.post(task_url(mid, tid, "discover"), headers=h), 409, "INVALID_STATE_TRANSITION")
    outcomes = await client.get(f"/v1/machines/{mid}/outcomes", headers=fresh(h, r), params={"taskId": tid})
    [o] = outcomes.json()["data"]
    assert o["status"] == "cancelled" and o["output"] is None and o["runId"] is None


async def test_audit_names(client: httpx.AsyncClient, tenant: dict[str, Any]) -> None:
    h = tenant["headers"]
    mid = await buyer(client, h)
    tid = (await submit(client, h, mid, capability())).json()["id"]
    last = await client.post(task_url(mid, tid, "cancel"), headers=h)
    types = [e["type"] for e in await audit_feed(client, h, last, subject=f"task:{tid}")]
    assert types == ["task.created", "task.cancelled"], types


def _nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


async def test_validation(client: httpx.AsyncClient, tenant: dict[str, Any]) -> None:
    h = tenant["headers"]
    mid = await buyer(client, h)
    url = f"/v1/machines/{mid}/tasks"
    for bad in ({}, {"capability": ""}, {"capability": "x", "extra": 1},
                {"capability": "x", "constraints": {"fallbacks": 6}},
                {"capability": "x", "constraints": {"timeoutMs": 99}},
                {"capability": "x", "constraints": {"strategy": "random"}},
                {"capability": "x", "constraints": {"maxPrice": {"amount": -1, "currency": "USD"}}},
                {"capability": "x", "input": {"deep": _nested(40)}}):
        assert_problem(await client.post(url, headers=h, json=bad), 400, "VALIDATION_ERROR")
    big = {"capability": "x", "input": {"text": "a" * 70_000}}
    r = await client.post(url, headers=h, json=big)
    assert_problem(r, 400, "VALIDATION_ERROR")
    assert_problem(await client.get(f"{url}/{uuid.uuid4()}", headers=h), 404, "NOT_FOUND")


async def test_machine_guards(client: httpx.AsyncClient, tenant: dict[str, Any]) -> None:
    h = tenant["headers"]
    r, _ = await register(client, h)
    fresh_mid = r.json()["id"]
    for call in (client.post(f"/v1/machines/{fresh_mid}/tasks", headers=h, json={"capability": "x"}),
                 client.get(f"/v1/machines/{fresh_mid}/tasks", headers=h),
                 client.get(f"/v1/machines/{fresh_mid}/outcomes", headers=h),
                 client.get("/v1/runs", params={"machineId": fresh_mid}, headers=h)):
        assert_problem(await call, 409, "MACHINE_NOT_ACTIVATED")
    mid = await buyer(client, h)
    tid = (await submit(client, h, mid, capability())).json()["id"]
    assert (await action(client, h, mid, "suspend")).status_code == 200
    for call in (client.post(f"/v1/machines/{mid}/tasks", headers=h, json={"capability": "x"}),
                 client.get(task_url(mid, tid), headers=h), client.post(task_url(mid, tid, "discover"), headers=h),
                 client.post(task_url(mid, tid, "resolve"), headers=h),
                 client.post(task_url(mid, tid, "execute"), headers=h),
                 client.post(task_url(mid, tid, "cancel"), headers=h),
                 client.get(f"/v1/machines/{mid}/routes", headers=h)):
        assert_problem(await call, 409, "MACHINE_NOT_ACTIVE")


async def test_tenant_isolation(client: httpx.AsyncClient, tenant: dict[str, Any], admin: dict[str, str]) -> None:
    h = tenant["headers"]
    mid = await buyer(client, h)
    created = await submit(client, h, mid, capability())
    tid = created.json()["id"]
    other = (await new_tenant(client, admin))["headers"]
    other_mid = (await active_machine(client, other)).json()["id"]
    for call in (client.get(task_url(mid, tid), headers=other), client.get(f"/v1/machines/{mid}/tasks", headers=other),
                 client.post(task_url(mid, tid, "cancel"), headers=other),
                 client.post(task_url(mid, tid, "discover"), headers=other),
                 client.post(task_url(mid, tid, "resolve"), headers=other, params={"dryRun": "true"}),
                 client.post(task_url(mid, tid, "execute"), headers=other),
                 client.get(f"/v1/machines/{mid}/routes", headers=other),
                 client.get(f"/v1/machines/{mid}/outcomes", headers=other),
                 client.get("/v1/runs", params={"machineId": mid}, headers=other),
                 # the other tenant's own machine does not reach this task either
                 client.get(task_url(other_mid, tid), headers=other),
                 client.post(task_url(other_mid, tid, "cancel"), headers=other)):
        assert_problem(await call, 404, "NOT_FOUND")
    listed = await client.get(f"/v1/machines/{mid}/tasks", headers=fresh(admin, created))
    assert [t["id"] for t in listed.json()["data"]] == [tid]  # an admin sees every account's


async def test_idempotent_submit(client: httpx.AsyncClient, tenant: dict[str, Any], container: Container) -> None:
    h = {**tenant["headers"], "Idempotency-Key": f"task-{uuid.uuid4()}"}
    mid = await buyer(client, tenant["headers"])
    first = await client.post(f"/v1/machines/{mid}/tasks", headers=h, json={"capability": "x"})
    second = await client.post(f"/v1/machines/{mid}/tasks", headers=h, json={"capability": "x"})
    assert first.status_code == second.status_code == 201
    assert second.headers["idempotent-replayed"] == "true" and second.json() == first.json()
    count = await container.pool.fetchval("SELECT count(*) FROM events WHERE stream_id = $1",
                                          uuid.UUID(first.json()["id"]))
    assert count == 1

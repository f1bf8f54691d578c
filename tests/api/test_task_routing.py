"""Discover and resolve over HTTP against the real catalogue: candidates, drops with reasons, the explained route,
dry runs that record nothing, NO_ROUTE."""

from __future__ import annotations

import uuid
from typing import Any

import httpx

from app.container import Container
from tests.api.helpers import assert_problem, fresh
from tests.api.task_helpers import (
    buyer,
    capability,
    caught_up,
    listing,
    resolved_task,
    seller,
    submit,
    task_url,
)


async def _events(container: Container, task_id: str) -> list[str]:
    rows = await container.pool.fetch("SELECT type FROM events WHERE stream_id = $1 ORDER BY version",
                                      uuid.UUID(task_id))
    return [r["type"].rpartition(".")[2] for r in rows]


async def test_discover_resolve_and_explain(client: httpx.AsyncClient, tenant: dict[str, Any],
                                            container: Container) -> None:
    h, cap = tenant["headers"], capability()
    cheap_mid, cheap, _ = await seller(client, h, cap, price=100)
    dear_mid, dear, last = await seller(client, h, cap, price=300)
    bid = await buyer(client, h)
    await caught_up(container, last, "catalogue")
    tid = (await submit(client, h, bid, cap, constraints={"strategy": "cheapest", "fallbacks": 1})).json()["id"]
    r = await client.post(task_url(bid, tid, "discover"), headers=h)
    assert r.status_code == 200, r.text
    task = r.json()
    assert task["status"] == "discovered" and task["candidatesCount"] == 2 and task["dropped"] == []
    assert {c["listingId"] for c in task["candidates"]} == {cheap, dear}
    by_listing = {c["listingId"]: c for c in task["candidates"]}
    assert by_listing[cheap]["price"] == {"amount": 100, "currency": "USD"}
    assert by_listing[cheap]["sellerMachineId"] == cheap_mid and by_listing[dear]["sellerMachineId"] == dear_mid

    r = await client.post(task_url(bid, tid, "resolve"), headers=h)
    assert r.status_code == 201, r.text
    route = r.json()
    assert r.headers["location"] == f"/v1/machines/{bid}/routes/{route['id']}"
    assert route["dryRun"] is False and route["taskId"] == tid and route["strategy"] == "cheapest"
    assert route["chosen"]["listingId"] == cheap and [s["listingId"] for s in route["steps"]] == [cheap, dear]
    ranked = route["explanation"]["ranked"]
    assert [(s["rank"], s["candidate"]["listingId"]) for s in ranked] == [(1, cheap), (2, dear)]
    assert ranked[0]["score"] == 1.0 and ranked[1]["score"] == 0.0
    assert ranked[0]["reason"].startswith("place 1 of 2 by cheapest") and ranked[0]["features"]["price"] == 1.0
    assert ranked[0]["record"] == {"runs": 0, "successRate": None, "p50LatencyMs": None, "coolingDown": False}

    got = await client.get(r.headers["location"], headers=h)  # read-your-writes without X-Min-Position
    assert got.status_code == 200 and got.json() == route
    listed = await client.get(f"/v1/machines/{bid}/routes", headers=h, params={"taskId": tid})
    assert listed.json()["data"] == [route]
    t = (await client.get(task_url(bid, tid), headers=h)).json()
    assert t["status"] == "resolved" and t["routeId"] == route["id"]
    assert await _events(container, tid) == ["Submitted", "Discovered", "Resolved"]
    assert_problem(await client.post(task_url(bid, tid, "discover"), headers=h), 409, "INVALID_STATE_TRANSITION")


async def test_discovery_drops_are_explained(client: httpx.AsyncClient, tenant: dict[str, Any],
                                             container: Container) -> None:
    h, cap = tenant["headers"], capability()
    ok_mid, ok, _ = await seller(client, h, cap, price=100)
    _, mismatch, _ = await seller(client, h, cap, price=50,
                                  schema={"type": "object", "required": ["pages"],
                                          "properties": {"pages": {"type": "integer"}}})
    denied_mid, denied, _ = await seller(client, h, cap, price=60)
    _, dear, _ = await seller(client, h, cap, price=900)
    _, euro, _ = await seller(client, h, cap, price=10, currency="EUR")
    bid = await buyer(client, h)
    own, last = await listing(client, h, bid, cap, price=1)  # the buyer lists the capability itself
    await caught_up(container, last, "catalogue")
    constraints = {"maxPrice": {"amount": 500, "currency": "USD"}, "sellers": {"deny": [denied_mid]}}
    tid = (await submit(client, h, bid, cap, constraints=constraints)).json()["id"]
    r = await client.post(task_url(bid, tid, "discover"), headers=h)
    assert r.status_code == 200, r.text
    task = r.json()
    assert [c["listingId"] for c in task["candidates"]] == [ok]
    reasons = {d["listingId"]: d["reason"] for d in task["dropped"]}
    assert reasons[own] == "the buyer's own listing"
    assert reasons[mismatch].startswith("input does not match the listing's inputSchema")
    assert reasons[denied] == "seller in constraints.sellers.deny"
    assert "above constraints.maxPrice" in reasons[dear] and "above constraints.maxPrice" in reasons[euro]
    assert set(reasons) == {own, mismatch, denied, dear, euro}

    resolved = await client.post(task_url(bid, tid, "resolve"), headers=h)
    route = resolved.json()
    assert route["chosen"]["sellerMachineId"] == ok_mid
    assert {d["listingId"] for d in route["explanation"]["dropped"]} == set(reasons)
    listed = await client.get(f"/v1/machines/{bid}/routes", headers=fresh(h, resolved))
    assert listed.json()["data"][0]["explanation"]["dropped"] == route["explanation"]["dropped"]


async def test_dry_run_records_nothing(client: httpx.AsyncClient, tenant: dict[str, Any],
                                       container: Container) -> None:
    h, cap = tenant["headers"], capability()
    _, offered, last = await seller(client, h, cap)
    bid = await buyer(client, h)
    await caught_up(container, last, "catalogue")
    tid = (await submit(client, h, bid, cap)).json()["id"]
    discovered = await client.post(task_url(bid, tid, "discover"), headers=h)
    before = await _events(container, tid)
    r = await client.post(task_url(bid, tid, "resolve"), headers=h, params={"dryRun": "true"})
    assert r.status_code == 200, r.text
    preview = r.json()
    assert preview["dryRun"] is True and preview["id"] is None and preview["createdAt"] is None
    assert preview["chosen"]["listingId"] == offered and len(preview["explanation"]["ranked"]) == 1
    assert "location" not in r.headers
    assert await _events(container, tid) == before == ["Submitted", "Discovered"]
    routes = await client.get(f"/v1/machines/{bid}/routes", headers=fresh(h, discovered), params={"taskId": tid})
    assert routes.json()["data"] == []
    real = (await client.post(task_url(bid, tid, "resolve"), headers=h)).json()
    assert real["explanation"] == preview["explanation"] and real["steps"] == preview["steps"]


async def test_no_route(client: httpx.AsyncClient, tenant: dict[str, Any]) -> None:
    h = tenant["headers"]
    bid = await buyer(client, h)
    tid = (await submit(client, h, bid, capability())).json()["id"]
    body = assert_problem(await client.post(task_url(bid, tid, "resolve"), headers=h), 409,
                          "INVALID_STATE_TRANSITION")
    assert "discover" in body["detail"]
    r = await client.post(task_url(bid, tid, "discover"), headers=h)
    assert r.status_code == 200 and r.json()["candidatesCount"] == 0
    for params in ({}, {"dryRun": "true"}):
        body = assert_problem(await client.post(task_url(bid, tid, "resolve"), headers=h, params=params), 409,
                              "NO_ROUTE")
        assert "discovery found no listing" in body["detail"]


async def test_resolve_again_records_a_new_route(client: httpx.AsyncClient, tenant: dict[str, Any],
                                                 container: Container) -> None:
    h, cap = tenant["headers"], capability()
    _, _, last = await seller(client, h, cap)
    bid = await buyer(client, h)
    tid, first = await resolved_task(client, container, h, bid, cap, last)
    r = await client.post(task_url(bid, tid, "resolve"), headers=h)
    assert r.status_code == 201 and r.json()["id"] != first["id"]
    routes = await client.get(f"/v1/machines/{bid}/routes", headers=fresh(h, r), params={"taskId": tid})
    assert [x["id"] for x in routes.json()["data"]] == [first["id"], r.json()["id"]]
    assert (await client.get(task_url(bid, tid), headers=h)).json()["routeId"] == r.json()["id"]


async def test_idempotent_discover_and_resolve(client: httpx.AsyncClient, tenant: dict[str, Any],
                                               container: Container) -> None:
    h, cap = tenant["headers"], capability()
    _, _, last = await seller(client, h, cap)
    bid = await buyer(client, h)
    await caught_up(container, last, "catalogue")
    tid = (await submit(client, h, bid, cap)).json()["id"]
    for action in ("discover", "resolve"):
        key = {**h, "Idempotency-Key": f"{action}-{uuid.uuid4()}"}
        first = await client.post(task_url(bid, tid, action), headers=key)
        again = await client.post(task_url(bid, tid, action), headers=key)
        assert first.status_code == again.status_code and first.status_code in (200, 201), first.text
        assert again.headers["idempotent-replayed"] == "true" and again.json() == first.json()
    assert await _events(container, tid) == ["Submitted", "Discovered", "Resolved"]
    other = {**h, "Idempotency-Key": f"resolve-{uuid.uuid4()}"}
    assert_problem(await client.post(task_url(bid, tid, "resolve"), headers=other, params={"dryRun": "maybe"}),
                   400, "VALIDATION_ERROR")

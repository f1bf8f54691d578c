"""GET /v1/catalogue: listings every account sees, filters, pages, and never an endpoint URL or token."""

from __future__ import annotations

import uuid
from typing import Any

import httpx

from domain.shared.ids import derived_id
from tests.api.helpers import action, active_machine, assert_problem, fresh, new_tenant, walk_pages

URL, TOKEN = "https://seller-hidden-host.example/v1/run", "tok-" + uuid.uuid4().hex


async def seller(client: httpx.AsyncClient, h: dict[str, str], capability: str,
                 offers: list[tuple[int, str, str]]) -> tuple[str, dict[str, str], httpx.Response]:
    """An activated machine with an active capability node and an endpoint per (price, currency, providerKey)."""
    mid = (await active_machine(client, h, name="Seller One")).json()["id"]
    ids: dict[str, str] = {}
    last: httpx.Response | None = None
    for price, currency, key in offers:
        data = {"name": capability, "price": {"amount": price, "currency": currency}, "providerKey": key,
                "inputSchema": {"type": "object", "properties": {"text": {"type": "string"}}}}
        r = await client.post(f"/v1/machines/{mid}/graph/nodes", headers=h,
                              json={"type": "capability", "label": capability, "status": "active", "data": data})
        assert r.status_code == 201, r.text
        ids[key] = str(derived_id("listing", uuid.UUID(r.json()["id"])))
        last = await client.put(f"/v1/machines/{mid}/runtime-endpoints/{key}", headers=h,
                                json={"url": URL, "authToken": TOKEN})
        assert last.status_code in (200, 201), last.text
    assert last is not None
    return mid, ids, last


async def test_a_listing_is_shown_to_every_account_without_secrets(
    client: httpx.AsyncClient, tenant: dict[str, Any], admin: dict[str, str]
) -> None:
    h, cap = tenant["headers"], f"summarise-{uuid.uuid4().hex[:6]}"
    mid, ids, last = await seller(client, h, cap, [(250, "USD", "openai")])
    other = (await new_tenant(client, admin))["headers"]
    r = await client.get("/v1/catalogue", params={"capability": cap}, headers=fresh(other, last))
    assert r.status_code == 200, r.text
    assert URL not in r.text and TOKEN not in r.text and "hidden-host" not in r.text and "authToken" not in r.text
    page = r.json()
    assert page["nextCursor"] is None and len(page["data"]) == 1
    item = page["data"][0]
    assert item["id"] == ids["openai"]
    assert item["capability"] == cap and item["seller"] == {"machineId": mid, "name": "Seller One"}
    assert item["price"] == {"amount": 250, "currency": "USD"} and item["providerKey"] == "openai"
    assert item["inputSchema"]["properties"] == {"text": {"type": "string"}}
    assert item["health"]["endpointStatus"] == "active" and item["health"]["source"] == "manual"
    assert item["health"]["leaseExpiresAt"] is None and item["health"]["lastSeenAt"]
    assert item["reputation"] == {"runs": 0, "successRate": None, "p50LatencyMs": None}
    assert item["coolingDown"] is False
    one = await client.get(f"/v1/catalogue/{ids['openai']}", headers=other)
    assert one.status_code == 200 and one.json() == item
    assert URL not in one.text and TOKEN not in one.text


async def test_filters_and_pages(client: httpx.AsyncClient, tenant: dict[str, Any]) -> None:
    h, cap = tenant["headers"], f"translate-{uuid.uuid4().hex[:6]}"
    offers = [(100, "USD", "a"), (200, "USD", "b"), (300, "EUR", "c"), (50, "USD", "d"), (400, "USD", "e")]
    mid, ids, last = await seller(client, h, cap, offers)
    hh = fresh(h, last)

    async def found(**params: Any) -> set[str]:
        r = await client.get("/v1/catalogue", params={"capability": cap, **params}, headers=hh)
        assert r.status_code == 200, r.text
        return {item["id"] for item in r.json()["data"]}

    assert await found() == set(ids.values())
    assert await found(providerKey="B") == {ids["b"]}
    assert await found(maxPrice=200, currency="USD") == {ids["a"], ids["b"], ids["d"]}
    assert await found(currency="EUR") == {ids["c"]}
    assert await found(seller=mid) == set(ids.values())
    assert await found(seller=str(uuid.uuid4())) == set()
    assert await found(capability=cap.upper()) == set()

    seen, pages = await walk_pages(client, "/v1/catalogue", hh, 2, capability=cap)
    assert sorted(seen) == sorted(ids.values()) and seen == sorted(seen) and pages == 3

    assert_problem(await client.get("/v1/catalogue", params={"maxPrice": 5}, headers=h), 400, "VALIDATION_ERROR")
    assert_problem(await client.get("/v1/catalogue", params={"cursor": "bm90LWEtY3Vyc29y"}, headers=h), 400,
                   "VALIDATION_ERROR")
    assert_problem(await client.get("/v1/catalogue", params={"currency": "usd"}, headers=h), 400, "VALIDATION_ERROR")
    assert_problem(await client.get("/v1/catalogue", params={"limit": 0}, headers=h), 400, "VALIDATION_ERROR")


async def test_a_listing_leaves_when_its_machine_is_suspended_and_returns(
    client: httpx.AsyncClient, tenant: dict[str, Any]
) -> None:
    h, cap = tenant["headers"], f"ocr-{uuid.uuid4().hex[:6]}"
    mid, ids, last = await seller(client, h, cap, [(10, "USD", "ocr")])
    assert (await client.get(f"/v1/catalogue/{ids['ocr']}", headers=fresh(h, last))).status_code == 200
    suspended = await action(client, h, mid, "suspend")
    assert suspended.status_code == 200, suspended.text
    assert_problem(await client.get(f"/v1/catalogue/{ids['ocr']}", headers=fresh(h, suspended)), 404, "NOT_FOUND")
    r = await client.get("/v1/catalogue", params={"seller": mid}, headers=fresh(h, suspended))
    assert r.json()["data"] == []
    back = await action(client, h, mid, "reactivate")
    assert (await client.get(f"/v1/catalogue/{ids['ocr']}", headers=fresh(h, back))).status_code == 200
    deleted = await client.delete(f"/v1/machines/{mid}/runtime-endpoints/ocr", headers=h)
    assert deleted.status_code == 204
    assert_problem(await client.get(f"/v1/catalogue/{ids['ocr']}", headers=fresh(h, deleted)), 404, "NOT_FOUND")


async def test_authentication_is_required(client: httpx.AsyncClient) -> None:
    assert_problem(await client.get("/v1/catalogue"), 401, "UNAUTHORIZED")
    assert_problem(await client.get(f"/v1/catalogue/{uuid.uuid4()}"), 401, "UNAUTHORIZED")
    assert_problem(await client.get("/v1/catalogue", headers={"Authorization": "Bearer nope"}), 401,
                   "UNAUTHORIZED")

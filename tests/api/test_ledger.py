"""The ledger over HTTP: admin deposits (idempotent), withdrawals that never overdraw, balances and entries."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx

from app.store.types import LogPosition
from tests.api.helpers import assert_problem, fresh


def usd(n: int) -> dict[str, Any]:
    return {"amount": n, "currency": "USD"}


async def deposit(client: httpx.AsyncClient, admin: dict[str, str], account: str, amount: dict[str, Any],
                  key: str | None = None) -> httpx.Response:
    h = {**admin, "Idempotency-Key": key} if key else admin
    return await client.post(f"/v1/accounts/{account}/deposits", json={"amount": amount}, headers=h)


async def test_deposit_then_balance_and_entries(client: httpx.AsyncClient, admin: dict[str, str],
                                                tenant: dict[str, Any]) -> None:
    r = await deposit(client, admin, tenant["id"], usd(1500))
    assert r.status_code == 201, r.text
    assert r.json()["type"] == "ledger.deposited" and r.json()["amount"] == usd(1500)
    r = await deposit(client, admin, tenant["id"], {"amount": 300, "currency": "JPY"})
    assert r.status_code == 201, r.text
    balance = await client.get("/v1/accounts/me/balance", headers=fresh(tenant["headers"], r))
    assert balance.status_code == 200, balance.text
    assert balance.json() == {"data": [
        {"currency": "JPY", "available": {"amount": 300, "currency": "JPY"},
         "escrow": {"amount": 0, "currency": "JPY"}},
        {"currency": "USD", "available": usd(1500), "escrow": usd(0)}]}
    only = await client.get("/v1/accounts/me/balance", params={"currency": "USD"}, headers=tenant["headers"])
    assert [b["currency"] for b in only.json()["data"]] == ["USD"]
    entries = await client.get("/v1/accounts/me/ledger", params={"currency": "USD"}, headers=tenant["headers"])
    (entry,) = entries.json()["data"]
    assert entry["type"] == "ledger.deposited" and entry["ledger"] == "available"
    assert entry["amount"] == usd(1500) and entry["balanceAfter"] == usd(1500)


async def test_withdrawal_never_overdraws(client: httpx.AsyncClient, admin: dict[str, str],
                                          tenant: dict[str, Any]) -> None:
    assert (await deposit(client, admin, tenant["id"], usd(100))).status_code == 201
    r = await client.post("/v1/accounts/me/withdrawals", json={"amount": usd(101)}, headers=tenant["headers"])
    problem = assert_problem(r, 409, "INSUFFICIENT_FUNDS")
    assert problem["extra"]["available"] == 100
    r = await client.post("/v1/accounts/me/withdrawals", json={"amount": usd(60), "reference": "payout-1"},
                          headers=tenant["headers"])
    assert r.status_code == 201, r.text
    assert r.json()["type"] == "ledger.withdrawn" and r.json()["reference"] == "payout-1"
    balance = await client.get("/v1/accounts/me/balance", headers=fresh(tenant["headers"], r))
    assert balance.json()["data"][0]["available"] == usd(40)
    page = await client.get("/v1/accounts/me/ledger", params={"limit": 1}, headers=tenant["headers"])
    assert len(page.json()["data"]) == 1 and page.json()["nextCursor"]
    rest = await client.get("/v1/accounts/me/ledger", params={"cursor": page.json()["nextCursor"]},
                            headers=tenant["headers"])
    assert [e["amount"]["amount"] for e in rest.json()["data"]] == [-60] and rest.json()["nextCursor"] is None
    assert rest.json()["data"][0]["balanceAfter"] == usd(40)


async def test_a_retried_deposit_is_recorded_once(client: httpx.AsyncClient, admin: dict[str, str],
                                                  tenant: dict[str, Any]) -> None:
    key = f"dep-{uuid.uuid4()}"
    first = await deposit(client, admin, tenant["id"], usd(250), key)
    second = await deposit(client, admin, tenant["id"], usd(250), key)
    assert first.status_code == second.status_code == 201 and second.headers["idempotent-replayed"] == "true"
    balance = await client.get("/v1/accounts/me/balance", headers=fresh(tenant["headers"], second))
    assert balance.json()["data"][0]["available"] == usd(250)
    assert_problem(await deposit(client, admin, tenant["id"], usd(251), key), 422, "IDEMPOTENCY_KEY_REUSED")


async def test_deposits_are_for_admins_and_existing_accounts(client: httpx.AsyncClient, admin: dict[str, str],
                                                             tenant: dict[str, Any]) -> None:
    assert_problem(await deposit(client, tenant["headers"], tenant["id"], usd(5)), 403, "PERMISSION_DENIED")
    assert_problem(await deposit(client, admin, str(uuid.uuid4()), usd(5)), 404, "NOT_FOUND")


async def test_currencies_are_iso_4217_with_minor_units(client: httpx.AsyncClient, admin: dict[str, str],
                                                        tenant: dict[str, Any]) -> None:
    for code in ("XYZ", "XAU", "usd"):
        r = await deposit(client, admin, tenant["id"], {"amount": 5, "currency": code})
        assert_problem(r, 400, "VALIDATION_ERROR")
    assert_problem(await deposit(client, admin, tenant["id"], usd(0)), 400, "VALIDATION_ERROR")
    r = await client.get("/v1/accounts/me/balance", params={"currency": "XYZ"}, headers=tenant["headers"])
    assert_problem(r, 400, "VALIDATION_ERROR")
    r = await client.get("/v1/accounts/me/ledger", params={"cursor": "bm9wZQ"}, headers=tenant["headers"])
    assert_problem(r, 400, "VALIDATION_ERROR")


async def test_audit_feed_names_ledger_movements(client: httpx.AsyncClient, admin: dict[str, str],
                                                 tenant: dict[str, Any]) -> None:
    await deposit(client, admin, tenant["id"], usd(10))
    r = await client.post("/v1/accounts/me/withdrawals", json={"amount": usd(10)}, headers=tenant["headers"])
    audit = await client.get("/v1/audit-events", params={"type": ["ledger.deposited", "ledger.withdrawn"]},
                             headers=fresh(tenant["headers"], r))
    assert audit.status_code == 200, audit.text
    assert sorted(e["type"] for e in audit.json()["data"]) == ["ledger.deposited", "ledger.withdrawn"]


async def test_an_empty_currency_filter_is_no_filter(client: httpx.AsyncClient, admin: dict[str, str],
                                                     tenant: dict[str, Any]) -> None:
    r = await deposit(client, admin, tenant["id"], usd(7))
    for path in ("/v1/accounts/me/balance", "/v1/accounts/me/ledger"):
        listed = await client.get(path, params={"currency": ""}, headers=fresh(tenant["headers"], r))
        assert listed.status_code == 200 and len(listed.json()["data"]) == 1, listed.text


async def test_concurrent_withdrawals_over_http_never_overdraw(client: httpx.AsyncClient, admin: dict[str, str],
                                                               tenant: dict[str, Any]) -> None:
    assert (await deposit(client, admin, tenant["id"], usd(100))).status_code == 201
    responses = await asyncio.gather(*(client.post("/v1/accounts/me/withdrawals", json={"amount": usd(30)},
                                                   headers=tenant["headers"]) for _ in range(10)))
    assert sorted(r.status_code for r in responses) == [201] * 3 + [409] * 7, [r.text for r in responses]
    for r in responses:
        if r.status_code == 409:
            assert_problem(r, 409, "INSUFFICIENT_FUNDS")
    done = [r for r in responses if r.status_code == 201]
    last = max(done, key=lambda r: LogPosition.parse(r.headers["x-log-position"]))
    balance = await client.get("/v1/accounts/me/balance", headers=fresh(tenant["headers"], last))
    assert balance.json()["data"][0]["available"] == usd(10)

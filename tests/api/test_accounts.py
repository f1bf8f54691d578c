"""Accounts and API keys over HTTP: who may open accounts, keys shown once, usable at once, revoked at once."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from app.container import Container
from tests.api.helpers import assert_problem, new_tenant


async def test_admin_opens_an_account_with_a_key_that_works_at_once(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    r = await client.post("/v1/accounts", json={"name": "acme"}, headers=admin)
    assert r.status_code == 201, r.text
    body = r.json()
    account, key = body["account"], body["apiKey"]
    assert account["name"] == "acme" and account["isAdmin"] is False and account["createdAt"]
    assert r.headers["location"] == f"/v1/accounts/{account['id']}"
    assert key["key"].startswith("mm_") and key["key"].split("_")[1] == key["prefix"]

    me = await client.get("/v1/accounts/me", headers={"Authorization": f"Bearer {key['key']}"})
    assert me.status_code == 200, me.text
    assert me.json() == account


async def test_only_admins_open_accounts(client: httpx.AsyncClient, tenant: dict[str, Any]) -> None:
    r = await client.post("/v1/accounts", json={"name": "sneaky", "isAdmin": True}, headers=tenant["headers"])
    assert_problem(r, 403, "PERMISSION_DENIED")


@pytest.mark.parametrize("payload", [{}, {"name": ""}, {"name": "x", "plan": "gold"}, {"name": 5}])
async def test_open_account_validates_its_body(
    client: httpx.AsyncClient, admin: dict[str, str], payload: dict[str, Any]
) -> None:
    assert_problem(await client.post("/v1/accounts", json=payload, headers=admin), 400, "VALIDATION_ERROR")


async def test_missing_key_is_401(client: httpx.AsyncClient) -> None:
    for path in ("/v1/machines", "/v1/accounts/me", "/v1/audit-events"):
        r = await client.get(path)
        body = assert_problem(r, 401, "UNAUTHORIZED")
        assert "API key" in body["detail"]
        assert r.headers["www-authenticate"].startswith("Bearer")
    assert_problem(await client.post("/v1/machines", json={}), 401, "UNAUTHORIZED")


@pytest.mark.parametrize("headers", [
    {"Authorization": "Bearer mm_nope_nope"},
    {"X-Api-Key": "mm_nope_nope"},
    {"Authorization": "Basic dXNlcjpwYXNz"},
    {"Authorization": "Bearer "},
])
async def test_bad_key_is_401(client: httpx.AsyncClient, headers: dict[str, str]) -> None:
    assert_problem(await client.get("/v1/machines", headers=headers), 401, "UNAUTHORIZED")


async def test_x_api_key_works_like_bearer(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    t = await new_tenant(client, admin)
    r = await client.get("/v1/accounts/me", headers={"X-Api-Key": t["key"]["key"]})
    assert r.status_code == 200, r.text
    assert r.json()["id"] == t["id"]


async def test_query_api_key_is_off_by_default(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    t = await new_tenant(client, admin)
    assert_problem(await client.get("/v1/accounts/me", params={"api_key": t["key"]["key"]}), 401, "UNAUTHORIZED")


async def test_issued_key_works_immediately_and_is_listed_without_its_secret(
    client: httpx.AsyncClient, tenant: dict[str, Any]
) -> None:
    r = await client.post(f"/v1/accounts/{tenant['id']}/api-keys", json={"label": "ci"}, headers=tenant["headers"])
    assert r.status_code == 201, r.text
    issued = r.json()
    assert issued["label"] == "ci" and issued["key"].startswith("mm_")
    me = await client.get("/v1/accounts/me", headers={"X-Api-Key": issued["key"]})
    assert me.status_code == 200 and me.json()["id"] == tenant["id"]

    keys = await client.get(f"/v1/accounts/{tenant['id']}/api-keys", headers=tenant["headers"])
    assert keys.status_code == 200, keys.text
    listed = {k["id"]: k for k in keys.json()}
    assert listed[issued["id"]]["prefix"] == issued["prefix"] and listed[issued["id"]]["revokedAt"] is None
    assert len(listed) == 2
    assert issued["key"] not in keys.text and "hash" not in keys.text.lower()


async def test_revoked_key_stops_working_when_delete_returns(client: httpx.AsyncClient, tenant: dict[str, Any]) -> None:
    r = await client.post(f"/v1/accounts/{tenant['id']}/api-keys", json={}, headers=tenant["headers"])
    doomed = r.json()
    doomed_headers = {"Authorization": f"Bearer {doomed['key']}"}
    assert (await client.get("/v1/machines", headers=doomed_headers)).status_code == 200

    d = await client.delete(f"/v1/accounts/{tenant['id']}/api-keys/{doomed['id']}", headers=tenant["headers"])
    assert d.status_code == 204, d.text
    assert_problem(await client.get("/v1/machines", headers=doomed_headers), 401, "UNAUTHORIZED")
    assert_problem(await client.get("/v1/machines", headers={"X-Api-Key": doomed["key"]}), 401, "UNAUTHORIZED")
    assert (await client.get("/v1/machines", headers=tenant["headers"])).status_code == 200

    keys = await client.get(f"/v1/accounts/{tenant['id']}/api-keys", headers=tenant["headers"])
    assert {k["id"]: k["revokedAt"] for k in keys.json()}[doomed["id"]] is not None
    again = await client.delete(f"/v1/accounts/{tenant['id']}/api-keys/{doomed['id']}", headers=tenant["headers"])
    assert_problem(again, 409, "INVALID_STATE_TRANSITION")
    unknown = await client.delete(f"/v1/accounts/{tenant['id']}/api-keys/{uuid.uuid4()}", headers=tenant["headers"])
    assert_problem(unknown, 404, "NOT_FOUND")


async def test_a_key_can_revoke_itself(client: httpx.AsyncClient, tenant: dict[str, Any]) -> None:
    keys = await client.get(f"/v1/accounts/{tenant['id']}/api-keys", headers=tenant["headers"])
    (own,) = keys.json()
    d = await client.delete(f"/v1/accounts/{tenant['id']}/api-keys/{own['id']}", headers=tenant["headers"])
    assert d.status_code == 204
    assert_problem(await client.get("/v1/accounts/me", headers=tenant["headers"]), 401, "UNAUTHORIZED")


async def test_another_account_is_404(client: httpx.AsyncClient, tenant: dict[str, Any], admin: dict[str, str]) -> None:
    other = await new_tenant(client, admin)
    h = tenant["headers"]
    assert_problem(await client.get(f"/v1/accounts/{other['id']}", headers=h), 404, "NOT_FOUND")
    assert_problem(await client.get(f"/v1/accounts/{other['id']}/api-keys", headers=h), 404, "NOT_FOUND")
    assert_problem(await client.post(f"/v1/accounts/{other['id']}/api-keys", json={}, headers=h), 404, "NOT_FOUND")
    d = await client.delete(f"/v1/accounts/{other['id']}/api-keys/{other['key']['id']}", headers=h)
    assert_problem(d, 404, "NOT_FOUND")
    assert (await client.get("/v1/accounts/me", headers=other["headers"])).status_code == 200  # still works


async def test_admin_reads_and_manages_any_account(
    client: httpx.AsyncClient, tenant: dict[str, Any], admin: dict[str, str]
) -> None:
    got = await client.get(f"/v1/accounts/{tenant['id']}", headers=admin)
    assert got.status_code == 200 and got.json()["id"] == tenant["id"]
    issued = await client.post(f"/v1/accounts/{tenant['id']}/api-keys", json={"label": "by-admin"}, headers=admin)
    assert issued.status_code == 201
    me = await client.get("/v1/accounts/me", headers={"X-Api-Key": issued.json()["key"]})
    assert me.json()["id"] == tenant["id"]
    assert_problem(await client.get(f"/v1/accounts/{uuid.uuid4()}", headers=admin), 404, "NOT_FOUND")
    missing = await client.post(f"/v1/accounts/{uuid.uuid4()}/api-keys", json={}, headers=admin)
    assert_problem(missing, 404, "NOT_FOUND")


async def test_an_admin_account_opened_by_an_admin_can_open_accounts(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    r = await client.post("/v1/accounts", json={"name": "ops", "isAdmin": True}, headers=admin)
    assert r.status_code == 201 and r.json()["account"]["isAdmin"] is True
    ops = {"X-Api-Key": r.json()["apiKey"]["key"]}
    assert (await client.post("/v1/accounts", json={"name": "by-ops"}, headers=ops)).status_code == 201


async def test_a_new_key_is_not_cacheable_and_its_replay_is_stored_sealed(
    client: httpx.AsyncClient, admin: dict[str, str], container: Container
) -> None:
    h = {**admin, "Idempotency-Key": f"open-{uuid.uuid4()}"}
    first = await client.post("/v1/accounts", json={"name": "sealed"}, headers=h)
    again = await client.post("/v1/accounts", json={"name": "sealed"}, headers=h)
    assert first.status_code == again.status_code == 201 and first.headers["cache-control"] == "no-store"
    key = first.json()["apiKey"]["key"]
    assert again.json()["apiKey"]["key"] == key and again.headers["cache-control"] == "no-store"
    stored = await container.pool.fetchval("SELECT response_body FROM idempotency_keys WHERE key = $1",
                                           h["Idempotency-Key"])
    assert key.encode() not in bytes(stored)

"""Webhook endpoints over HTTP: create (secret once), read, list, update with If-Match, rotate, delete, tenancy."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import pytest

from tests.api.helpers import assert_problem, audit_feed, fresh, walk_pages

BASE = "/v1/webhook-endpoints"


async def create(client: httpx.AsyncClient, headers: dict[str, str], **fields: Any) -> httpx.Response:
    body = {"url": "https://hooks.example.net/mm", "types": ["market.*"], **fields}
    r = await client.post(BASE, json=body, headers=headers)
    assert r.status_code == 201, r.text
    return r


async def test_create_shows_the_secret_once_and_reads_never_do(client: httpx.AsyncClient,
                                                                tenant: dict[str, Any]) -> None:
    r = await create(client, tenant["headers"], types=["market.*", "task.created", "market.*"],
                     description="ops")
    body = r.json()
    assert body["secret"].startswith("whsec_") and len(body["secret"]) > 30 and r.headers["cache-control"] == "no-store"
    assert body["accountId"] == tenant["id"] and body["enabled"] is True and body["version"] == 1
    assert body["types"] == ["market.*", "task.created"] and body["description"] == "ops"
    assert r.headers["location"] == f"{BASE}/{body['id']}" and r.headers["etag"] == '"1"'
    got = await client.get(r.headers["location"], headers=tenant["headers"])
    assert got.status_code == 200 and got.headers["etag"] == '"1"'
    assert "secret" not in got.json() and body["secret"] not in got.text
    assert {k: v for k, v in body.items() if k != "secret"} == got.json()
    listed = await client.get(BASE, headers=fresh(tenant["headers"], r))
    assert [e["id"] for e in listed.json()["data"]] == [body["id"]] and body["secret"] not in listed.text


async def test_the_secret_is_sealed_in_the_log_and_redacted_from_the_feed(
    client: httpx.AsyncClient, tenant: dict[str, Any], container: Any
) -> None:
    r = await create(client, tenant["headers"])
    secret, endpoint_id = r.json()["secret"], r.json()["id"]
    rotated = await client.post(f"{BASE}/{endpoint_id}/rotate-secret", headers=tenant["headers"])
    assert rotated.status_code == 200, rotated.text
    rows = await container.pool.fetch("SELECT data::text AS data FROM events WHERE stream_id = $1",
                                      uuid.UUID(endpoint_id))
    assert len(rows) == 2 and all(secret not in x["data"] and rotated.json()["secret"] not in x["data"]
                                  for x in rows)
    feed = await audit_feed(client, tenant["headers"], rotated, subject=f"webhook-endpoint:{endpoint_id}")
    mine = [e for e in feed if e["type"].startswith("webhook-endpoint.")]
    assert [e["type"] for e in mine] == ["webhook-endpoint.created", "webhook-endpoint.secret-rotated"]
    assert all("sealed" not in json.dumps(e).lower() and "mmseal" not in json.dumps(e) for e in mine)


@pytest.mark.parametrize("payload", [
    {"url": "ftp://x.example/h", "types": ["*"]},
    {"url": "https://user:pw@x.example/h", "types": ["*"]},
    {"url": "not a url", "types": ["*"]},
    {"url": "https://x.example/h", "types": []},
    {"url": "https://x.example/h", "types": ["Market.*"]},
    {"url": "https://x.example/h", "types": ["market*"]},
    {"url": "https://x.example/h"},
    {"types": ["*"]},
    {"url": "https://x.example/h", "types": ["*"], "secret": "mine"},
])
async def test_invalid_definitions_are_400(client: httpx.AsyncClient, tenant: dict[str, Any],
                                           payload: dict[str, Any]) -> None:
    assert_problem(await client.post(BASE, json=payload, headers=tenant["headers"]), 400, "VALIDATION_ERROR")


async def test_an_idempotent_retry_registers_one_endpoint_with_the_same_secret(
    client: httpx.AsyncClient, tenant: dict[str, Any]
) -> None:
    h = {**tenant["headers"], "Idempotency-Key": f"w-{uuid.uuid4()}"}
    payload = {"url": "https://x.example/h", "types": ["*"]}
    first = await client.post(BASE, json=payload, headers=h)
    second = await client.post(BASE, json=payload, headers=h)
    assert first.status_code == second.status_code == 201
    assert first.json() == second.json()
    listed = await client.get(BASE, headers=fresh(tenant["headers"], second))
    assert len(listed.json()["data"]) == 1


async def test_update_with_if_match_and_a_stale_etag_is_412(client: httpx.AsyncClient,
                                                            tenant: dict[str, Any]) -> None:
    r = await create(client, tenant["headers"])
    path = r.headers["location"]
    u = await client.patch(path, json={"enabled": False, "types": ["task.*"]},
                           headers={**tenant["headers"], "If-Match": '"1"'})
    assert u.status_code == 200, u.text
    assert u.json()["enabled"] is False and u.json()["types"] == ["task.*"] and u.headers["etag"] == '"2"'
    assert "secret" not in u.json()
    assert_problem(await client.patch(path, json={"description": "x"},
                                      headers={**tenant["headers"], "If-Match": '"1"'}), 412, "PRECONDITION_FAILED")
    same = await client.patch(path, json={"enabled": False}, headers=tenant["headers"])
    assert same.status_code == 200 and same.headers["etag"] == '"2"'  # nothing changed, nothing recorded
    assert_problem(await client.patch(path, json={"url": "gopher://x"}, headers=tenant["headers"]), 400,
                   "VALIDATION_ERROR")
    got = await client.get(path, headers=fresh(tenant["headers"], u))
    assert got.json()["enabled"] is False and got.headers["etag"] == '"2"'


async def test_rotation_answers_a_new_secret_once_and_the_overlap(client: httpx.AsyncClient,
                                                                   tenant: dict[str, Any]) -> None:
    r = await create(client, tenant["headers"])
    path = r.headers["location"]
    rotated = await client.post(f"{path}/rotate-secret", headers=tenant["headers"])
    assert rotated.status_code == 200, rotated.text
    body = rotated.json()
    assert body["secret"] != r.json()["secret"] and body["version"] == 2
    assert body["previousSecretExpiresAt"] is not None
    got = await client.get(path, headers=fresh(tenant["headers"], rotated))
    assert got.json()["previousSecretExpiresAt"] is not None and "secret" not in got.json()
    assert_problem(await client.post(f"{path}/rotate-secret", headers={**tenant["headers"], "If-Match": '"1"'}),
                   412, "PRECONDITION_FAILED")


async def test_delete_then_everything_is_404(client: httpx.AsyncClient, tenant: dict[str, Any]) -> None:
    r = await create(client, tenant["headers"])
    path = r.headers["location"]
    assert_problem(await client.delete(path, headers={**tenant["headers"], "If-Match": '"7"'}), 412,
                   "PRECONDITION_FAILED")
    d = await client.delete(path, headers=tenant["headers"])
    assert d.status_code == 204, d.text
    h = fresh(tenant["headers"], d)
    assert_problem(await client.get(path, headers=h), 404, "NOT_FOUND")
    assert_problem(await client.patch(path, json={"enabled": True}, headers=h), 404, "NOT_FOUND")
    assert_problem(await client.delete(path, headers=h), 404, "NOT_FOUND")
    assert_problem(await client.post(f"{path}/rotate-secret", headers=h), 404, "NOT_FOUND")
    assert (await client.get(BASE, headers=h)).json()["data"] == []


async def test_another_accounts_endpoint_is_404_and_absent_from_lists(
    client: httpx.AsyncClient, tenant: dict[str, Any], admin: dict[str, str]
) -> None:
    r = await create(client, tenant["headers"])
    path = r.headers["location"]
    other = await client.post("/v1/accounts", json={"name": "other"}, headers=admin)
    oh = {"Authorization": f"Bearer {other.json()['apiKey']['key']}"}
    for call in (client.get(path, headers=oh), client.patch(path, json={"enabled": False}, headers=oh),
                 client.delete(path, headers=oh), client.post(f"{path}/rotate-secret", headers=oh)):
        assert_problem(await call, 404, "NOT_FOUND")
    assert (await client.get(BASE, headers=fresh(oh, r))).json()["data"] == []
    assert_problem(await client.get(f"{BASE}/{uuid.uuid4()}", headers=tenant["headers"]), 404, "NOT_FOUND")
    assert (await client.get(path, headers=admin)).status_code == 200


async def test_lists_page_with_cursors_and_filter_on_enabled(client: httpx.AsyncClient,
                                                             tenant: dict[str, Any]) -> None:
    made = [(await create(client, tenant["headers"], enabled=i % 2 == 0)) for i in range(5)]
    h = fresh(tenant["headers"], made[-1])
    seen, pages = await walk_pages(client, BASE, h, 2)
    assert seen == [m.json()["id"] for m in made] and pages == 3
    on = await client.get(BASE, params={"enabled": "true"}, headers=h)
    assert [e["id"] for e in on.json()["data"]] == [m.json()["id"] for m in made[::2]]
    assert_problem(await client.get(BASE, params={"cursor": "garbage"}, headers=h), 400, "VALIDATION_ERROR")


async def test_without_credentials_is_401(client: httpx.AsyncClient) -> None:
    assert_problem(await client.get(BASE), 401, "UNAUTHORIZED")


# --- deliveries ----------------------------------------------------------------------------------


async def fan_out(container: Any, endpoint_id: str) -> None:
    """What the projector's fan-out does for these events (the API fixture runs read models only)."""
    from projections.webhook_fanout import WebhookFanoutProjection

    events = await container.store.load(uuid.UUID(endpoint_id))
    async with container.pool.acquire() as conn, conn.transaction():
        await WebhookFanoutProjection(None).apply_many(conn, events, {})


async def test_deliveries_list_with_attempts_pages_and_retry(client: httpx.AsyncClient, tenant: dict[str, Any],
                                                            container: Any) -> None:
    r = await create(client, tenant["headers"], types=["webhook-endpoint.*"])
    path = r.headers["location"]
    for n in range(2):
        u = await client.patch(path, json={"description": f"d{n}"}, headers=tenant["headers"])
        assert u.status_code == 200
    await fan_out(container, r.json()["id"])
    h = fresh(tenant["headers"], u)
    listed = await client.get(f"{path}/deliveries", headers=h)
    assert listed.status_code == 200, listed.text
    data = listed.json()["data"]
    assert [d["type"] for d in data] == ["webhook-endpoint.created"] + ["webhook-endpoint.updated"] * 2
    assert all(d["status"] == "pending" and d["attempts"] == 0 and d["attemptLog"] == [] for d in data)
    seen, pages = await walk_pages(client, f"{path}/deliveries", h, 2)
    assert seen == [d["id"] for d in data] and pages == 2
    first = data[0]["id"]
    retried = await client.post(f"{path}/deliveries/{first}/retry", headers=tenant["headers"])
    assert retried.status_code == 202, retried.text
    assert retried.json()["id"] == first and "x-log-position" in retried.headers
    feed = await audit_feed(client, tenant["headers"], retried, type="webhook-endpoint.delivery-retry-requested")
    assert [e["data"]["deliveryId"] for e in feed] == [first]
    got = await client.get(path, headers=fresh(tenant["headers"], retried))
    assert got.headers["etag"] == '"4"'  # the retry request is a version of the endpoint
    await container.pool.execute("UPDATE webhook_deliveries SET status = 'delivered' WHERE id = $1", uuid.UUID(first))
    assert_problem(await client.post(f"{path}/deliveries/{first}/retry", headers=tenant["headers"]), 409,
                   "INVALID_STATE_TRANSITION")
    assert_problem(await client.post(f"{path}/deliveries/{uuid.uuid4()}/retry", headers=tenant["headers"]), 404,
                   "NOT_FOUND")
    assert_problem(await client.get(f"{path}/deliveries", params={"cursor": "x"}, headers=h), 400,
                   "VALIDATION_ERROR")


async def test_another_accounts_deliveries_are_404(client: httpx.AsyncClient, tenant: dict[str, Any],
                                                   admin: dict[str, str]) -> None:
    r = await create(client, tenant["headers"])
    path = r.headers["location"]
    other = await client.post("/v1/accounts", json={"name": "other"}, headers=admin)
    oh = {"Authorization": f"Bearer {other.json()['apiKey']['key']}"}
    assert_problem(await client.get(f"{path}/deliveries", headers=fresh(oh, r)), 404, "NOT_FOUND")
    assert_problem(await client.post(f"{path}/deliveries/{uuid.uuid4()}/retry", headers=oh), 404, "NOT_FOUND")
    assert_problem(await client.get(f"{BASE}/{uuid.uuid4()}/deliveries", headers=tenant["headers"]), 404,
                   "NOT_FOUND")

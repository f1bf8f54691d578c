"""A retried request whose first attempt was recorded, but whose answer never reached the client and was not kept
for replay (the connection dropped after the COMMIT; the database went away before the answer was stored; the
process died): the retry, with the same Idempotency-Key, answers as the first attempt did. It must not decide again
on the state its own first attempt left, where the transition is no longer allowed (confirm a confirmed order,
withdraw what is already gone), nor move anything twice."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from app.container import Container
from domain.shared.context import CommandContext
from tests.api.helpers import action, active_machine, assert_problem, fresh, register
from tests.api.test_agents import _agent
from tests.api.test_market_orders import ORDERS, balance, executed_order, market
from tests.api.test_webhook_endpoints import BASE, create, fan_out


async def _lose_answer(container: Container, account_id: str, key: str) -> None:
    """The idempotency row as a first attempt leaves it when its answer could not be kept and it stopped renewing
    its claim: no stored response, the lease lapsed. A retry takes the claim over and runs the command again."""
    updated = await container.pool.execute(
        "UPDATE idempotency_keys SET status_code = NULL, response_body = NULL, response_headers = NULL,"
        " locked_until = now() - interval '1 second' WHERE account_id = $1 AND key = $2",
        uuid.UUID(account_id), key)
    assert updated == "UPDATE 1"


async def _forget(container: Container, account_id: str, key: str) -> None:
    """No row at all: the first attempt's answer was a 503 (the connection dropped after its COMMIT), whose claim
    is released so that the client may retry."""
    deleted = await container.pool.execute("DELETE FROM idempotency_keys WHERE account_id = $1 AND key = $2",
                                           uuid.UUID(account_id), key)
    assert deleted == "DELETE 1"


async def test_a_confirm_retried_after_its_answer_was_lost_answers_200_and_releases_once(
    client: httpx.AsyncClient, container: Container, admin: dict[str, str], tenant: dict[str, Any]
) -> None:
    m = {**await market(client, container, admin, tenant, price=2000), "account": tenant["id"]}
    o = await executed_order(client, container, admin, m, 2000)
    base = f"{ORDERS}/{o['id']}"
    key = f"confirm-{uuid.uuid4()}"
    h = {**m["h"], "Idempotency-Key": key}
    first = await client.post(base + "/confirm", headers=h)
    assert first.status_code == 200, first.text
    await _lose_answer(container, tenant["id"], key)
    retry = await client.post(base + "/confirm", headers=h)
    assert retry.status_code == 200, retry.text  # was 409 ORDER_STATE_CONFLICT: the order is already confirmed
    assert "idempotent-replayed" not in retry.headers  # decided anew, found recorded; not a stored answer
    assert (retry.json()["status"], retry.json()["escrow"]["status"]) == ("settled", "released")
    assert retry.headers["x-log-position"] == first.headers["x-log-position"]  # where the confirm was recorded
    assert retry.json()["version"] == first.json()["version"]
    # The money moved once.
    assert await balance(client, m["h"], retry) == {"available": 0, "escrow": 0}
    assert await balance(client, m["sh"], retry) == {"available": 1950, "escrow": 0}
    # Its answer is now kept: a third attempt replays it.
    again = await client.post(base + "/confirm", headers=h)
    assert again.status_code == 200 and again.headers["idempotent-replayed"] == "true"
    # Another request (no key, or another key) is still refused: it is not the one that was recorded.
    assert_problem(await client.post(base + "/confirm", headers=m["h"]), 409, "ORDER_STATE_CONFLICT")
    other = {**m["h"], "Idempotency-Key": f"confirm-{uuid.uuid4()}"}
    assert_problem(await client.post(base + "/confirm", headers=other), 409, "ORDER_STATE_CONFLICT")


async def test_a_withdrawal_retried_after_a_lost_503_is_not_insufficient_funds_and_moves_money_once(
    client: httpx.AsyncClient, container: Container, admin: dict[str, str], tenant: dict[str, Any]
) -> None:
    dep = await client.post(f"/v1/accounts/{tenant['id']}/deposits", headers=admin,
                            json={"amount": {"amount": 700, "currency": "EUR"}})
    assert dep.status_code == 201, dep.text
    key = f"withdraw-{uuid.uuid4()}"
    h = {**tenant["headers"], "Idempotency-Key": key}
    body = {"amount": {"amount": 700, "currency": "EUR"}}
    first = await client.post("/v1/accounts/me/withdrawals", headers=h, json=body)
    assert first.status_code == 201, first.text
    await _forget(container, tenant["id"], key)
    retry = await client.post("/v1/accounts/me/withdrawals", headers=h, json=body)
    assert retry.status_code == 201, retry.text  # was 409 INSUFFICIENT_FUNDS: its own withdrawal took the 700
    assert retry.headers["x-log-position"] == first.headers["x-log-position"]
    r = await client.get("/v1/accounts/me/balance", headers={**tenant["headers"],
                                                              "X-Min-Position": retry.headers["x-log-position"]})
    eur = [b for b in r.json()["data"] if b["currency"] == "EUR"]
    assert eur and eur[0]["available"]["amount"] == 0  # withdrawn once
    withdrawn = await container.pool.fetchval(
        "SELECT count(*) FROM events WHERE type LIKE '%Withdrawn' AND metadata->>'accountId' = $1", tenant["id"])
    assert withdrawn == 1
    # Without the key, the same withdrawal now really is refused.
    assert_problem(await client.post("/v1/accounts/me/withdrawals", headers=tenant["headers"], json=body),
                   409, "INSUFFICIENT_FUNDS")


async def test_a_suspend_retried_after_its_answer_was_lost_answers_as_it_did(
    client: httpx.AsyncClient, container: Container, tenant: dict[str, Any]
) -> None:
    mid = (await active_machine(client, tenant["headers"])).json()["id"]
    key = f"suspend-{uuid.uuid4()}"
    h = {**tenant["headers"], "Idempotency-Key": key}
    first = await action(client, h, mid, "suspend", json={"reason": "maintenance"})
    assert first.status_code == 200, first.text
    await _lose_answer(container, tenant["id"], key)
    retry = await action(client, h, mid, "suspend", json={"reason": "maintenance"})
    assert retry.status_code == 200, retry.text
    assert retry.json()["status"] == "suspended" and retry.json()["version"] == first.json()["version"]
    assert retry.headers["x-log-position"] == first.headers["x-log-position"]
    assert_problem(await action(client, tenant["headers"], mid, "suspend", json={"reason": "maintenance"}),
                   409, "INVALID_STATE_TRANSITION")



async def test_an_agent_revoke_retried_after_its_answer_was_lost_answers_as_it_did(
    client: httpx.AsyncClient, container: Container, tenant: dict[str, Any]
) -> None:
    mid, aid, _ = await _agent(client, tenant)
    url = f"/v1/machines/{mid}/agents/{aid}/revoke"
    key = f"revoke-{uuid.uuid4()}"
    h = {**tenant["headers"], "Idempotency-Key": key}
    first = await client.post(url, headers=h, json={"reason": "lost laptop"})
    assert first.status_code == 200, first.text
    await _forget(container, tenant["id"], key)
    retry = await client.post(url, headers=h, json={"reason": "lost laptop"})
    assert retry.status_code == 200, retry.text  # was 409 INVALID_STATE_TRANSITION: already revoked
    assert retry.json()["status"] == "revoked" and retry.headers["etag"] == first.headers["etag"]
    assert retry.headers["x-log-position"] == first.headers["x-log-position"]
    assert_problem(await client.post(url, headers=tenant["headers"]), 409, "INVALID_STATE_TRANSITION")


@pytest.mark.parametrize("if_match", [False, True])
async def test_a_secret_rotation_retried_after_its_answer_was_lost_shows_the_secret_it_recorded(
    client: httpx.AsyncClient, container: Container, tenant: dict[str, Any], if_match: bool
) -> None:
    created = await create(client, tenant["headers"])
    endpoint_id = created.json()["id"]
    key = f"rotate-{uuid.uuid4()}"
    h = {**tenant["headers"], "Idempotency-Key": key, **({"If-Match": created.headers["etag"]} if if_match else {})}
    first = await client.post(f"{BASE}/{endpoint_id}/rotate-secret", headers=h)
    assert first.status_code == 200, first.text
    await _forget(container, tenant["id"], key)
    retry = await client.post(f"{BASE}/{endpoint_id}/rotate-secret", headers=h)
    assert retry.status_code == 200, retry.text  # with If-Match it was 412: its own rotation moved the version
    # The secret deliveries are signed with, as the first answer showed it; was a fresh one never stored.
    assert retry.json()["secret"] == first.json()["secret"]
    endpoint = await container.webhooks.get(CommandContext(at=datetime.now(UTC), actor="test", is_admin=True),
                                            uuid.UUID(endpoint_id))
    assert container.webhooks.signing_secrets(endpoint, datetime.now(UTC))[0] == first.json()["secret"]
    assert retry.headers["etag"] == first.headers["etag"] == '"2"'  # rotated once
    assert retry.headers["x-log-position"] == first.headers["x-log-position"]
    assert retry.headers["cache-control"] == "no-store"


async def test_a_delivery_retry_retried_after_its_answer_was_lost_is_202_though_the_delivery_went_out(
    client: httpx.AsyncClient, container: Container, tenant: dict[str, Any]
) -> None:
    r = await create(client, tenant["headers"], types=["webhook-endpoint.*"])
    path = r.headers["location"]
    await fan_out(container, r.json()["id"])
    listed = await client.get(f"{path}/deliveries", headers=fresh(tenant["headers"], r))
    delivery = listed.json()["data"][0]["id"]
    key = f"delivery-retry-{uuid.uuid4()}"
    h = {**tenant["headers"], "Idempotency-Key": key}
    first = await client.post(f"{path}/deliveries/{delivery}/retry", headers=h)
    assert first.status_code == 202, first.text
    await container.pool.execute("UPDATE webhook_deliveries SET status = 'delivered' WHERE id = $1",
                                 uuid.UUID(delivery))  # the retry it asked for went out
    await _forget(container, tenant["id"], key)
    retry = await client.post(f"{path}/deliveries/{delivery}/retry", headers=h)
    assert retry.status_code == 202, retry.text  # was 409: "was delivered"
    assert retry.headers["x-log-position"] == first.headers["x-log-position"]
    assert_problem(await client.post(f"{path}/deliveries/{delivery}/retry", headers=tenant["headers"]), 409,
                   "INVALID_STATE_TRANSITION")


async def _expire(container: Container, account_id: str, key: str) -> None:
    """The record as it stands once its TTL has passed: a new request may claim the key again."""
    hours = container.settings.idempotency_ttl_hours + 1
    updated = await container.pool.execute(
        "UPDATE idempotency_keys SET created_at = now() - make_interval(hours => $3)"
        " WHERE account_id = $1 AND key = $2", uuid.UUID(account_id), key, hours)
    assert updated == "UPDATE 1"


async def test_a_key_reused_for_another_request_after_its_record_expired_runs_that_request(
    client: httpx.AsyncClient, container: Container, tenant: dict[str, Any]
) -> None:
    key = f"register-node-{uuid.uuid4()}"
    h = {**tenant["headers"], "Idempotency-Key": key}
    first, _ = await register(client, h, name="node-a")
    await _expire(container, tenant["id"], key)
    # The same request again, past the TTL: still the machine it registered (its ids derive from the request).
    same = await client.post("/v1/machines", headers=h, content=first.request.content)
    assert same.status_code == 201 and same.json()["id"] == first.json()["id"], same.text
    await _expire(container, tenant["id"], key)
    # Another request with that key: registered as asked; was answered with the first machine, nothing recorded.
    other, _ = await register(client, h, name="node-b")
    assert other.json()["id"] != first.json()["id"] and other.json()["name"] == "node-b"
    # And a transition: another machine's suspend with a key once used on this one is its own command.
    mid = (await active_machine(client, tenant["headers"])).json()["id"]
    key = f"suspend-{uuid.uuid4()}"
    h = {**tenant["headers"], "Idempotency-Key": key}
    assert (await action(client, h, mid, "suspend", json={"reason": "a"})).status_code == 200
    back = await action(client, tenant["headers"], mid, "reactivate")
    assert back.status_code == 200, back.text
    await _expire(container, tenant["id"], key)
    again = await action(client, h, mid, "suspend", json={"reason": "b"})
    assert again.status_code == 200 and again.json()["status"] == "suspended", again.text
    assert again.json()["version"] == back.json()["version"] + 1  # recorded: was the old ids, a no-op

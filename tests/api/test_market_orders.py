"""Market order routes over HTTP: placing (by listing or capability), the signed mandate, cancel, the state
conflicts, who may see and act on an order, the lists, policies, and the signed rail callback."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from app.container import Container
from app.settings import Settings
from domain.market.order_commands import Execution
from domain.shared.context import CommandContext
from tests.api.helpers import Keys, action, api_on, assert_problem, fresh, register, verify
from tests.api.task_helpers import capability, caught_up, seller
from tests.api.test_policy_enforcement import policy
from tests.conftest import TEST_SECRET_KEY

ORDERS = "/v1/market/orders"


async def keyed_buyer(client: httpx.AsyncClient, h: dict[str, str]) -> tuple[str, Keys]:
    r, keys = await register(client, h)
    mid = r.json()["id"]
    await verify(client, h, mid, keys)
    assert (await action(client, h, mid, "activate")).status_code == 200
    return mid, keys


async def market(client: httpx.AsyncClient, container: Container, admin: dict[str, str], tenant: dict[str, Any],
                 price: int = 1000) -> dict[str, Any]:
    """A seller account with one listing, and the tenant's buyer machine (with its key)."""
    r = await client.post("/v1/accounts", json={"name": f"seller-{uuid.uuid4().hex[:6]}"}, headers=admin)
    sh = {"Authorization": f"Bearer {r.json()['apiKey']['key']}"}
    cap = capability()
    seller_id, listing_id, last = await seller(client, sh, cap, price=price)
    await caught_up(container, last, "catalogue")
    buyer_id, keys = await keyed_buyer(client, tenant["headers"])
    return {"cap": cap, "seller": seller_id, "seller_account": r.json()["account"]["id"], "sh": sh,
            "listing": listing_id, "buyer": buyer_id, "keys": keys, "h": tenant["headers"]}


async def place(client: httpx.AsyncClient, m: dict[str, Any], **fields: Any) -> httpx.Response:
    body = {"buyerMachineId": m["buyer"], "listingId": m["listing"], "input": {"text": "hi"}, **fields}
    return await client.post(ORDERS, headers=m["h"], json={k: v for k, v in body.items() if v is not None})


async def test_create_by_listing_fixes_price_fee_and_returns_a_signable_intent(
    client: httpx.AsyncClient, container: Container, admin: dict[str, str], tenant: dict[str, Any]
) -> None:
    m = await market(client, container, admin, tenant, price=1000)
    r = await place(client, m)
    assert r.status_code == 201, r.text
    o = r.json()
    assert r.headers["location"] == f"{ORDERS}/{o['id']}" and r.headers["etag"]
    assert (o["status"], o["payment"]["status"], o["escrow"]["status"]) == ("awaiting-payment", "awaiting-proof",
                                                                           "none")
    assert o["price"] == {"amount": 1000, "currency": "USD"} and o["fee"] == {"amount": 25, "currency": "USD"}
    assert o["listingId"] == m["listing"] and o["sellerMachineId"] == m["seller"]
    intent = o["paymentIntent"]
    assert intent["payeeAccountId"] == m["seller_account"] and intent["amount"]["amount"] == 1000
    lines = intent["signingPayload"].split("\n")
    assert lines[:2] == ["mm-payment-v1", f"order:{o['id']}"] and f"nonce:{intent['nonce']}" in lines
    assert [t["type"] for t in o["timeline"]] == ["market.order.created", "market.payment.intent-created"]
    # The command answers with its events as the log recorded them (not read back): the same as a GET shows.
    assert (await client.get(f"{ORDERS}/{o['id']}", headers=m["h"])).json()["timeline"] == o["timeline"]
    task = await client.get(f"/v1/machines/{m['buyer']}/tasks/{o['taskId']}", headers=fresh(m["h"], r))
    assert task.status_code == 200 and task.json()["status"] == "resolved"


async def test_create_by_capability_picks_a_listing_within_the_constraints(
    client: httpx.AsyncClient, container: Container, admin: dict[str, str], tenant: dict[str, Any]
) -> None:
    m = await market(client, container, admin, tenant, price=300)
    r = await place(client, m, listingId=None, capability=m["cap"],
                    constraints={"maxPrice": {"amount": 500, "currency": "USD"}})
    assert r.status_code == 201, r.text
    assert r.json()["listingId"] == m["listing"] and r.json()["price"]["amount"] == 300
    none = await place(client, m, listingId=None, capability=m["cap"],
                       constraints={"maxPrice": {"amount": 100, "currency": "USD"}})
    assert_problem(none, 409, "NO_ROUTE")


async def test_create_refusals(client: httpx.AsyncClient, container: Container, admin: dict[str, str],
                               tenant: dict[str, Any]) -> None:
    m = await market(client, container, admin, tenant)
    assert_problem(await place(client, m, capability=m["cap"]), 400, "VALIDATION_ERROR")  # both
    assert_problem(await place(client, m, listingId=None), 400, "VALIDATION_ERROR")  # neither
    assert_problem(await place(client, m, listingId=str(uuid.uuid4())), 409, "LISTING_UNAVAILABLE")
    assert_problem(await place(client, m, surprise=1), 400, "VALIDATION_ERROR")
    assert_problem(await place(client, m, confirmWindowSeconds=0), 400, "VALIDATION_ERROR")
    other = {**m, "buyer": m["seller"]}  # the seller's machine, not the tenant's: 404, never 403
    assert_problem(await place(client, other), 404, "NOT_FOUND")
    assert (await client.post(ORDERS, json={})).status_code == 401


async def test_pay_verifies_the_mandate_and_records_it_once(
    client: httpx.AsyncClient, container: Container, admin: dict[str, str], tenant: dict[str, Any]
) -> None:
    m = await market(client, container, admin, tenant)
    o = (await place(client, m)).json()
    url = f"{ORDERS}/{o['id']}/payment"
    payload = o["paymentIntent"]["signingPayload"]
    wrong = Keys().sign(payload)
    bad = await client.post(url, headers=m["h"], json={"proof": {"signature": wrong}})
    assert_problem(bad, 422, "PAYMENT_PROOF_INVALID")
    tampered = m["keys"].sign(payload.replace("amount:1000", "amount:1"))
    assert_problem(await client.post(url, headers=m["h"], json={"proof": {"signature": tampered}}), 422,
                   "PAYMENT_PROOF_INVALID")
    after = await client.get(f"{ORDERS}/{o['id']}", headers=m["h"])
    assert after.json()["version"] == o["version"]  # nothing recorded
    good = {"proof": {"signature": m["keys"].sign(payload)}}
    assert_problem(await client.post(url, headers=m["sh"], json=good), 403, "PERMISSION_DENIED")  # the seller
    stranger = await client.post("/v1/accounts", json={"name": "x"}, headers=admin)
    sth = {"Authorization": f"Bearer {stranger.json()['apiKey']['key']}"}
    assert_problem(await client.post(url, headers=sth, json=good), 404, "NOT_FOUND")
    r = await client.post(url, headers=m["h"], json=good)
    assert r.status_code == 200, r.text
    assert (r.json()["status"], r.json()["payment"]["status"], r.json()["payment"]["method"]) == (
        "paid", "proof-recorded", "mandate")
    again = await client.post(url, headers=m["h"], json=good)
    assert again.status_code == 200 and again.json()["version"] == r.json()["version"]
    assert_problem(await client.post(f"{ORDERS}/{o['id']}/cancel", headers=m["h"]), 409, "ORDER_STATE_CONFLICT")
    assert_problem(await client.post(url, headers=m["h"], json={"proof": {"signature": "!!"}}), 400,
                   "VALIDATION_ERROR")


async def test_cancel_before_payment_cancels_the_task_and_state_conflicts_are_409(
    client: httpx.AsyncClient, container: Container, admin: dict[str, str], tenant: dict[str, Any]
) -> None:
    m = await market(client, container, admin, tenant)
    o = (await place(client, m)).json()
    base = f"{ORDERS}/{o['id']}"
    assert_problem(await client.post(base + "/confirm", headers=m["h"]), 409, "ORDER_STATE_CONFLICT")
    assert_problem(await client.post(base + "/dispute", headers=m["h"], json={"reason": "x"}), 409,
                   "ORDER_STATE_CONFLICT")
    assert_problem(await client.post(base + "/dispute/resolution", headers=m["h"], json={"outcome": "refund"}),
                   403, "PERMISSION_DENIED")
    assert_problem(await client.post(base + "/dispute/resolution", headers=admin, json={"outcome": "refund"}),
                   409, "ORDER_STATE_CONFLICT")
    assert_problem(await client.post(base + "/cancel", headers=m["sh"]), 403, "PERMISSION_DENIED")
    r = await client.post(base + "/cancel", headers=m["h"], json={"reason": "changed my mind"})
    assert r.status_code == 200 and (r.json()["status"], r.json()["payment"]["status"]) == ("cancelled",
                                                                                            "cancelled")
    assert r.json()["cancelReason"] == "changed my mind"
    assert (await client.post(base + "/cancel", headers=m["h"])).json()["version"] == r.json()["version"]
    task = await client.get(f"/v1/machines/{m['buyer']}/tasks/{o['taskId']}", headers=fresh(m["h"], r))
    assert task.json()["status"] == "cancelled"
    assert_problem(await client.get(f"{ORDERS}/{uuid.uuid4()}", headers=m["h"]), 404, "NOT_FOUND")


async def test_lists_as_buyer_and_seller_with_filters_and_pages(
    client: httpx.AsyncClient, container: Container, admin: dict[str, str], tenant: dict[str, Any]
) -> None:
    m = await market(client, container, admin, tenant)
    ids = [(await place(client, m)).json()["id"] for _ in range(3)]
    last = await client.post(f"{ORDERS}/{ids[0]}/cancel", headers=m["h"])
    h = fresh(m["h"], last)
    page = await client.get(ORDERS, headers=h, params={"limit": 2})
    assert page.status_code == 200 and [o["id"] for o in page.json()["data"]] == ids[:2]
    rest = await client.get(ORDERS, headers=m["h"], params={"limit": 2, "cursor": page.json()["nextCursor"]})
    assert [o["id"] for o in rest.json()["data"]] == ids[2:] and rest.json()["nextCursor"] is None
    cancelled = await client.get(ORDERS, headers=m["h"], params={"status": "cancelled"})
    assert [o["id"] for o in cancelled.json()["data"]] == ids[:1]
    assert cancelled.json()["data"][0]["paymentStatus"] == "cancelled"
    sold = await client.get(ORDERS, headers=fresh(m["sh"], last), params={"role": "seller",
                                                                          "machineId": m["seller"]})
    assert [o["id"] for o in sold.json()["data"]] == ids
    assert (await client.get(ORDERS, headers=m["sh"])).json()["data"] == []  # the seller bought nothing
    seen = await client.get(f"{ORDERS}/{ids[1]}", headers=m["sh"])
    assert seen.status_code == 200 and seen.json()["id"] == ids[1]
    assert_problem(await client.get(ORDERS, headers=m["h"], params={"cursor": "nope"}), 400, "VALIDATION_ERROR")


async def test_an_order_spend_limit_refuses_the_order(
    client: httpx.AsyncClient, container: Container, admin: dict[str, str], tenant: dict[str, Any]
) -> None:
    m = await market(client, container, admin, tenant, price=1000)
    await policy(client, container, m["h"], {"type": "spend-limit", "amount": {"amount": 500, "currency": "USD"},
                                             "period": "order"})
    body = assert_problem(await place(client, m), 403, "POLICY_DENIED")
    assert body["decisionId"] and body["rule"] == "spend-limit"


def signed(secret: str, body: bytes, t: int | None = None) -> dict[str, str]:
    t = int(time.time()) if t is None else t
    mac = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return {"MM-Signature": f"t={t},v1={mac}", "Content-Type": "application/json"}


async def test_rail_callback_signed_records_the_proof_and_refuses_bad_stale_and_replayed(
    client: httpx.AsyncClient, container: Container, admin: dict[str, str], tenant: dict[str, Any],
    database_url: str
) -> None:
    m = await market(client, container, admin, tenant, price=700)
    o = (await place(client, m)).json()
    body = json.dumps({"orderId": o["id"], "intentId": o["paymentIntent"]["id"], "amount": 700, "currency": "USD",
                       "reference": "ch_123"}).encode()
    url = "/v1/payments/callbacks/acme-pay"
    # Not configured on the shared app: refused.
    assert_problem(await client.post(url, content=body, headers=signed("s3cret", body)), 400,
                   "PAYMENT_CALLBACK_INVALID")
    settings = Settings(secret_key=TEST_SECRET_KEY, payment_webhook_secret="s3cret")
    async with api_on(settings, database_url) as (rail, _):
        for headers in (signed("wrong", body), signed("s3cret", body, int(time.time()) - 301), {}):
            assert_problem(await rail.post(url, content=body, headers=headers), 400, "PAYMENT_CALLBACK_INVALID")
        other = body.replace(b"700", b"699")
        assert_problem(await rail.post(url, content=other, headers=signed("s3cret", other)), 400,
                       "PAYMENT_CALLBACK_INVALID")
        unchanged = await client.get(f"{ORDERS}/{o['id']}", headers=m["h"])
        assert unchanged.json()["version"] == o["version"]
        ok = signed("s3cret", body)
        r = await rail.post(url, content=body, headers=ok)
        assert r.status_code == 200, r.text
        assert (r.json()["status"], r.json()["payment"]["method"], r.json()["payment"]["rail"],
                r.json()["payment"]["reference"]) == ("paid", "rail", "acme-pay", "ch_123")
        assert_problem(await rail.post(url, content=body, headers=ok), 400, "PAYMENT_CALLBACK_INVALID")
        after = await client.get(f"{ORDERS}/{o['id']}", headers=m["h"])
        assert after.json()["version"] == r.json()["version"]


async def executed_order(client: httpx.AsyncClient, container: Container, admin: dict[str, str], m: dict[str, Any],
                         funds: int) -> dict[str, Any]:
    """Deposited, placed, paid over HTTP; the escrow held and a successful execution recorded by the worker's
    service (the worker tests run the real executor)."""
    dep = await client.post(f"/v1/accounts/{m['account']}/deposits", headers=admin,
                            json={"amount": {"amount": funds, "currency": "USD"}})
    assert dep.status_code == 201, dep.text
    o = (await place(client, m)).json()
    r = await client.post(f"{ORDERS}/{o['id']}/payment", headers=m["h"],
                          json={"proof": {"signature": m["keys"].sign(o["paymentIntent"]["signingPayload"])}})
    assert r.status_code == 200, r.text
    worker = CommandContext(at=datetime.now(UTC), actor="worker:test", is_admin=True)
    held = await container.order_settlement.hold(worker, uuid.UUID(o["id"]))
    assert held.order.status == "executing"
    order = held.order
    order.record_execution(Execution(run_id=None, succeeded=True, code=None, http_status=200,
                                     result_digest="0" * 64, receipt=None, receipt_verified=False), worker.at)
    await container.repo.save(order, worker)
    return (await client.get(f"{ORDERS}/{o['id']}", headers=m["h"])).json()


async def balance(client: httpx.AsyncClient, h: dict[str, str], last: httpx.Response) -> dict[str, int]:
    r = await client.get("/v1/accounts/me/balance", headers=fresh(h, last))
    assert r.status_code == 200, r.text
    rows = [b for b in r.json()["data"] if b["currency"] == "USD"]
    return {"available": rows[0]["available"]["amount"], "escrow": rows[0]["escrow"]["amount"]} if rows else {}


async def test_dispute_then_split_resolution_moves_the_money_once(
    client: httpx.AsyncClient, container: Container, admin: dict[str, str], tenant: dict[str, Any]
) -> None:
    m = {**await market(client, container, admin, tenant, price=1000), "account": tenant["id"]}
    o = await executed_order(client, container, admin, m, 1500)
    assert o["status"] == "executed" and o["confirmBy"] and o["escrow"]["status"] == "held"
    base = f"{ORDERS}/{o['id']}"
    d = await client.post(base + "/dispute", headers=m["h"], json={"reason": "the answer was wrong"})
    assert d.status_code == 200 and d.json()["status"] == "disputed", d.text
    assert d.json()["dispute"]["reason"] == "the answer was wrong"
    assert_problem(await client.post(base + "/confirm", headers=m["h"]), 409, "ORDER_STATE_CONFLICT")
    assert_problem(await client.post(base + "/dispute/resolution", headers=admin,
                                     json={"outcome": "split"}), 400, "VALIDATION_ERROR")
    r = await client.post(base + "/dispute/resolution", headers=admin,
                          json={"outcome": "split", "sellerShare": 400, "note": "partly done"})
    assert r.status_code == 200, r.text
    v = r.json()
    assert (v["status"], v["escrow"]["status"]) == ("settled", "split")
    assert (v["escrow"]["released"]["amount"], v["escrow"]["refunded"]["amount"]) == (400, 600)
    assert v["dispute"]["outcome"] == "split" and v["dispute"]["sellerShare"] == 400
    assert_problem(await client.post(base + "/dispute/resolution", headers=admin, json={"outcome": "refund"}),
                   409, "ORDER_STATE_CONFLICT")
    assert await balance(client, m["h"], r) == {"available": 1100, "escrow": 0}
    assert await balance(client, m["sh"], r) == {"available": 390, "escrow": 0}  # 400 less the pro rata fee 10
    timeline = [t["type"] for t in v["timeline"]]
    assert timeline[-4:] == ["market.order.disputed", "market.dispute.resolved", "market.payment.released",
                             "market.payment.refunded"]


async def test_confirm_over_http_releases_to_the_seller_less_the_fee(
    client: httpx.AsyncClient, container: Container, admin: dict[str, str], tenant: dict[str, Any]
) -> None:
    m = {**await market(client, container, admin, tenant, price=2000), "account": tenant["id"]}
    o = await executed_order(client, container, admin, m, 2000)
    base = f"{ORDERS}/{o['id']}"
    assert_problem(await client.post(base + "/confirm", headers=m["sh"]), 403, "PERMISSION_DENIED")
    r = await client.post(base + "/confirm", headers=m["h"])
    assert r.status_code == 200 and (r.json()["status"], r.json()["escrow"]["status"]) == ("settled", "released")
    assert_problem(await client.post(base + "/dispute", headers=m["h"], json={"reason": "late"}), 409,
                   "ORDER_STATE_CONFLICT")
    assert await balance(client, m["h"], r) == {"available": 0, "escrow": 0}
    assert await balance(client, m["sh"], r) == {"available": 1950, "escrow": 0}
    sold = await client.get(ORDERS, headers=fresh(m["sh"], r), params={"role": "seller", "status": "settled"})
    assert [x["id"] for x in sold.json()["data"]] == [o["id"]]
    assert sold.json()["data"][0]["escrowStatus"] == "released"


@pytest.mark.parametrize("remembered", [True, False])
async def test_pay_and_confirm_decide_the_same_whether_or_not_the_process_remembers_the_order(
    client: httpx.AsyncClient, container: Container, admin: dict[str, str], tenant: dict[str, Any], remembered: bool
) -> None:
    """A process that placed or read an order loads it with the streams pay and confirm move (the buyer machine;
    the wallet and the credit shard) in one statement; one that has not reads it first. Same outcome, once."""
    m = {**await market(client, container, admin, tenant, price=2000), "account": tenant["id"]}
    dep = await client.post(f"/v1/accounts/{m['account']}/deposits", headers=admin,
                            json={"amount": {"amount": 2000, "currency": "USD"}})
    assert dep.status_code == 201, dep.text
    o = (await place(client, m)).json()
    oid, base = uuid.UUID(o["id"]), f"{ORDERS}/{o['id']}"
    facts = container.orders.facts_of(oid)
    assert facts is not None and (str(facts.machine_id), facts.currency) == (m["buyer"], "USD")
    if not remembered:
        container.orders.forget(oid)
    proof = {"proof": {"signature": m["keys"].sign(o["paymentIntent"]["signingPayload"])}}
    assert_problem(await client.post(base + "/payment", headers=m["h"], json={"proof": {"signature": Keys().sign(
        o["paymentIntent"]["signingPayload"])}}), 422, "PAYMENT_PROOF_INVALID")  # checked against the buyer's key
    paid = await client.post(base + "/payment", headers=m["h"], json=proof)
    assert paid.status_code == 200 and paid.json()["status"] == "paid", paid.text
    worker = CommandContext(at=datetime.now(UTC), actor="worker:test", is_admin=True)
    held = await container.order_settlement.hold(worker, oid)
    held.order.record_execution(Execution(run_id=None, succeeded=True, code=None, http_status=200,
                                          result_digest="0" * 64, receipt=None, receipt_verified=False), worker.at)
    await container.repo.save(held.order, worker)
    if not remembered:
        container.orders.forget(oid)
    r = await client.post(base + "/confirm", headers=m["h"])
    assert r.status_code == 200 and (r.json()["status"], r.json()["escrow"]["status"]) == ("settled", "released")
    assert [t["type"] for t in r.json()["timeline"]][-2:] == ["market.order.confirmed", "market.payment.released"]
    assert r.json()["timeline"] == (await client.get(base, headers=m["h"])).json()["timeline"]
    assert_problem(await client.post(base + "/confirm", headers=m["h"]), 409, "ORDER_STATE_CONFLICT")
    assert await balance(client, m["h"], r) == {"available": 0, "escrow": 0}
    assert await balance(client, m["sh"], r) == {"available": 1950, "escrow": 0}

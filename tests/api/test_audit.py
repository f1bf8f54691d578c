"""The audit feed over HTTP: typed, ordered, redacted, filterable, paged and scoped to the caller's account."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from app.api.pagination import encode_cursor
from tests.api.helpers import Keys, action, assert_problem, challenge, new_tenant, register, walk_pages

LIFECYCLE = ["machine.registered", "machine.identity-challenge-issued", "machine.identity-verified",
             "machine.activated"]


async def _feed(client: httpx.AsyncClient, headers: dict[str, str], last: httpx.Response,
                params: Any = None) -> list[dict[str, Any]]:
    """The audit entries matching `params`, read after `last`'s write is in the feed."""
    r = await client.get("/v1/audit-events", params=params,
                         headers={**headers, "X-Min-Position": last.headers["x-log-position"]})
    assert r.status_code == 200, r.text
    data: list[dict[str, Any]] = r.json()["data"]
    return data


async def _lifecycle(client: httpx.AsyncClient, headers: dict[str, str]) -> tuple[str, dict[str, Any], httpx.Response]:
    """Register, challenge, verify and activate one machine; returns its id, the challenge and the last response."""
    r, keys = await register(client, headers, name="audited")
    mid = r.json()["id"]
    c = await challenge(client, headers, mid)
    v = await client.post(f"/v1/machines/{mid}/identity/verify", headers=headers,
                          json={"challengeId": c["challengeId"], "signature": keys.sign(c["nonce"])})
    assert v.status_code == 200, v.text
    a = await action(client, headers, mid, "activate")
    assert a.status_code == 200, a.text
    return mid, c, a


async def _admin_key_id(client: httpx.AsyncClient, admin: dict[str, str]) -> str:
    me = (await client.get("/v1/accounts/me", headers=admin)).json()
    keys = (await client.get(f"/v1/accounts/{me['id']}/api-keys", headers=admin)).json()
    (bootstrap,) = [k for k in keys if k["label"] == "bootstrap"]
    return str(bootstrap["id"])


async def test_a_machines_story_is_in_the_feed_in_order(client: httpx.AsyncClient, tenant: dict[str, Any]) -> None:
    h = {**tenant["headers"], "X-Correlation-Id": f"corr-{uuid.uuid4().hex}"}
    rid = f"req-{uuid.uuid4().hex}"
    r, keys = await register(client, {**h, "X-Request-Id": rid}, name="audited")
    mid = r.json()["id"]
    c = await challenge(client, h, mid)
    v = await client.post(f"/v1/machines/{mid}/identity/verify", headers=h,
                          json={"challengeId": c["challengeId"], "signature": keys.sign(c["nonce"])})
    a = await action(client, h, mid, "activate")
    events = await _feed(client, tenant["headers"], a, {"machineId": mid})

    assert [e["type"] for e in events] == LIFECYCLE
    me = await client.get("/v1/accounts/me", headers=tenant["headers"])
    for e in events:
        uuid.UUID(e["id"])
        assert e["accountId"] == tenant["id"] and e["machineId"] == mid
        assert e["subject"] == f"machine:{mid}"
        assert e["actor"].startswith("api-key:")
        assert datetime.fromisoformat(e["occurredAt"]).tzinfo is not None
        assert e["correlationId"] == h["X-Correlation-Id"]
        assert e["requestId"] and e["cursor"]
    assert me.status_code == 200
    assert [datetime.fromisoformat(e["occurredAt"]) for e in events] == sorted(
        datetime.fromisoformat(e["occurredAt"]) for e in events)
    registered, issued, verified, activated = events
    assert registered["requestId"] == rid == r.headers["x-request-id"]
    assert verified["requestId"] == v.headers["x-request-id"]
    assert activated["requestId"] == a.headers["x-request-id"]
    assert registered["data"]["name"] == "audited" and registered["data"]["publicKey"] == keys.public_b64
    assert issued["data"]["challengeId"] == c["challengeId"]
    assert verified["data"]["challengeId"] == c["challengeId"]


async def test_the_feed_holds_no_secrets(
    client: httpx.AsyncClient, tenant: dict[str, Any], admin: dict[str, str]
) -> None:
    _mid, c, _last = await _lifecycle(client, tenant["headers"])
    issued = await client.post(f"/v1/accounts/{tenant['id']}/api-keys", json={"label": "x"},
                               headers=tenant["headers"])
    key = issued.json()["key"]
    feed = await client.get("/v1/audit-events", params={"limit": 200},
                            headers={**tenant["headers"], "X-Min-Position": issued.headers["x-log-position"]})
    text = feed.text
    assert c["nonce"] not in text and key not in text
    for e in feed.json()["data"]:
        assert not {"nonce", "keyHash", "key_hash", "tokenHash", "secret", "authToken"} & set(e["data"]), e
    key_events = [e for e in feed.json()["data"] if e["type"] == "api-key.issued"]
    assert key_events and all(e["data"].get("prefix") for e in key_events)


async def test_account_events_are_in_the_feed(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    t = await new_tenant(client, admin)
    me = await client.get("/v1/accounts/me", headers=t["headers"])
    assert me.status_code == 200
    events = await _feed(client, t["headers"], t["opened"], [("type", "account.opened"), ("type", "api-key.issued")])
    assert [e["type"] for e in events] == ["account.opened", "api-key.issued"]
    opened, issued = events
    assert opened["subject"] == f"account:{t['id']}" and opened["accountId"] == t["id"]
    assert opened["data"]["name"] == me.json()["name"] and opened["data"]["isAdmin"] is False
    assert opened["machineId"] is None
    assert issued["data"]["keyId"] == t["key"]["id"] and issued["data"]["prefix"] == t["key"]["prefix"]
    assert opened["actor"] == issued["actor"] == f"api-key:{await _admin_key_id(client, admin)}"


async def test_filter_by_several_types(client: httpx.AsyncClient, tenant: dict[str, Any]) -> None:
    mid, _, last = await _lifecycle(client, tenant["headers"])
    params = [("machineId", mid), ("type", "machine.activated"), ("type", "machine.registered")]
    assert [e["type"] for e in await _feed(client, tenant["headers"], last, params)] == [
        "machine.registered", "machine.activated"]
    only = await _feed(client, tenant["headers"], last, {"type": "machine.identity-verified", "machineId": mid})
    assert [e["type"] for e in only] == ["machine.identity-verified"]
    none = await _feed(client, tenant["headers"], last, {"type": "no.such-type", "machineId": mid})
    assert none == []


async def test_filter_by_subject_and_actor(client: httpx.AsyncClient, tenant: dict[str, Any]) -> None:
    mid, _, last = await _lifecycle(client, tenant["headers"])
    by_subject = await _feed(client, tenant["headers"], last, {"subject": f"machine:{mid}"})
    assert [e["type"] for e in by_subject] == LIFECYCLE
    actor = by_subject[0]["actor"]
    by_actor = await _feed(client, tenant["headers"], last, {"actor": actor, "machineId": mid})
    assert len(by_actor) == 4
    assert await _feed(client, tenant["headers"], last, {"actor": "api-key:nobody"}) == []


async def test_since_and_until(client: httpx.AsyncClient, tenant: dict[str, Any]) -> None:
    mid, _, last = await _lifecycle(client, tenant["headers"])
    events = await _feed(client, tenant["headers"], last, {"machineId": mid})
    times = [datetime.fromisoformat(e["occurredAt"]) for e in events]
    pivot = times[2]  # the verification
    after = await _feed(client, tenant["headers"], last, {"machineId": mid, "since": pivot.isoformat()})
    assert [e["type"] for e in after] == LIFECYCLE[2:]
    before = await _feed(client, tenant["headers"], last, {"machineId": mid, "until": pivot.isoformat()})
    assert [e["type"] for e in before] == LIFECYCLE[:2]  # until is exclusive, so pages of windows never overlap
    window = await _feed(client, tenant["headers"], last, {
        "machineId": mid, "since": times[1].isoformat(), "until": times[3].isoformat()})
    assert [e["type"] for e in window] == LIFECYCLE[1:3]
    future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    assert await _feed(client, tenant["headers"], last, {"machineId": mid, "since": future}) == []
    assert_problem(await client.get("/v1/audit-events", params={"since": "yesterday"}, headers=tenant["headers"]),
                   400, "VALIDATION_ERROR")


async def test_cursor_pagination(client: httpx.AsyncClient, tenant: dict[str, Any]) -> None:
    h = tenant["headers"]
    mid, _, last = await _lifecycle(client, h)
    for name in ("a", "b", "c"):
        last = await client.patch(f"/v1/machines/{mid}", json={"name": name}, headers=h)
    everything = await _feed(client, h, last, {"machineId": mid, "limit": 200})
    assert len(everything) == 7

    seen, pages = await walk_pages(client, "/v1/audit-events", h, 3, machineId=mid)
    assert pages == 3
    assert seen == [e["id"] for e in everything]
    # Each entry's own cursor resumes right after it.
    r = await client.get("/v1/audit-events", params={"machineId": mid, "cursor": everything[4]["cursor"]}, headers=h)
    assert [e["id"] for e in r.json()["data"]] == [e["id"] for e in everything[5:]]


@pytest.mark.parametrize("cursor", [
    "garbage!!", encode_cursor(1), encode_cursor("a", "b"), encode_cursor(1.5, 2), encode_cursor(True, True),
    encode_cursor(2**70, 1), encode_cursor(-1, -1),
])
async def test_a_bad_cursor_is_400(client: httpx.AsyncClient, tenant: dict[str, Any], cursor: str) -> None:
    r = await client.get("/v1/audit-events", params={"cursor": cursor}, headers=tenant["headers"])
    assert_problem(r, 400, "VALIDATION_ERROR")


@pytest.mark.parametrize("params", [{"limit": "0"}, {"limit": "201"}, {"machineId": "nope"}])
async def test_bad_filters_are_400(client: httpx.AsyncClient, tenant: dict[str, Any], params: dict[str, str]) -> None:
    assert_problem(await client.get("/v1/audit-events", params=params, headers=tenant["headers"]),
                   400, "VALIDATION_ERROR")


async def test_tenants_see_only_their_own_entries(
    client: httpx.AsyncClient, tenant: dict[str, Any], admin: dict[str, str]
) -> None:
    other = await new_tenant(client, admin)
    a_mid, _, _a_last = await _lifecycle(client, tenant["headers"])
    b_mid, _, b_last = await _lifecycle(client, other["headers"])

    assert await _feed(client, tenant["headers"], b_last, {"machineId": b_mid}) == []
    mine = await _feed(client, tenant["headers"], b_last, {"limit": 200})
    assert mine and {e["accountId"] for e in mine} == {tenant["id"]}
    assert b_mid not in {e["machineId"] for e in mine}
    theirs = await _feed(client, other["headers"], b_last, {"limit": 200})
    assert {e["accountId"] for e in theirs} == {other["id"]}

    seen_by_admin = {e["machineId"] for mid in (a_mid, b_mid)
                     for e in await _feed(client, admin, b_last, {"machineId": mid})}
    assert seen_by_admin == {a_mid, b_mid}


async def test_admin_actions_on_a_tenants_machine_stay_in_the_tenants_feed(
    client: httpx.AsyncClient, tenant: dict[str, Any], admin: dict[str, str]
) -> None:
    r, _ = await register(client, tenant["headers"])
    mid = r.json()["id"]
    retired = await action(client, admin, mid, "retire", json={"reason": "abuse"})
    assert retired.status_code == 200, retired.text
    events = await _feed(client, tenant["headers"], retired, {"machineId": mid, "type": "machine.retired"})
    assert len(events) == 1
    assert events[0]["accountId"] == tenant["id"] and events[0]["data"]["reason"] == "abuse"
    assert events[0]["actor"] == f"api-key:{await _admin_key_id(client, admin)}"  # who did it, not who owns it


async def test_a_failed_verification_is_audited(client: httpx.AsyncClient, tenant: dict[str, Any]) -> None:
    h = tenant["headers"]
    r, _ = await register(client, h)
    mid = r.json()["id"]
    c = await challenge(client, h, mid)
    bad = await client.post(f"/v1/machines/{mid}/identity/verify", headers=h,
                            json={"challengeId": c["challengeId"], "signature": Keys().sign(c["nonce"])})
    assert bad.status_code == 422
    last = await client.patch(f"/v1/machines/{mid}", json={"name": "after"}, headers=h)
    events = await _feed(client, h, last, {"machineId": mid})
    assert [e["type"] for e in events] == ["machine.registered", "machine.identity-challenge-issued",
                                          "machine.identity-verification-failed", "machine.profile-revised"]
    assert events[2]["data"]["challengeId"] == c["challengeId"] and events[2]["data"]["reason"]

"""Machines over HTTP: registration, reads, listing with filters and cursors, revisions, lifecycle, tenancy."""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from app.api.pagination import encode_cursor
from app.container import Container
from domain.machines.errors import MachineNotActivated, MachineNotActive
from domain.shared.context import CommandContext
from domain.shared.errors import NotFound
from tests.api.helpers import (
    Keys,
    action,
    active_machine,
    assert_problem,
    fresh,
    new_tenant,
    register,
    verify,
    walk_pages,
)

# --- register ------------------------------------------------------------------------------------


async def test_register_answers_201_with_location_etag_and_position(
    client: httpx.AsyncClient, tenant: dict[str, Any]
) -> None:
    keys = Keys()
    r = await client.post("/v1/machines", headers=tenant["headers"], json={
        "name": "render-node", "publicKey": keys.public_b64, "description": "GPU box", "labels": {"gpu": "a100"},
    })
    assert r.status_code == 201, r.text
    body = r.json()
    uuid.UUID(body["id"])
    assert body["status"] == "registered"
    assert body["identityVerified"] is False and body["identityVerifiedAt"] is None
    assert body["accountId"] == tenant["id"]
    assert body["publicKey"] == keys.public_b64
    assert body["labels"] == {"gpu": "a100"} and body["description"] == "GPU box"
    assert body["version"] == 1
    assert r.headers["location"] == f"/v1/machines/{body['id']}"
    assert r.headers["etag"] == '"1"'
    tx, _, pos = r.headers["x-log-position"].partition(".")
    assert tx.isdigit() and pos.isdigit()


@pytest.mark.parametrize("public_key", [
    "not base64!!",
    base64.b64encode(b"x" * 31).decode(),
    base64.b64encode(b"x" * 33).decode(),
    "A" * 43,  # missing padding: not strict base64
])
async def test_register_refuses_a_bad_public_key(
    client: httpx.AsyncClient, tenant: dict[str, Any], public_key: str
) -> None:
    r = await client.post("/v1/machines", headers=tenant["headers"], json={"name": "m", "publicKey": public_key})
    body = assert_problem(r, 400, "VALIDATION_ERROR")
    assert "publicKey" in body["detail"]


@pytest.mark.parametrize("payload", [
    {"name": "m", "publicKey": Keys().public_b64, "colour": "blue"},  # unknown field
    {"publicKey": Keys().public_b64},  # missing name
    {"name": "", "publicKey": Keys().public_b64},
    {"name": "   ", "publicKey": Keys().public_b64},
    {"name": "m", "publicKey": Keys().public_b64, "labels": {"Not Valid": "x"}},
    {"name": "m", "public_key": Keys().public_b64},  # snake_case is not the wire format
])
async def test_register_refuses_invalid_bodies(
    client: httpx.AsyncClient, tenant: dict[str, Any], payload: dict[str, Any]
) -> None:
    r = await client.post("/v1/machines", headers=tenant["headers"], json=payload)
    assert_problem(r, 400, "VALIDATION_ERROR")


async def test_register_refuses_malformed_json(client: httpx.AsyncClient, tenant: dict[str, Any]) -> None:
    r = await client.post("/v1/machines", headers={**tenant["headers"], "content-type": "application/json"},
                          content=b'{"name": ')
    assert_problem(r, 400, "VALIDATION_ERROR")


# --- read ----------------------------------------------------------------------------------------


async def test_get_reads_its_own_write(client: httpx.AsyncClient, tenant: dict[str, Any]) -> None:
    r, _ = await register(client, tenant["headers"], name="reader", labels={"zone": "eu"})
    created = r.json()
    got = await client.get(f"/v1/machines/{created['id']}", headers=fresh(tenant["headers"], r))
    assert got.status_code == 200, got.text
    assert got.json() == created
    assert got.headers["etag"] == r.headers["etag"]


async def test_get_unknown_machine_is_404(client: httpx.AsyncClient, tenant: dict[str, Any]) -> None:
    r = await client.get(f"/v1/machines/{uuid.uuid4()}", headers=tenant["headers"])
    assert_problem(r, 404, "NOT_FOUND")


async def test_get_with_a_malformed_min_position_is_400(client: httpx.AsyncClient, tenant: dict[str, Any]) -> None:
    r = await client.get(f"/v1/machines/{uuid.uuid4()}", headers={**tenant["headers"], "X-Min-Position": "soon"})
    assert_problem(r, 400, "VALIDATION_ERROR")


# --- list ----------------------------------------------------------------------------------------


async def test_list_filters_by_status(client: httpx.AsyncClient, tenant: dict[str, Any]) -> None:
    h = tenant["headers"]
    registered, _ = await register(client, h)
    active = await active_machine(client, h)
    mine = await client.get("/v1/machines", headers=fresh(h, active))
    assert {m["id"] for m in mine.json()["data"]} == {registered.json()["id"], active.json()["id"]}

    r = await client.get("/v1/machines", params={"status": "active"}, headers=h)
    assert r.status_code == 200, r.text
    assert [m["id"] for m in r.json()["data"]] == [active.json()["id"]]
    assert r.json()["data"][0]["identityVerified"] is True

    r = await client.get("/v1/machines", params=[("status", "active"), ("status", "registered")], headers=h)
    assert len(r.json()["data"]) == 2

    r = await client.get("/v1/machines", params={"status": "retired"}, headers=h)
    assert r.json() == {"data": [], "nextCursor": None}

    assert_problem(await client.get("/v1/machines", params={"status": "sleeping"}, headers=h), 400, "VALIDATION_ERROR")


async def test_list_filters_by_label_key_and_value(client: httpx.AsyncClient, tenant: dict[str, Any]) -> None:
    h = tenant["headers"]
    a100, _ = await register(client, h, labels={"gpu": "a100", "zone": "eu"})
    h100, _ = await register(client, h, labels={"gpu": "h100"})
    plain, _ = await register(client, h, labels={"zone": "eu"})
    await client.get(f"/v1/machines/{plain.json()['id']}", headers=fresh(h, plain))

    async def ids(*labels: str) -> set[str]:
        r = await client.get("/v1/machines", params=[("label", v) for v in labels], headers=h)
        assert r.status_code == 200, r.text
        return {m["id"] for m in r.json()["data"]}

    assert await ids("gpu") == {a100.json()["id"], h100.json()["id"]}
    assert await ids("gpu=h100") == {h100.json()["id"]}
    assert await ids("gpu", "zone=eu") == {a100.json()["id"]}
    assert await ids("zone=eu") == {a100.json()["id"], plain.json()["id"]}
    assert await ids("gpu=tpu") == set()
    assert_problem(await client.get("/v1/machines", params={"label": "=x"}, headers=h), 400, "VALIDATION_ERROR")


async def test_list_pages_with_a_cursor_without_gaps_or_duplicates(
    client: httpx.AsyncClient, tenant: dict[str, Any]
) -> None:
    h = tenant["headers"]
    created = [(await register(client, h))[0] for _ in range(7)]
    await client.get(f"/v1/machines/{created[-1].json()['id']}", headers=fresh(h, created[-1]))

    seen, pages = await walk_pages(client, "/v1/machines", h, 3)
    assert pages == 3
    assert seen == [c.json()["id"] for c in created]  # registration order, each exactly once


async def test_list_with_exactly_limit_items_ends_with_a_null_cursor(
    client: httpx.AsyncClient, tenant: dict[str, Any]
) -> None:
    h = tenant["headers"]
    last = None
    for _ in range(2):
        last, _k = await register(client, h)
    assert last is not None
    r = await client.get("/v1/machines", params={"limit": 2}, headers=fresh(h, last))
    assert len(r.json()["data"]) == 2 and r.json()["nextCursor"] is None


@pytest.mark.parametrize("cursor", [
    "garbage!!",
    encode_cursor("x"),
    encode_cursor(1, 2),
    encode_cursor("2024-01-01T00:00:00+00:00", 5),
    encode_cursor("2024-01-01T00:00:00+00:00", "not-a-uuid"),
    encode_cursor(None, None),
    encode_cursor("2024-01-01T00:00:00", "4329377c-2697-4f2c-b0d6-a81121b823bd"),  # no offset: ambiguous instant
    base64.urlsafe_b64encode(b"\xff\xfe").decode(),
])
async def test_list_refuses_a_bad_cursor(client: httpx.AsyncClient, tenant: dict[str, Any], cursor: str) -> None:
    r = await client.get("/v1/machines", params={"cursor": cursor}, headers=tenant["headers"])
    assert_problem(r, 400, "VALIDATION_ERROR")


@pytest.mark.parametrize("limit", ["0", "-1", "201", "many"])
async def test_list_refuses_a_bad_limit(client: httpx.AsyncClient, tenant: dict[str, Any], limit: str) -> None:
    r = await client.get("/v1/machines", params={"limit": limit}, headers=tenant["headers"])
    assert_problem(r, 400, "VALIDATION_ERROR")


# --- revise --------------------------------------------------------------------------------------


async def test_patch_with_current_if_match_returns_a_new_etag(
    client: httpx.AsyncClient, tenant: dict[str, Any]
) -> None:
    h = tenant["headers"]
    r, _ = await register(client, h, labels={"a": "1"})
    mid, tag = r.json()["id"], r.headers["etag"]
    p = await client.patch(f"/v1/machines/{mid}", json={"name": "renamed", "labels": {"b": "2"}},
                           headers={**h, "If-Match": tag})
    assert p.status_code == 200, p.text
    assert p.json()["name"] == "renamed" and p.json()["labels"] == {"b": "2"}
    assert p.json()["description"] == r.json()["description"]
    assert p.headers["etag"] == '"2"' != tag
    got = await client.get(f"/v1/machines/{mid}", headers=fresh(h, p))
    assert got.json()["name"] == "renamed" and got.headers["etag"] == p.headers["etag"]


async def test_patch_with_stale_if_match_is_412(client: httpx.AsyncClient, tenant: dict[str, Any]) -> None:
    h = tenant["headers"]
    r, _ = await register(client, h)
    mid, stale = r.json()["id"], r.headers["etag"]
    assert (await client.patch(f"/v1/machines/{mid}", json={"name": "one"}, headers={**h, "If-Match": stale})
            ).status_code == 200
    p = await client.patch(f"/v1/machines/{mid}", json={"name": "two"}, headers={**h, "If-Match": stale})
    body = assert_problem(p, 412, "PRECONDITION_FAILED")
    assert body["extra"]["currentVersion"] == 2
    # A body that is wrong in itself is refused as such before the precondition is judged (RFC 9110 §13.2.2).
    bad = await client.patch(f"/v1/machines/{mid}", json={"name": "   "}, headers={**h, "If-Match": stale})
    assert bad.status_code in (400, 422) and bad.json()["code"] == "VALIDATION_ERROR", bad.text


@pytest.mark.parametrize("if_match", ["abc", '"1', "1.5", "W/", '"-1"'])
async def test_patch_with_malformed_if_match_is_400(
    client: httpx.AsyncClient, tenant: dict[str, Any], if_match: str
) -> None:
    r, _ = await register(client, tenant["headers"])
    p = await client.patch(f"/v1/machines/{r.json()['id']}", json={"name": "x"},
                           headers={**tenant["headers"], "If-Match": if_match})
    assert_problem(p, 400, "VALIDATION_ERROR")


async def test_patch_accepts_weak_and_star_if_match(client: httpx.AsyncClient, tenant: dict[str, Any]) -> None:
    h = tenant["headers"]
    r, _ = await register(client, h)
    mid = r.json()["id"]
    p = await client.patch(f"/v1/machines/{mid}", json={"name": "weak"}, headers={**h, "If-Match": 'W/"1"'})
    assert p.status_code == 200, p.text
    p = await client.patch(f"/v1/machines/{mid}", json={"name": "star"}, headers={**h, "If-Match": "*"})
    assert p.status_code == 200 and p.headers["etag"] == '"3"'


async def test_patch_refuses_unknown_fields_and_bad_labels(client: httpx.AsyncClient, tenant: dict[str, Any]) -> None:
    r, _ = await register(client, tenant["headers"])
    url = f"/v1/machines/{r.json()['id']}"
    assert_problem(await client.patch(url, json={"status": "active"}, headers=tenant["headers"]),
                   400, "VALIDATION_ERROR")
    assert_problem(await client.patch(url, json={"labels": {"UPPER": "x"}}, headers=tenant["headers"]),
                   400, "VALIDATION_ERROR")


# --- lifecycle -----------------------------------------------------------------------------------


async def test_lifecycle_from_registration_to_retirement(client: httpx.AsyncClient, tenant: dict[str, Any]) -> None:
    h = tenant["headers"]
    r, keys = await register(client, h)
    mid = r.json()["id"]

    assert_problem(await action(client, h, mid, "activate"), 409, "MACHINE_NOT_ACTIVATED")
    v = await verify(client, h, mid, keys)
    assert v.json()["identityVerified"] is True and v.json()["status"] == "registered"

    steps = [("activate", {}, "active"), ("suspend", {"json": {"reason": "maintenance"}}, "suspended"),
             ("reactivate", {}, "active"), ("suspend", {}, "suspended"), ("retire", {"json": {}}, "retired")]
    last = v
    for name, kwargs, status in steps:
        res = await action(client, h, mid, name, **kwargs)
        assert res.status_code == 200, (name, res.text)
        assert res.json()["status"] == status
        assert int(res.headers["etag"].strip('"')) == res.json()["version"] > last.json()["version"]
        last = res
    got = await client.get(f"/v1/machines/{mid}", headers=fresh(h, last))
    assert got.json()["status"] == "retired"


@pytest.mark.parametrize("state, verb", [
    ("active", "activate"), ("active", "reactivate"),
    ("suspended", "suspend"), ("suspended", "activate"),
    ("retired", "retire"), ("retired", "reactivate"), ("retired", "suspend"), ("retired", "activate"),
    ("registered", "suspend"), ("registered", "reactivate"),
])
async def test_invalid_transitions_are_409(
    client: httpx.AsyncClient, tenant: dict[str, Any], state: str, verb: str
) -> None:
    h = tenant["headers"]
    r = await active_machine(client, h)
    mid = r.json()["id"]
    path = {"active": [], "suspended": ["suspend"], "retired": ["retire"], "registered": None}[state]
    if path is None:  # a verified machine that was never activated
        reg, keys = await register(client, h)
        mid = reg.json()["id"]
        await verify(client, h, mid, keys)
    else:
        for step in path:
            assert (await action(client, h, mid, step)).status_code == 200
    body = assert_problem(await action(client, h, mid, verb), 409, "INVALID_STATE_TRANSITION")
    assert body["extra"]["status"] == state


async def test_lifecycle_actions_honour_if_match(client: httpx.AsyncClient, tenant: dict[str, Any]) -> None:
    h = tenant["headers"]
    r = await active_machine(client, h)
    mid = r.json()["id"]
    stale = f'"{r.json()["version"] - 1}"'
    assert_problem(await action(client, {**h, "If-Match": stale}, mid, "suspend"),
                   412, "PRECONDITION_FAILED")
    ok = await action(client, {**h, "If-Match": r.headers["etag"]}, mid, "suspend")
    assert ok.status_code == 200 and ok.json()["status"] == "suspended"


async def test_status_change_body_refuses_unknown_fields(client: httpx.AsyncClient, tenant: dict[str, Any]) -> None:
    r = await active_machine(client, tenant["headers"])
    res = await action(client, tenant["headers"], r.json()["id"], "suspend", json={"why": "x"})
    assert_problem(res, 400, "VALIDATION_ERROR")


async def test_require_operational_is_the_shared_guard(
    client: httpx.AsyncClient, tenant: dict[str, Any], container: Container
) -> None:
    h = tenant["headers"]
    ctx = CommandContext(at=datetime.now(UTC), actor="test", account_id=uuid.UUID(tenant["id"]))
    reg, keys = await register(client, h)
    mid = uuid.UUID(reg.json()["id"])
    with pytest.raises(MachineNotActivated):
        await container.machines.require_operational(ctx, mid)
    await verify(client, h, str(mid), keys)
    with pytest.raises(MachineNotActive) as not_active:  # verified but never activated
        await container.machines.require_operational(ctx, mid)
    assert not_active.value.extra["status"] == "registered"
    await action(client, h, str(mid), "activate")
    assert (await container.machines.require_operational(ctx, mid)).status == "active"
    await action(client, h, str(mid), "suspend")
    with pytest.raises(MachineNotActive):
        await container.machines.require_operational(ctx, mid)
    await action(client, h, str(mid), "reactivate")
    await container.machines.require_operational(ctx, mid)
    await action(client, h, str(mid), "retire")
    with pytest.raises(MachineNotActive):
        await container.machines.require_operational(ctx, mid)
    stranger = CommandContext(at=datetime.now(UTC), actor="test", account_id=uuid.uuid4())
    with pytest.raises(NotFound):
        await container.machines.require_operational(stranger, mid)


# --- tenancy -------------------------------------------------------------------------------------


async def test_another_accounts_machine_does_not_exist_for_you(
    client: httpx.AsyncClient, tenant: dict[str, Any], admin: dict[str, str]
) -> None:
    owner = tenant["headers"]
    other = (await new_tenant(client, admin))["headers"]
    r, keys = await register(client, owner)
    mid = r.json()["id"]
    await client.get(f"/v1/machines/{mid}", headers=fresh(owner, r))

    assert_problem(await client.get(f"/v1/machines/{mid}", headers=fresh(other, r)), 404, "NOT_FOUND")
    assert_problem(await client.patch(f"/v1/machines/{mid}", json={"name": "mine"}, headers=other),
                   404, "NOT_FOUND")
    for verb in ("identity/challenge", "activate", "suspend", "reactivate", "retire"):
        assert_problem(await action(client, other, mid, verb), 404, "NOT_FOUND")
    c = await client.post(f"/v1/machines/{mid}/identity/challenge", headers=owner)
    v = await client.post(f"/v1/machines/{mid}/identity/verify", headers=other,
                          json={"challengeId": c.json()["challengeId"], "signature": keys.sign(c.json()["nonce"])})
    assert_problem(v, 404, "NOT_FOUND")
    listed = await client.get("/v1/machines", headers=other)
    assert mid not in {m["id"] for m in listed.json()["data"]}

    # Nothing the stranger tried changed the machine: its owner still holds an open, unburned challenge.
    ok = await client.post(f"/v1/machines/{mid}/identity/verify", headers=owner,
                           json={"challengeId": c.json()["challengeId"], "signature": keys.sign(c.json()["nonce"])})
    assert ok.status_code == 200 and ok.json()["name"] == r.json()["name"]


async def test_admin_sees_every_accounts_machines(
    client: httpx.AsyncClient, tenant: dict[str, Any], admin: dict[str, str]
) -> None:
    other = await new_tenant(client, admin)
    a, _ = await register(client, tenant["headers"], labels={"probe": "admin-sees-all"})
    b, _ = await register(client, other["headers"], labels={"probe": "admin-sees-all"})
    r = await client.get("/v1/machines", params={"label": "probe=admin-sees-all", "limit": 200},
                         headers=fresh(admin, b))
    ids = {m["id"]: m["accountId"] for m in r.json()["data"]}
    assert ids[a.json()["id"]] == tenant["id"] and ids[b.json()["id"]] == other["id"]
    got = await client.get(f"/v1/machines/{a.json()['id']}", headers=fresh(admin, a))
    assert got.status_code == 200
    res = await action(client, admin, a.json()["id"], "retire")
    assert res.status_code == 200 and res.json()["status"] == "retired"

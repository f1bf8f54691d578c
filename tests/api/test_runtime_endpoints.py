"""Runtime endpoints over HTTP: manual upsert (PUT), reads, delete, URL rules, machine guards, audit."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from app.container import Container
from domain.runtime.endpoint import endpoint_id
from tests.api.helpers import action, active_machine, assert_problem, audit_feed, fresh, new_tenant, register

BASE = "/v1/machines/{}/runtime-endpoints"


async def _machine(client: httpx.AsyncClient, tenant: dict[str, Any]) -> str:
    r = await active_machine(client, tenant["headers"])
    return str(r.json()["id"])


async def _put(client: httpx.AsyncClient, headers: dict[str, str], mid: str, key: str, **body: Any) -> httpx.Response:
    return await client.put(f"{BASE.format(mid)}/{key}", headers=headers,
                            json={"url": "https://node.example.net/v1", **body})


async def test_put_creates_then_replaces_and_never_echoes_the_token(
    client: httpx.AsyncClient, tenant: dict[str, Any], container: Container
) -> None:
    h, mid = tenant["headers"], await _machine(client, tenant)
    r = await _put(client, h, mid, "OpenAI", authToken="s3cret-token-1", metadata={"region": "eu"})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["providerKey"] == "openai" and body["source"] == "manual" and body["status"] == "active"
    assert body["hasAuthToken"] is True and body["metadata"] == {"region": "eu"}
    assert body["leaseExpiresAt"] is None and body["agentId"] is None and body["version"] == 1
    assert "s3cret-token-1" not in r.text and "authToken" not in body
    assert r.headers["location"] == f"{BASE.format(mid)}/openai" and r.headers["etag"] == '"1"'
    # At rest the token is sealed: not in the log, yet the executor can still open it.
    stream = endpoint_id(uuid.UUID(mid), "openai")
    stored = await container.pool.fetchval("SELECT data::text FROM events WHERE stream_id = $1", stream)
    assert "s3cret-token-1" not in stored and '"auth_token": "mmseal1.' in stored
    endpoint = await container.runtime.load_stream(stream)
    assert endpoint is not None and container.runtime.reveal_auth_token(endpoint) == "s3cret-token-1"

    r2 = await _put(client, h, mid, "openai", url="http://10.0.0.7:8080/run")
    assert r2.status_code == 200, r2.text
    assert r2.json()["version"] == 2 and r2.json()["hasAuthToken"] is False  # PUT replaces the whole endpoint
    assert "location" not in r2.headers

    got = await client.get(f"{BASE.format(mid)}/OPENAI", headers=fresh(h, r2))
    assert got.status_code == 200, got.text
    assert got.json()["url"] == "http://10.0.0.7:8080/run" and got.headers["etag"] == '"2"'
    listed = await client.get(BASE.format(mid), headers=fresh(h, r2))
    assert [e["providerKey"] for e in listed.json()["data"]] == ["openai"]
    assert "s3cret-token-1" not in got.text + listed.text


@pytest.mark.parametrize("url", [
    "ftp://node.example.net/x",
    "https://",
    "https:///path-only",
    "https://user:pw@node.example.net/",
    "https://token@node.example.net/",
    "https://node.example.net:99999/",
    "https://node example.net/",
    "node.example.net/no-scheme",
    "javascript:alert(1)",
    "https://node.example.net/" + "a" * 2048,
], ids=lambda u: u[:40])
async def test_invalid_urls_are_validation_errors(client: httpx.AsyncClient, tenant: dict[str, Any],
                                                  url: str) -> None:
    mid = await _machine(client, tenant)
    body = assert_problem(await _put(client, tenant["headers"], mid, "openai", url=url), 400, "VALIDATION_ERROR")
    assert "url" in (body["detail"] + str(body.get("errors"))).lower()


@pytest.mark.parametrize("key", ["-starts-with-dash", "a" * 64, "has space", "ünïcode"], ids=lambda k: k[:20])
async def test_invalid_provider_keys_are_validation_errors(client: httpx.AsyncClient, tenant: dict[str, Any],
                                                           key: str) -> None:
    mid = await _machine(client, tenant)
    assert_problem(await _put(client, tenant["headers"], mid, key), 400, "VALIDATION_ERROR")


async def test_unknown_fields_and_oversized_metadata_are_refused(client: httpx.AsyncClient,
                                                                 tenant: dict[str, Any]) -> None:
    h, mid = tenant["headers"], await _machine(client, tenant)
    assert_problem(await _put(client, h, mid, "k", source="agent"), 400, "VALIDATION_ERROR")
    assert_problem(await _put(client, h, mid, "k", metadata={"blob": "x" * 9000}), 400, "VALIDATION_ERROR")


async def test_a_repeated_put_changes_nothing_twice(client: httpx.AsyncClient, tenant: dict[str, Any]) -> None:
    h, mid = tenant["headers"], await _machine(client, tenant)
    first = await _put(client, h, mid, "same", authToken="t", metadata={"a": 1})
    again = await _put(client, h, mid, "same", authToken="t", metadata={"a": 1})
    assert first.status_code == 201 and again.status_code == 200, again.text
    assert again.json()["version"] == first.json()["version"] == 1 and again.headers["etag"] == '"1"'
    entries = await audit_feed(client, h, first, machineId=mid, type="runtime-endpoint.upserted")
    assert len(entries) == 1


async def test_delete_then_404_then_put_revives(client: httpx.AsyncClient, tenant: dict[str, Any]) -> None:
    h, mid = tenant["headers"], await _machine(client, tenant)
    await _put(client, h, mid, "gpu", authToken="t")
    d = await client.delete(f"{BASE.format(mid)}/GPU", headers=h)
    assert d.status_code == 204, d.text
    assert_problem(await client.get(f"{BASE.format(mid)}/gpu", headers=fresh(h, d)), 404, "NOT_FOUND")
    listed = await client.get(BASE.format(mid), headers=fresh(h, d))
    assert listed.json()["data"] == []
    assert_problem(await client.delete(f"{BASE.format(mid)}/gpu", headers=h), 404, "NOT_FOUND")
    assert_problem(await client.delete(f"{BASE.format(mid)}/never", headers=h), 404, "NOT_FOUND")
    again = await _put(client, h, mid, "gpu")
    assert again.status_code == 201 and again.json()["version"] == 3 and again.json()["hasAuthToken"] is False


async def test_if_match_guards_put_and_delete(client: httpx.AsyncClient, tenant: dict[str, Any]) -> None:
    h, mid = tenant["headers"], await _machine(client, tenant)
    r = await _put(client, h, mid, "svc")
    assert_problem(await client.put(f"{BASE.format(mid)}/svc", headers={**h, "If-Match": '"7"'},
                                    json={"url": "https://a.example"}), 412, "PRECONDITION_FAILED")
    assert_problem(await client.delete(f"{BASE.format(mid)}/svc", headers={**h, "If-Match": '"7"'}),
                   412, "PRECONDITION_FAILED")
    # A body that is wrong in itself is refused as such before the precondition is judged (RFC 9110 §13.2.2).
    bad = await client.put(f"{BASE.format(mid)}/svc", headers={**h, "If-Match": '"7"'}, json={"url": "ftp://x"})
    assert bad.status_code in (400, 422) and bad.json()["code"] == "VALIDATION_ERROR", bad.text
    ok = await client.put(f"{BASE.format(mid)}/svc", headers={**h, "If-Match": r.headers["etag"]},
                          json={"url": "https://a.example"})
    assert ok.status_code == 200, ok.text


async def test_machine_guards_apply_to_every_route(client: httpx.AsyncClient, tenant: dict[str, Any],
                                                   admin: dict[str, str]) -> None:
    h = tenant["headers"]
    registered, _ = await register(client, h)
    rid = registered.json()["id"]
    suspended = await _machine(client, tenant)
    await _put(client, h, suspended, "kept")
    assert (await action(client, h, suspended, "suspend")).status_code == 200
    other = await new_tenant(client, admin)
    for mid, headers, status, code in [
        (rid, h, 409, "MACHINE_NOT_ACTIVATED"),
        (suspended, h, 409, "MACHINE_NOT_ACTIVE"),
        (suspended, other["headers"], 404, "NOT_FOUND"),
        (str(uuid.uuid4()), h, 404, "NOT_FOUND"),
    ]:
        assert_problem(await client.get(BASE.format(mid), headers=headers), status, code)
        assert_problem(await client.get(f"{BASE.format(mid)}/kept", headers=headers), status, code)
        assert_problem(await _put(client, headers, mid, "kept"), status, code)
        assert_problem(await client.delete(f"{BASE.format(mid)}/kept", headers=headers), status, code)


async def test_list_pages_and_filters(client: httpx.AsyncClient, tenant: dict[str, Any]) -> None:
    h, mid = tenant["headers"], await _machine(client, tenant)
    last = None
    for key in ["c", "a", "e", "b", "d"]:
        last = await _put(client, h, mid, key)
    assert last is not None
    seen, cursor = [], None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = (await client.get(BASE.format(mid), params=params, headers=fresh(h, last))).json()
        seen += [e["providerKey"] for e in page["data"]]
        cursor = page["nextCursor"]
        if cursor is None:
            break
    assert seen == ["a", "b", "c", "d", "e"]
    agent_only = await client.get(BASE.format(mid), params={"source": "agent"}, headers=fresh(h, last))
    assert agent_only.json()["data"] == []
    assert_problem(await client.get(BASE.format(mid), params={"cursor": "bm90LWpzb24"}, headers=h),
                   400, "VALIDATION_ERROR")


async def test_each_change_is_audited_without_the_secret(client: httpx.AsyncClient, tenant: dict[str, Any]) -> None:
    h, mid = tenant["headers"], await _machine(client, tenant)
    await _put(client, h, mid, "Audited", authToken="do-not-leak-42", metadata={"tier": "gold"})
    d = await client.delete(f"{BASE.format(mid)}/audited", headers=h)
    entries = await audit_feed(client, h, d, machineId=mid, type=["runtime-endpoint.upserted",
                                                                   "runtime-endpoint.deleted"])
    assert [e["type"] for e in entries] == ["runtime-endpoint.upserted", "runtime-endpoint.deleted"]
    upserted = entries[0]
    assert upserted["machineId"] == mid and upserted["accountId"] == tenant["id"]
    assert upserted["subject"] == f"runtime-endpoint:{endpoint_id(uuid.UUID(mid), 'audited')}"
    assert upserted["data"]["providerKey"] == "audited" and upserted["data"]["source"] == "manual"
    assert upserted["data"]["hasAuthToken"] is True and upserted["data"]["metadata"] == {"tier": "gold"}
    everything = await audit_feed(client, h, d, machineId=mid)
    assert "do-not-leak-42" not in str(everything)


@pytest.mark.parametrize("metadata", [
    '{"a": ' + "[" * 100_000 + "]" * 100_000 + "}",  # deeper than the decoder recurses: refused, not a 500
    '{"a": ' + "[" * 17 + "]" * 17 + "}",  # stored documents stay 16 levels deep at most
    '{"a": 1e999}',  # infinity: JSON and jsonb cannot carry it back out
], ids=["absurdly-deep", "too-deep", "infinite"])
async def test_unstorable_metadata_is_a_validation_error(client: httpx.AsyncClient, tenant: dict[str, Any],
                                                         metadata: str) -> None:
    h, mid = tenant["headers"], await _machine(client, tenant)
    body = '{"url": "https://a.example", "metadata": ' + metadata + "}"
    assert_problem(await client.put(f"{BASE.format(mid)}/deep", content=body,
                                    headers={**h, "content-type": "application/json"}), 400, "VALIDATION_ERROR")
    enrolled = await client.post(f"/v1/machines/{mid}/agents/enrollment", headers=h,
                                 json={"name": "a", "allowedProviderKeys": ["deep"]})
    beat = ('{"agentToken": "' + enrolled.json()["agentToken"] + '", "endpoints": [{"providerKey": "deep",'
            ' "url": "https://a.example", "metadata": ' + metadata + "}]}")
    assert_problem(await client.post("/v1/machine-agents/heartbeat", content=beat,
                                     headers={"content-type": "application/json"}), 400, "VALIDATION_ERROR")

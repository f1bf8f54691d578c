"""Machine agents over HTTP: enrolment, one-time tokens, heartbeats with leases, revocation, errors, audit."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from app.container import Container
from domain.runtime.endpoint import endpoint_id
from domain.shared.context import CommandContext
from tests.api.helpers import action, active_machine, assert_problem, audit_feed, fresh, new_tenant, register

HEARTBEAT = "/v1/machine-agents/heartbeat"


async def _machine(client: httpx.AsyncClient, tenant: dict[str, Any]) -> str:
    return str((await active_machine(client, tenant["headers"])).json()["id"])


async def _enroll(client: httpx.AsyncClient, headers: dict[str, str], mid: str, **body: Any) -> httpx.Response:
    r = await client.post(f"/v1/machines/{mid}/agents/enrollment", headers=headers,
                          json={"name": "edge-agent", "allowedProviderKeys": ["openai", "GPU"], **body})
    return r


async def _agent(client: httpx.AsyncClient, tenant: dict[str, Any], **body: Any) -> tuple[str, str, str]:
    """(machine id, agent id, agent token) of a freshly enrolled agent on a fresh active machine."""
    mid = await _machine(client, tenant)
    r = await _enroll(client, tenant["headers"], mid, **body)
    assert r.status_code == 201, r.text
    return mid, r.json()["agent"]["id"], r.json()["agentToken"]


def _ep(key: str = "openai", **more: Any) -> dict[str, Any]:
    return {"providerKey": key, "url": f"https://{key}.node.example.net/v1", **more}


async def test_enrollment_shows_the_token_once(client: httpx.AsyncClient, tenant: dict[str, Any]) -> None:
    h, mid = tenant["headers"], await _machine(client, tenant)
    r = await _enroll(client, h, mid, leaseSeconds=45)
    assert r.status_code == 201, r.text
    body = r.json()
    agent, token = body["agent"], body["agentToken"]
    assert token.startswith("mma_") and len(token) > 60
    assert agent["status"] == "enrolled" and agent["machineId"] == mid and agent["leaseSeconds"] == 45
    assert agent["allowedProviderKeys"] == ["gpu", "openai"] and agent["lastSeenAt"] is None
    assert r.headers["location"] == f"/v1/machines/{mid}/agents/{agent['id']}"
    assert r.headers["cache-control"] == "no-store"
    got = await client.get(f"/v1/machines/{mid}/agents/{agent['id']}", headers=fresh(h, r))
    assert got.status_code == 200 and got.json()["name"] == "edge-agent" and got.headers["etag"] == '"1"'
    listed = await client.get(f"/v1/machines/{mid}/agents", headers=fresh(h, r))
    assert [a["id"] for a in listed.json()["data"]] == [agent["id"]]
    assert token not in got.text + listed.text


@pytest.mark.parametrize("body", [
    {"name": ""}, {"name": "x", "leaseSeconds": 0}, {"name": "x", "leaseSeconds": 86_401},
    {"name": "x", "allowedProviderKeys": ["bad key"]}, {"name": "x", "extra": 1},
], ids=["empty-name", "lease-0", "lease-too-long", "bad-key", "unknown-field"])
async def test_enrollment_validation(client: httpx.AsyncClient, tenant: dict[str, Any], body: dict[str, Any]) -> None:
    mid = await _machine(client, tenant)
    r = await client.post(f"/v1/machines/{mid}/agents/enrollment", headers=tenant["headers"], json=body)
    assert_problem(r, 400, "VALIDATION_ERROR")


async def test_heartbeat_activates_the_agent_and_leases_its_endpoints(
    client: httpx.AsyncClient, tenant: dict[str, Any], container: Container
) -> None:
    h = tenant["headers"]
    mid, aid, token = await _agent(client, tenant, leaseSeconds=30)
    before = datetime.now(UTC)
    r = await client.post(HEARTBEAT, json={"agentToken": token, "endpoints": [
        _ep("OpenAI", authToken="agent-secret-9", metadata={"v": 2}), _ep("gpu")]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["agent"]["status"] == "active" and body["agent"]["id"] == aid
    lease = datetime.fromisoformat(body["leaseExpiresAt"])
    assert before + timedelta(seconds=29) < lease < datetime.now(UTC) + timedelta(seconds=31)
    assert datetime.fromisoformat(body["agent"]["lastSeenAt"]) >= before
    eps = {e["providerKey"]: e for e in body["endpoints"]}
    assert set(eps) == {"openai", "gpu"}
    assert eps["openai"]["source"] == "agent" and eps["openai"]["agentId"] == aid
    assert eps["openai"]["hasAuthToken"] is True and eps["openai"]["status"] == "active"
    assert datetime.fromisoformat(eps["openai"]["leaseExpiresAt"]) == lease
    assert "agent-secret-9" not in r.text
    stream = endpoint_id(uuid.UUID(mid), "openai")
    assert "agent-secret-9" not in str(await container.pool.fetch("SELECT data::text FROM events WHERE stream_id = $1",
                                                                  stream))
    sealed = await container.runtime.load_stream(stream)
    assert sealed is not None and container.runtime.reveal_auth_token(sealed) == "agent-secret-9"

    listed = await client.get(f"/v1/machines/{mid}/runtime-endpoints", headers=fresh(h, r))
    assert {e["providerKey"]: e["source"] for e in listed.json()["data"]} == {"gpu": "agent", "openai": "agent"}
    agent = await client.get(f"/v1/machines/{mid}/agents/{aid}", headers=fresh(h, r))
    assert agent.json()["status"] == "active" and agent.json()["lastSeenAt"] is not None


@pytest.mark.parametrize("how", ["body", "pairing-header", "bearer"])
async def test_heartbeat_accepts_the_token_three_ways(client: httpx.AsyncClient, tenant: dict[str, Any],
                                                     how: str) -> None:
    _, aid, token = await _agent(client, tenant)
    body: dict[str, Any] = {"endpoints": [_ep()], "leaseSeconds": 5}
    headers = {}
    if how == "body":
        body["agentToken"] = token
    elif how == "pairing-header":
        headers["x-agent-pairing-token"] = token
    else:
        headers["Authorization"] = f"Bearer {token}"
    r = await client.post(HEARTBEAT, json=body, headers=headers)
    assert r.status_code == 200, r.text
    assert r.json()["agent"]["id"] == aid


async def test_heartbeat_refusals(client: httpx.AsyncClient, tenant: dict[str, Any], container: Container) -> None:
    h = tenant["headers"]
    mid, aid, token = await _agent(client, tenant)
    wrong_secret = token.rsplit("_", 1)[0] + "_" + "x" * 43
    unknown_agent = f"mma_{uuid.uuid4().hex}_{'y' * 43}"
    assert_problem(await client.post(HEARTBEAT, json={"endpoints": []}), 401, "AGENT_AUTH_REQUIRED")
    assert_problem(await client.post(HEARTBEAT, json={"agentToken": "garbage"}), 401, "AGENT_AUTH_INVALID")
    assert_problem(await client.post(HEARTBEAT, json={"agentToken": wrong_secret}), 401, "AGENT_AUTH_INVALID")
    assert_problem(await client.post(HEARTBEAT, json={}, headers=h), 401, "AGENT_AUTH_INVALID")  # an API key
    assert_problem(await client.post(HEARTBEAT, json={"agentToken": unknown_agent}), 404, "NOT_FOUND")
    denied = assert_problem(await client.post(HEARTBEAT, json={"agentToken": token, "endpoints": [_ep("other")]}),
                            403, "AGENT_POLICY_DENIED")
    assert denied["extra"]["denied"] == ["other"]
    for bad in ([_ep(url="ftp://x.example")], [_ep(url="https://u:p@x.example")], [_ep(), _ep("OPENAI")]):
        assert_problem(await client.post(HEARTBEAT, json={"agentToken": token, "endpoints": bad}),
                       400, "VALIDATION_ERROR")
    assert_problem(await client.post(HEARTBEAT, json={"agentToken": token, "leaseSeconds": 0}), 400,
                   "VALIDATION_ERROR")
    # None of the refusals recorded anything: the agent's stream holds only its enrolment, and no endpoint exists.
    assert [e.type for e in await container.store.load(uuid.UUID(aid))] == ["runtime:MachineAgent.Enrolled"]
    assert await container.runtime.load(uuid.UUID(mid), "openai") is None


async def test_refusals_after_a_beat_when_the_agents_machine_is_known(
    client: httpx.AsyncClient, tenant: dict[str, Any], container: Container
) -> None:
    """A process that has seen an agent loads it with its machine and endpoints in one statement: the checks
    still come first, and a refusal still records nothing."""
    mid, aid, token = await _agent(client, tenant)
    assert (await client.post(HEARTBEAT, json={"agentToken": token, "endpoints": [_ep()]})).status_code == 200
    before = [e.type for e in await container.store.load(uuid.UUID(aid))]
    wrong_secret = token.rsplit("_", 1)[0] + "_" + "x" * 43
    assert_problem(await client.post(HEARTBEAT, json={"agentToken": wrong_secret, "endpoints": [_ep()]}),
                   401, "AGENT_AUTH_INVALID")
    assert_problem(await client.post(HEARTBEAT, json={"agentToken": token, "endpoints": [_ep("other")]}),
                   403, "AGENT_POLICY_DENIED")
    assert [e.type for e in await container.store.load(uuid.UUID(aid))] == before
    again = await client.post(HEARTBEAT, json={"agentToken": token, "endpoints": [_ep(), _ep("gpu")]})
    assert again.status_code == 200, again.text
    assert sorted(e["providerKey"] for e in again.json()["endpoints"]) == ["gpu", "openai"]
    assert (await container.runtime.load(uuid.UUID(mid), "gpu")) is not None


async def test_revoked_agent_is_inactive_and_machine_guard_applies(
    client: httpx.AsyncClient, tenant: dict[str, Any]
) -> None:
    h = tenant["headers"]
    mid, aid, token = await _agent(client, tenant)
    assert (await client.post(HEARTBEAT, json={"agentToken": token})).status_code == 200
    assert (await action(client, h, mid, "suspend")).status_code == 200
    assert_problem(await client.post(HEARTBEAT, json={"agentToken": token}), 409, "MACHINE_NOT_ACTIVE")
    assert (await action(client, h, mid, "reactivate")).status_code == 200
    r = await client.post(f"/v1/machines/{mid}/agents/{aid}/revoke", headers=h, json={"reason": "lost laptop"})
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "revoked" and r.headers["etag"] == f'"{r.json()["version"]}"'
    assert_problem(await client.post(HEARTBEAT, json={"agentToken": token}), 403, "AGENT_PAIRING_INACTIVE")
    assert_problem(await client.post(f"/v1/machines/{mid}/agents/{aid}/revoke", headers=h), 409,
                   "INVALID_STATE_TRANSITION")
    assert_problem(await client.post(f"/v1/machines/{mid}/agents/{uuid.uuid4()}/revoke", headers=h), 404,
                   "NOT_FOUND")
    listed = await client.get(f"/v1/machines/{mid}/agents", params={"status": "revoked"}, headers=fresh(h, r))
    assert [a["id"] for a in listed.json()["data"]] == [aid]


async def test_agent_routes_guard_the_machine(client: httpx.AsyncClient, tenant: dict[str, Any],
                                              admin: dict[str, str]) -> None:
    h = tenant["headers"]
    registered, _ = await register(client, h)
    rid = registered.json()["id"]
    mid, aid, _ = await _agent(client, tenant)
    other = await new_tenant(client, admin)
    for machine, headers, status, code in [(rid, h, 409, "MACHINE_NOT_ACTIVATED"),
                                           (mid, other["headers"], 404, "NOT_FOUND")]:
        assert_problem(await _enroll(client, headers, machine), status, code)
        assert_problem(await client.get(f"/v1/machines/{machine}/agents", headers=headers), status, code)
        assert_problem(await client.get(f"/v1/machines/{machine}/agents/{aid}", headers=headers), status, code)
        assert_problem(await client.post(f"/v1/machines/{machine}/agents/{aid}/revoke", headers=headers),
                       status, code)
    # An agent is only found under its own machine.
    other_mid = await _machine(client, tenant)
    assert_problem(await client.get(f"/v1/machines/{other_mid}/agents/{aid}", headers=h), 404, "NOT_FOUND")


async def test_a_retried_heartbeat_with_the_same_idempotency_key_records_once(
    client: httpx.AsyncClient, tenant: dict[str, Any]
) -> None:
    _, _, token = await _agent(client, tenant)
    body = {"agentToken": token, "endpoints": [_ep()]}
    first = await client.post(HEARTBEAT, json=body, headers={"Idempotency-Key": "beat-1"})
    second = await client.post(HEARTBEAT, json=body, headers={"Idempotency-Key": "beat-1"})
    assert first.status_code == second.status_code == 200
    assert first.json()["agent"]["version"] == second.json()["agent"]["version"] == 2
    assert first.json()["endpoints"][0]["version"] == second.json()["endpoints"][0]["version"] == 1
    third = await client.post(HEARTBEAT, json=body)
    assert third.json()["agent"]["version"] == 3


async def test_manual_put_takes_over_an_agent_endpoint(client: httpx.AsyncClient, tenant: dict[str, Any]) -> None:
    h = tenant["headers"]
    mid, _, token = await _agent(client, tenant)
    await client.post(HEARTBEAT, json={"agentToken": token, "endpoints": [_ep()]})
    r = await client.put(f"/v1/machines/{mid}/runtime-endpoints/openai", headers=h,
                         json={"url": "https://manual.example.net"})
    assert r.status_code == 200, r.text
    assert r.json()["source"] == "manual" and r.json()["leaseExpiresAt"] is None and r.json()["agentId"] is None


async def test_lease_expiry_and_revival(client: httpx.AsyncClient, tenant: dict[str, Any],
                                        container: Container) -> None:
    h = tenant["headers"]
    mid, _, token = await _agent(client, tenant, leaseSeconds=1)
    await client.put(f"/v1/machines/{mid}/runtime-endpoints/gpu", headers=h, json={"url": "https://m.example"})
    beat = await client.post(HEARTBEAT, json={"agentToken": token, "endpoints": [_ep()]})
    lease = datetime.fromisoformat(beat.json()["leaseExpiresAt"])
    worker = CommandContext(at=lease + timedelta(milliseconds=1), actor="test:lease", causation_id=str(uuid.uuid4()))
    early = CommandContext(at=lease - timedelta(milliseconds=500), actor="test:lease", causation_id="early")
    agent_ep, manual_ep = endpoint_id(uuid.UUID(mid), "openai"), endpoint_id(uuid.UUID(mid), "gpu")
    assert (await container.runtime.expire(early, agent_ep)).status == "active"  # type: ignore[union-attr]
    expired = await container.runtime.expire(worker, agent_ep)
    assert expired is not None and expired.status == "expired"
    again = await container.runtime.expire(worker, agent_ep)  # redelivered: nothing twice
    assert again is not None and again.version == expired.version
    manual = await container.runtime.expire(worker, manual_ep)  # a manual endpoint never expires
    assert manual is not None and manual.status == "active" and manual.version == 1

    # Where the Expired event sits in the log (head() may still be below it while other writers are open).
    last = (await container.store.load(agent_ep))[-1]
    assert last.type == "runtime:RuntimeEndpoint.Expired"
    seen = await client.get(f"/v1/machines/{mid}/runtime-endpoints", params={"status": "expired"},
                            headers={**h, "X-Min-Position": last.log_position.token()})
    assert [(e["providerKey"], e["status"]) for e in seen.json()["data"]] == [("openai", "expired")]
    revived = await client.post(HEARTBEAT, json={"agentToken": token, "endpoints": [_ep()]})
    assert revived.json()["endpoints"][0]["status"] == "active"
    got = await client.get(f"/v1/machines/{mid}/runtime-endpoints/openai", headers=fresh(h, revived))
    assert got.json()["status"] == "active"
    entries = await audit_feed(client, h, revived, machineId=mid, type="runtime-endpoint.expired")
    assert len(entries) == 1 and entries[0]["actor"] == "test:lease"
    assert entries[0]["data"]["leaseExpiresAt"] is not None


async def test_agent_story_is_audited_without_secrets(client: httpx.AsyncClient, tenant: dict[str, Any]) -> None:
    h = tenant["headers"]
    mid, aid, token = await _agent(client, tenant)
    await client.post(HEARTBEAT, json={"agentToken": token, "endpoints": [_ep(authToken="ep-secret-77")]})
    r = await client.post(f"/v1/machines/{mid}/agents/{aid}/revoke", headers=h)
    entries = await audit_feed(client, h, r, machineId=mid)
    types = [e["type"] for e in entries]
    # The heartbeat and the upserts it causes are one append, in that order.
    assert types[-4:] == ["machine-agent.enrolled", "machine-agent.heartbeat", "runtime-endpoint.upserted",
                          "machine-agent.revoked"]
    by_type = {e["type"]: e for e in entries}
    assert by_type["machine-agent.heartbeat"]["actor"] == f"agent:{aid}"
    assert by_type["machine-agent.heartbeat"]["subject"] == f"machine-agent:{aid}"
    assert by_type["machine-agent.heartbeat"]["data"]["providerKeys"] == ["openai"]
    assert by_type["runtime-endpoint.upserted"]["data"]["source"] == "agent"
    assert by_type["machine-agent.enrolled"]["data"]["allowedProviderKeys"] == ["gpu", "openai"]
    assert "tokenHash" not in by_type["machine-agent.enrolled"]["data"]
    text = str(entries)
    assert token not in text and "ep-secret-77" not in text and token.rsplit("_", 1)[1] not in text


async def test_a_retried_enrolment_replays_its_token_which_is_stored_sealed(
    client: httpx.AsyncClient, tenant: dict[str, Any], container: Container
) -> None:
    h, mid = {**tenant["headers"], "Idempotency-Key": f"enrol-{uuid.uuid4()}"}, await _machine(client, tenant)
    first = await _enroll(client, h, mid)
    again = await _enroll(client, h, mid)
    assert first.status_code == again.status_code == 201 and again.headers["idempotent-replayed"] == "true"
    token = first.json()["agentToken"]
    assert again.json()["agentToken"] == token and again.headers["cache-control"] == "no-store"
    stored = await container.pool.fetchval("SELECT response_body FROM idempotency_keys WHERE key = $1",
                                           h["Idempotency-Key"])
    assert token.encode() not in bytes(stored) and bytes(stored).startswith(b"mmseal1.")
    beat = await client.post(HEARTBEAT, json={"agentToken": again.json()["agentToken"]})
    assert beat.status_code == 200, beat.text

"""Stream history, causation traces and the audit feed's correlationId filter over HTTP."""

from __future__ import annotations

import uuid
from typing import Any

import httpx

from domain.runtime.endpoint import endpoint_id
from tests.api.helpers import active_machine, assert_problem, fresh, new_tenant, walk_pages

HEARTBEAT = "/v1/machine-agents/heartbeat"


async def _agent_with_endpoint(client: httpx.AsyncClient, h: dict[str, str], request_id: str
                               ) -> tuple[str, str, str, httpx.Response]:
    mid = (await active_machine(client, h)).json()["id"]
    r = await client.post(f"/v1/machines/{mid}/agents/enrollment", headers=h,
                          json={"name": "a", "allowedProviderKeys": ["gpu"], "leaseSeconds": 600})
    agent_id, token = r.json()["agent"]["id"], r.json()["agentToken"]
    beat = await client.post(HEARTBEAT, headers={"X-Request-Id": request_id}, json={
        "agentToken": token, "endpoints": [{"providerKey": "gpu", "url": "https://gpu.example.net",
                                            "authToken": "very-secret-endpoint-token"}]})
    assert beat.status_code == 200, beat.text
    return mid, agent_id, token, beat


async def test_a_streams_events_are_listed_redacted_with_metadata(client: httpx.AsyncClient,
                                                                  tenant: dict[str, Any]) -> None:
    h = tenant["headers"]
    rid = f"req-{uuid.uuid4().hex}"
    mid, agent_id, token, _ = await _agent_with_endpoint(client, h, rid)
    stream = endpoint_id(uuid.UUID(mid), "gpu")
    r = await client.get(f"/v1/streams/{stream}/events", headers=h)
    assert r.status_code == 200, r.text
    [opened] = r.json()["data"]
    assert opened["type"] == "runtime-endpoint.upserted" and opened["version"] == 1
    assert opened["data"]["hasAuthToken"] is True and "authToken" not in opened["data"]
    assert opened["metadata"]["requestId"] == rid and opened["metadata"]["correlationId"] == rid
    assert opened["metadata"]["actor"] == f"agent:{agent_id}" and opened["recordedAt"] and opened["logPosition"]
    assert "very-secret" not in r.text
    enrolled = (await client.get(f"/v1/streams/{agent_id}/events", headers=h)).json()["data"][0]
    assert enrolled["type"] == "machine-agent.enrolled" and "tokenHash" not in enrolled["data"]
    assert token not in str(enrolled)


async def test_pages_ranges_and_who_may_read(client: httpx.AsyncClient, tenant: dict[str, Any],
                                            admin: dict[str, str]) -> None:
    h = tenant["headers"]
    mid = (await active_machine(client, h)).json()["id"]
    for i in range(5):
        assert (await client.patch(f"/v1/machines/{mid}", headers=h, json={"name": f"n{i}"})).status_code == 200
    path = f"/v1/streams/{mid}/events"
    versions, pages = await walk_pages(client, path, h, 3)
    assert pages == 3 and len(versions) == 9  # registered, challenge, verified, activated, 5 revisions
    r = await client.get(path, headers=h, params={"fromVersion": 4, "toVersion": 6})
    assert [e["version"] for e in r.json()["data"]] == [4, 5, 6]
    assert (await client.get(path, headers=h, params={"fromVersion": 7, "toVersion": 2})).json()["data"] == []
    other = await new_tenant(client, admin)
    assert_problem(await client.get(path, headers=other["headers"]), 404, "NOT_FOUND")
    assert_problem(await client.get(f"/v1/streams/{uuid.uuid4()}/events", headers=h), 404, "NOT_FOUND")
    assert (await client.get(path, headers=admin)).status_code == 200
    assert_problem(await client.get(path, headers=h, params={"cursor": "bm9wZQ"}), 400, "VALIDATION_ERROR")
    # An account's own stream (no aggregate account of its own) belongs to that account.
    own = await client.get(f"/v1/streams/{tenant['id']}/events", headers=h)
    assert own.status_code == 200 and own.json()["data"][0]["type"] == "account.opened"
    assert_problem(await client.get(f"/v1/streams/{tenant['id']}/events", headers=other["headers"]), 404, "NOT_FOUND")


async def test_a_trace_and_the_audit_feed_by_correlation_id(client: httpx.AsyncClient, tenant: dict[str, Any],
                                                            admin: dict[str, str]) -> None:
    h = tenant["headers"]
    rid = f"req-{uuid.uuid4().hex}"
    _, _, _, beat = await _agent_with_endpoint(client, h, rid)
    r = await client.get(f"/v1/traces/{rid}", headers=h)
    assert r.status_code == 200, r.text
    trace = r.json()
    kinds = [(n["kind"], n["type"], n["depth"]) for n in trace["nodes"]]
    # The heartbeat and the endpoint's upsert, and under the upsert the relay's lease timer.
    assert ("event", "machine-agent.heartbeat", 0) in kinds and ("event", "runtime-endpoint.upserted", 0) in kinds
    assert ("message", "expire_runtime_endpoint_lease", 1) in kinds
    timer = next(n for n in trace["nodes"] if n["kind"] == "message")
    upsert = next(n for n in trace["nodes"] if n["type"] == "runtime-endpoint.upserted")
    assert timer["parentId"] == upsert["id"] and timer["at"] > upsert["at"]
    assert trace["startedAt"] <= trace["finishedAt"] and "very-secret" not in r.text
    other = await new_tenant(client, admin)
    assert_problem(await client.get(f"/v1/traces/{rid}", headers=other["headers"]), 404, "NOT_FOUND")
    assert (await client.get(f"/v1/traces/{rid}", headers=admin)).status_code == 200
    feed = await client.get("/v1/audit-events", params={"correlationId": rid}, headers=fresh(h, beat))
    assert sorted(e["type"] for e in feed.json()["data"]) == ["machine-agent.heartbeat", "runtime-endpoint.upserted"]
    assert {e["correlationId"] for e in feed.json()["data"]} == {rid}


async def test_a_request_id_finds_a_trace_sent_under_its_own_correlation_id(client: httpx.AsyncClient,
                                                                          tenant: dict[str, Any]) -> None:
    h = tenant["headers"]
    rid, cid = f"req-{uuid.uuid4().hex}", f"corr-{uuid.uuid4().hex}"
    r = await client.post("/v1/machines", headers={**h, "X-Request-Id": rid, "X-Correlation-Id": cid},
                          json={"name": "m", "publicKey": "A6EHv/POEL4dcN0Y50vAmWfk1jCbpQ1fHdyGZBJVMbg="})
    assert r.status_code == 201, r.text
    for trace_id in (rid, cid):
        got = await client.get(f"/v1/traces/{trace_id}", headers=h)
        assert got.status_code == 200, got.text
        assert [n["type"] for n in got.json()["nodes"]] == ["machine.registered"]
    assert_problem(await client.get(f"/v1/traces/nothing-{uuid.uuid4().hex}", headers=h), 404, "NOT_FOUND")

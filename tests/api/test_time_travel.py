"""Time travel: for a random walk of commands on each aggregate kind, the state at every version (?version=N,
?asOf=<recordedAt>) equals what a live GET answered right after that command."""

from __future__ import annotations

import random
import uuid
from typing import Any

import httpx
import pytest

from domain.graph.aggregate import graph_id_of
from domain.runtime.endpoint import endpoint_id
from tests.api.helpers import Keys, action, active_machine, assert_problem, register
from tests.api.walk import Step, Walk

HEARTBEAT = "/v1/machine-agents/heartbeat"


@pytest.mark.parametrize("seed", [1, 2])
async def test_machine_walk(client: httpx.AsyncClient, tenant: dict[str, Any], seed: int) -> None:
    rng, h = random.Random(seed), tenant["headers"]
    r, keys = await register(client, h)
    mid = r.json()["id"]
    walk = Walk(client, h, uuid.UUID(mid), f"/v1/machines/{mid}")
    await walk.step(lambda: _noop(r))

    async def verify() -> httpx.Response:
        issued = await client.post(f"/v1/machines/{mid}/identity/challenge", headers=h)
        if issued.status_code != 201:
            return issued  # already verified
        c = issued.json()
        signature = keys.sign(c["nonce"]) if rng.random() < 0.7 else Keys().sign(c["nonce"])
        return await client.post(f"/v1/machines/{mid}/identity/verify", headers=h,
                                 json={"challengeId": c["challengeId"], "signature": signature})

    steps: list[Step] = [
        verify,
        lambda: client.patch(f"/v1/machines/{mid}", headers=h, json={"name": f"n-{rng.randrange(1000)}",
                                                                   "labels": {"k": str(rng.randrange(9))}}),
        lambda: action(client, h, mid, "activate"),
        lambda: action(client, h, mid, "suspend", json={"reason": "walk"}),
        lambda: action(client, h, mid, "reactivate"),
    ]
    for _ in range(14):
        await walk.step(rng.choice(steps))
    await walk.step(lambda: action(client, h, mid, "retire"))
    await walk.check()


async def _noop(r: httpx.Response) -> httpx.Response:
    return r


async def _agent(client: httpx.AsyncClient, h: dict[str, str], mid: str) -> tuple[str, str]:
    r = await client.post(f"/v1/machines/{mid}/agents/enrollment", headers=h,
                          json={"name": "walker", "allowedProviderKeys": ["gpu"], "leaseSeconds": 600})
    assert r.status_code == 201, r.text
    return r.json()["agent"]["id"], r.json()["agentToken"]


@pytest.mark.parametrize("seed", [3, 4])
async def test_runtime_endpoint_and_agent_walks(client: httpx.AsyncClient, tenant: dict[str, Any], seed: int) -> None:
    rng, h = random.Random(seed), tenant["headers"]
    mid = (await active_machine(client, h)).json()["id"]
    agent_id, token = await _agent(client, h, mid)
    endpoint = Walk(client, h, endpoint_id(uuid.UUID(mid), "gpu"), f"/v1/machines/{mid}/runtime-endpoints/gpu")
    agent = Walk(client, h, uuid.UUID(agent_id), f"/v1/machines/{mid}/agents/{agent_id}")
    await agent.step(lambda: _noop(httpx.Response(200)))
    steps: list[Step] = [
        lambda: client.put(f"/v1/machines/{mid}/runtime-endpoints/GPU", headers=h,
                           json={"url": f"https://n{rng.randrange(99)}.example.net", "authToken": "s3cret-token",
                                 "metadata": {"r": rng.randrange(9)}}),
        lambda: client.post(HEARTBEAT, json={"agentToken": token, "endpoints": [
            {"providerKey": "gpu", "url": f"https://a{rng.randrange(99)}.example.net"}]}),
        lambda: client.delete(f"/v1/machines/{mid}/runtime-endpoints/gpu", headers=h),
    ]
    for _ in range(16):
        step = rng.choice(steps)
        await endpoint.step(step)
        await agent.step(_noop_step)
    await endpoint.step(steps[1])
    await agent.step(_noop_step)
    await agent.step(lambda: client.post(f"/v1/machines/{mid}/agents/{agent_id}/revoke", headers=h, json={}))
    await endpoint.check()
    await agent.check()
    r = await client.get(endpoint.path, headers=h, params={"version": 1})
    assert "s3cret" not in r.text


async def _noop_step() -> httpx.Response:
    return httpx.Response(200)


@pytest.mark.parametrize("seed", [5, 6])
async def test_graph_walk(client: httpx.AsyncClient, tenant: dict[str, Any], seed: int) -> None:
    rng, h = random.Random(seed), tenant["headers"]
    mid = (await active_machine(client, h)).json()["id"]
    base = f"/v1/machines/{mid}/graph"
    walk = Walk(client, h, graph_id_of(uuid.UUID(mid)), base)
    nodes: list[str] = []
    edges: list[str] = []

    async def create_node() -> httpx.Response:
        r = await client.post(f"{base}/nodes", headers=h, json={"type": "tool", "label": f"t{rng.randrange(99)}"})
        nodes.append(r.json()["id"])
        return r

    async def revise_node() -> httpx.Response:
        return await client.patch(f"{base}/nodes/{rng.choice(nodes)}", headers=h,
                                  json={"label": f"r{rng.randrange(99)}", "data": {"x": rng.randrange(9)}})

    async def create_edge() -> httpx.Response:
        a, b = rng.sample(nodes, 2)
        r = await client.post(f"{base}/edges", headers=h, json={"from": a, "to": b, "type": f"e{rng.randrange(3)}"})
        if r.status_code == 201:
            edges.append(r.json()["id"])
        return r

    async def delete_node() -> httpx.Response:
        node = nodes.pop(rng.randrange(len(nodes)))
        return await client.delete(f"{base}/nodes/{node}", headers=h)

    for _ in range(3):
        await walk.step(create_node)
    for _ in range(14):
        choices = [create_node, revise_node] + ([create_edge, delete_node] if len(nodes) >= 3 else [])
        await walk.step(rng.choice(choices))
    await walk.check()


async def test_bad_time_travel_requests(client: httpx.AsyncClient, tenant: dict[str, Any], admin: dict[str, str]
                                        ) -> None:
    h = tenant["headers"]
    r, _ = await register(client, h)
    path = f"/v1/machines/{r.json()['id']}"
    assert_problem(await client.get(path, headers=h, params={"asOf": "2026-01-01T00:00:00Z", "version": 1}),
                   422, "AMBIGUOUS_POINT_IN_TIME")
    assert_problem(await client.get(path, headers=h, params={"asOf": "yesterday"}), 400, "VALIDATION_ERROR")
    assert_problem(await client.get(path, headers=h, params={"version": 0}), 400, "VALIDATION_ERROR")
    ok = await client.get(path, headers=h, params={"version": 1})
    assert ok.status_code == 200 and ok.headers["etag"] == '"1"' and ok.headers["x-as-of-version"] == "1"
    # A time-travel GET answers before it would wait on X-Min-Position; a malformed one is still refused.
    assert_problem(await client.get(path, headers={**h, "X-Min-Position": "soon"}, params={"version": 1}),
                   400, "VALIDATION_ERROR")
    other = (await client.post("/v1/accounts", json={"name": "other"}, headers=admin)).json()["apiKey"]["key"]
    assert_problem(await client.get(path, headers={"Authorization": f"Bearer {other}"}, params={"version": 1}),
                   404, "NOT_FOUND")
    assert (await client.get(path, headers=admin, params={"version": 1})).status_code == 200

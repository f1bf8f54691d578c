"""A machine's capability graph over HTTP: nodes, edges, merges, cascades, guards, preconditions, audit."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from app.container import Container
from domain.graph import rules
from domain.graph.aggregate import graph_id_of
from domain.shared.context import CommandContext
from tests.api.helpers import action, active_machine, assert_problem, audit_feed, fresh, new_tenant, register

CAPABILITY = {"name": "Summarise", "price": {"amount": 250, "currency": "USD"}, "providerKey": "OpenAI",
              "inputSchema": {"type": "object"}}


def base(mid: str) -> str:
    return f"/v1/machines/{mid}/graph"


async def _machine(client: httpx.AsyncClient, tenant: dict[str, Any]) -> str:
    return str((await active_machine(client, tenant["headers"])).json()["id"])


async def _node(client: httpx.AsyncClient, h: dict[str, str], mid: str, **body: Any) -> httpx.Response:
    r = await client.post(f"{base(mid)}/nodes", headers=h, json={"type": "resource", "label": "n", **body})
    assert r.status_code == 201, r.text
    return r


async def _edge(client: httpx.AsyncClient, h: dict[str, str], mid: str, src: str, dst: str,
                **body: Any) -> httpx.Response:
    r = await client.post(f"{base(mid)}/edges", headers=h, json={"from": src, "to": dst, "type": "uses", **body})
    assert r.status_code == 201, r.text
    return r


# --- nodes -----------------------------------------------------------------------------------------


async def test_create_node_answers_201_and_reads_back(client: httpx.AsyncClient, tenant: dict[str, Any]) -> None:
    h, mid = tenant["headers"], await _machine(client, tenant)
    r = await client.post(f"{base(mid)}/nodes", headers=h,
                          json={"type": "resource", "label": "GPU pool", "data": {"gpus": 8}})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["status"] == "draft" and body["type"] == "resource" and body["label"] == "GPU pool"
    assert body["data"] == {"gpus": 8} and body["version"] == 1 and body["machineId"] == mid
    assert r.headers["location"] == f"{base(mid)}/nodes/{body['id']}" and r.headers["etag"] == '"1"'
    assert r.headers["x-log-position"]
    got = await client.get(r.headers["location"], headers=fresh(h, r))
    assert got.status_code == 200, got.text
    assert got.json() == body and got.headers["etag"] == '"1"'
    graph = await client.get(base(mid), headers=fresh(h, r))
    assert graph.status_code == 200, graph.text
    assert graph.json() == {"machineId": mid, "nodes": [body], "edges": []}


async def test_an_empty_graph_reads_as_empty(client: httpx.AsyncClient, tenant: dict[str, Any]) -> None:
    mid = await _machine(client, tenant)
    r = await client.get(base(mid), headers=tenant["headers"])
    assert r.status_code == 200 and r.json() == {"machineId": mid, "nodes": [], "edges": []}


async def test_a_capability_node_is_normalised_and_queryable(
    client: httpx.AsyncClient, tenant: dict[str, Any], container: Container
) -> None:
    h, mid = tenant["headers"], await _machine(client, tenant)
    r = await _node(client, h, mid, type="capability", label="summarise", status="active",
                    data={k: v for k, v in CAPABILITY.items() if k != "inputSchema"})
    assert r.json()["data"] == {**CAPABILITY, "providerKey": "openai", "inputSchema": {}}
    await client.get(base(mid), headers=fresh(h, r))
    # What the catalogue will ask: active capabilities, by provider, from the data column.
    found = await container.pool.fetchval(
        "SELECT count(*) FROM graph_nodes_view WHERE type = 'capability' AND status = 'active'"
        " AND data->>'providerKey' = 'openai' AND (data->'price'->>'amount')::bigint = 250 AND machine_id = $1",
        uuid.UUID(mid))
    assert found == 1


@pytest.mark.parametrize("body", [
    {"type": "widget", "label": "x"},
    {"type": "resource", "label": ""},
    {"type": "resource", "label": "   "},
    {"type": "resource", "label": "x" * 201},
    {"type": "resource", "label": "x", "status": "retired"},
    {"type": "resource", "label": "x", "colour": "blue"},
    {"label": "x"},
    {"type": "resource", "label": "x", "data": [1]},
    {"type": "resource", "label": "x", "data": {f"k{i}": i for i in range(65)}},
    {"type": "resource", "label": "x", "data": {"blob": "x" * 16384}},
    {"type": "resource", "label": "x", "data": {"deep": [[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]}},
    {"type": "resource", "label": "x", "data": {"deeper": "[" * 5000}},  # a string, not nesting: fine below
    {"type": "capability", "label": "x"},
    {"type": "capability", "label": "x", "data": {**CAPABILITY, "name": ""}},
    {"type": "capability", "label": "x", "data": {**CAPABILITY, "price": {"amount": 1.5, "currency": "USD"}}},
    {"type": "capability", "label": "x", "data": {**CAPABILITY, "price": {"amount": -1, "currency": "USD"}}},
    {"type": "capability", "label": "x", "data": {**CAPABILITY, "price": {"amount": 1, "currency": "dollars"}}},
    {"type": "capability", "label": "x", "data": {**CAPABILITY, "providerKey": "not a slug"}},
    {"type": "capability", "label": "x", "data": {**CAPABILITY, "inputSchema": "{}"}},
])
async def test_create_node_refuses_invalid_bodies(
    client: httpx.AsyncClient, tenant: dict[str, Any], body: dict[str, Any]
) -> None:
    mid = await _machine(client, tenant)
    r = await client.post(f"{base(mid)}/nodes", headers=tenant["headers"], json=body)
    if "deeper" in body.get("data", {}):
        assert r.status_code == 201, r.text
        return
    assert_problem(r, 400, "VALIDATION_ERROR")


async def test_absurdly_nested_json_is_a_400_not_a_500(client: httpx.AsyncClient, tenant: dict[str, Any]) -> None:
    mid = await _machine(client, tenant)
    nested = '{"type": "resource", "label": "x", "data": {"a": ' + "[" * 5000 + "]" * 5000 + "}}"
    for method, path in (("POST", f"{base(mid)}/nodes"), ("PATCH", f"{base(mid)}/nodes/{uuid.uuid4()}")):
        r = await client.request(method, path, content=nested,
                                 headers={**tenant["headers"], "content-type": "application/json"})
        assert_problem(r, 400, "VALIDATION_ERROR")
    huge = await client.post(f"{base(mid)}/nodes", content=b'{"type": "tool", "label": "x", "data": {"n": 1e999}}',
                             headers={**tenant["headers"], "content-type": "application/json"})
    assert_problem(huge, 400, "VALIDATION_ERROR")
    big = await client.post(f"{base(mid)}/nodes", headers=tenant["headers"],
                            json={"type": "resource", "label": "x", "data": {"x": "y" * 70_000}})
    assert_problem(big, 413, "CONTENT_TOO_LARGE")


async def test_patch_node_merges_data_shallowly(client: httpx.AsyncClient, tenant: dict[str, Any]) -> None:
    h, mid = tenant["headers"], await _machine(client, tenant)
    created = await _node(client, h, mid, data={"gpus": 8, "zone": "eu", "tags": {"a": 1}})
    path = created.headers["location"]
    r = await client.patch(path, headers=h, json={"label": "pool", "status": "active",
                                                  "data": {"zone": None, "tags": {"b": 2}, "new": True}})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["data"] == {"gpus": 8, "tags": {"b": 2}, "new": True}
    assert (body["label"], body["status"], body["version"]) == ("pool", "active", 2)
    assert r.headers["etag"] == '"2"' and r.headers["x-log-position"]
    got = await client.get(path, headers=fresh(h, r))
    assert got.json() == body and got.headers["etag"] == '"2"'
    same = await client.patch(path, headers=h, json={"label": "pool"})
    assert same.status_code == 200 and same.json()["version"] == 2 and "x-log-position" not in same.headers


async def test_patch_validates_the_merged_capability(client: httpx.AsyncClient, tenant: dict[str, Any]) -> None:
    h, mid = tenant["headers"], await _machine(client, tenant)
    cap = await _node(client, h, mid, type="capability", label="c", data=CAPABILITY)
    path = cap.headers["location"]
    body = assert_problem(await client.patch(path, headers=h, json={"data": {"price": None}}), 400, "VALIDATION_ERROR")
    assert "price" in body["detail"]
    assert_problem(await client.patch(path, headers=h, json={"data": {"providerKey": "UPPER CASE"}}),
                   400, "VALIDATION_ERROR")
    plain = await _node(client, h, mid, data={"note": "x"})
    assert_problem(await client.patch(plain.headers["location"], headers=h, json={"type": "capability"}),
                   400, "VALIDATION_ERROR")
    ok = await client.patch(path, headers=h, json={"data": {"providerKey": "My-GPU.v1"}})
    assert ok.status_code == 200 and ok.json()["data"]["providerKey"] == "my-gpu.v1"
    assert_problem(await client.patch(path, headers=h, json={"status": "gone"}), 400, "VALIDATION_ERROR")
    assert_problem(await client.patch(path, headers=h, json={"colour": "red"}), 400, "VALIDATION_ERROR")


async def test_if_match_compares_the_nodes_own_version(client: httpx.AsyncClient, tenant: dict[str, Any]) -> None:
    h, mid = tenant["headers"], await _machine(client, tenant)
    a, b = await _node(client, h, mid), await _node(client, h, mid)
    await client.patch(b.headers["location"], headers=h, json={"label": "moved the graph on"})
    ok = await client.patch(a.headers["location"], headers={**h, "If-Match": a.headers["etag"]}, json={"label": "a2"})
    assert ok.status_code == 200, ok.text  # another node's edit is no conflict for this one
    stale = await client.patch(a.headers["location"], headers={**h, "If-Match": '"1"'}, json={"label": "a3"})
    assert assert_problem(stale, 412, "PRECONDITION_FAILED")["extra"]["currentVersion"] == 2
    assert_problem(await client.delete(a.headers["location"], headers={**h, "If-Match": '"1"'}),
                   412, "PRECONDITION_FAILED")
    assert_problem(await client.patch(a.headers["location"], headers={**h, "If-Match": "nope"}, json={}),
                   400, "VALIDATION_ERROR")
    gone = await client.delete(a.headers["location"], headers={**h, "If-Match": ok.headers["etag"]})
    assert gone.status_code == 204 and gone.headers["x-log-position"] and gone.content == b""
    assert_problem(await client.get(a.headers["location"], headers=fresh(h, gone)), 404, "NOT_FOUND")


async def test_unknown_nodes_and_edges_are_404(client: httpx.AsyncClient, tenant: dict[str, Any]) -> None:
    h, mid = tenant["headers"], await _machine(client, tenant)
    await _node(client, h, mid)
    for kind in ("nodes", "edges"):
        path = f"{base(mid)}/{kind}/{uuid.uuid4()}"
        assert_problem(await client.get(path, headers=h), 404, "NOT_FOUND")
        assert_problem(await client.patch(path, headers=h, json={"type": "x" if kind == "edges" else "tool"}),
                       404, "NOT_FOUND")
        assert_problem(await client.delete(path, headers=h), 404, "NOT_FOUND")
    empty = await _machine(client, tenant)  # no graph stream at all yet
    assert_problem(await client.delete(f"{base(empty)}/nodes/{uuid.uuid4()}", headers=h), 404, "NOT_FOUND")


async def test_concurrent_writes_to_one_graph_all_land(client: httpx.AsyncClient, tenant: dict[str, Any]) -> None:
    h, mid = tenant["headers"], await _machine(client, tenant)
    results = await asyncio.gather(*[
        client.post(f"{base(mid)}/nodes", headers=h, json={"type": "tool", "label": f"t{i}"}) for i in range(6)])
    assert [r.status_code for r in results] == [201] * 6, [r.text for r in results]
    last = max(results, key=lambda r: tuple(int(p) for p in r.headers["x-log-position"].split(".")))
    graph = await client.get(base(mid), headers=fresh(h, last))
    assert sorted(n["label"] for n in graph.json()["nodes"]) == [f"t{i}" for i in range(6)]


async def test_the_node_limit_is_a_409(
    client: httpx.AsyncClient, tenant: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    h, mid = tenant["headers"], await _machine(client, tenant)
    monkeypatch.setattr(rules, "MAX_NODES", 1)
    await _node(client, h, mid)
    r = await client.post(f"{base(mid)}/nodes", headers=h, json={"type": "tool", "label": "one too many"})
    assert assert_problem(r, 409, "GRAPH_LIMIT_REACHED")["extra"]["limit"] == 1


# --- edges -----------------------------------------------------------------------------------------


async def test_edges_create_read_revise_delete(client: httpx.AsyncClient, tenant: dict[str, Any]) -> None:
    h, mid = tenant["headers"], await _machine(client, tenant)
    a, b = (await _node(client, h, mid)).json()["id"], (await _node(client, h, mid)).json()["id"]
    r = await _edge(client, h, mid, a, b, type="depends-on", data={"w": 1, "note": "x"})
    body = r.json()
    assert (body["from"], body["to"], body["type"], body["data"], body["version"]) == (
        a, b, "depends-on", {"w": 1, "note": "x"}, 1)
    assert r.headers["location"] == f"{base(mid)}/edges/{body['id']}" and r.headers["etag"] == '"1"'
    got = await client.get(r.headers["location"], headers=fresh(h, r))
    assert got.status_code == 200 and got.json() == body
    p = await client.patch(r.headers["location"], headers={**h, "If-Match": '"1"'},
                           json={"type": "calls", "data": {"note": None}})
    assert p.status_code == 200, p.text
    assert (p.json()["type"], p.json()["data"], p.json()["version"]) == ("calls", {"w": 1}, 2)
    assert_problem(await client.patch(r.headers["location"], headers={**h, "If-Match": '"1"'}, json={"type": "x"}),
                   412, "PRECONDITION_FAILED")
    graph = await client.get(base(mid), headers=fresh(h, p))
    assert graph.json()["edges"] == [p.json()]
    d = await client.delete(r.headers["location"], headers=h)
    assert d.status_code == 204, d.text
    assert_problem(await client.delete(r.headers["location"], headers=h), 404, "NOT_FOUND")
    assert_problem(await client.get(r.headers["location"], headers=fresh(h, d)), 404, "NOT_FOUND")


async def test_edge_rules(client: httpx.AsyncClient, tenant: dict[str, Any]) -> None:
    h, mid = tenant["headers"], await _machine(client, tenant)
    a, b = (await _node(client, h, mid)).json()["id"], (await _node(client, h, mid)).json()["id"]
    first = await _edge(client, h, mid, a, b)
    dup = await client.post(f"{base(mid)}/edges", headers=h, json={"from": a, "to": b, "type": "uses"})
    assert assert_problem(dup, 409, "GRAPH_EDGE_EXISTS")["extra"]["edgeId"] == first.json()["id"]
    missing = str(uuid.uuid4())
    gone = await client.post(f"{base(mid)}/edges", headers=h, json={"from": a, "to": missing, "type": "uses"})
    assert assert_problem(gone, 422, "GRAPH_NODE_MISSING")["extra"] == {"field": "to", "nodeId": missing}
    loop = await client.post(f"{base(mid)}/edges", headers=h, json={"from": a, "to": a, "type": "uses"})
    assert_problem(loop, 400, "VALIDATION_ERROR")
    for bad in ({"from": a, "to": b, "type": "Not A Slug"}, {"from": a, "to": b}, {"fromNodeId": a, "to": b,
                "type": "x"}, {"from": a, "to": "nope", "type": "x"}):
        assert_problem(await client.post(f"{base(mid)}/edges", headers=h, json=bad), 400, "VALIDATION_ERROR")
    other = await _edge(client, h, mid, a, b, type="feeds")
    clash = await client.patch(other.headers["location"], headers=h, json={"type": "uses"})
    assert_problem(clash, 409, "GRAPH_EDGE_EXISTS")
    empty = await _machine(client, tenant)  # another machine's node ids do not count in this graph
    cross = await client.post(f"{base(empty)}/edges", headers=h, json={"from": a, "to": b, "type": "uses"})
    assert_problem(cross, 422, "GRAPH_NODE_MISSING")


async def test_deleting_a_node_deletes_its_edges_in_the_same_append(
    client: httpx.AsyncClient, tenant: dict[str, Any], container: Container
) -> None:
    h, mid = tenant["headers"], await _machine(client, tenant)
    a, b, c = [(await _node(client, h, mid, label=n)).json()["id"] for n in "abc"]
    ab, ca, bc = [(await _edge(client, h, mid, s, d)).json()["id"] for s, d in ((a, b), (c, a), (b, c))]
    d = await client.delete(f"{base(mid)}/nodes/{a}", headers=h)
    assert d.status_code == 204, d.text
    graph = (await client.get(base(mid), headers=fresh(h, d))).json()
    assert sorted(n["id"] for n in graph["nodes"]) == sorted([b, c]) and [e["id"] for e in graph["edges"]] == [bc]
    assert_problem(await client.get(f"{base(mid)}/edges/{ab}", headers=h), 404, "NOT_FOUND")
    rows = await container.pool.fetch(
        "SELECT type, tx_id::text AS tx FROM events WHERE stream_id = $1 ORDER BY version DESC LIMIT 3",
        graph_id_of(uuid.UUID(mid)))
    assert [r["type"].rpartition(".")[2] for r in rows] == ["NodeDeleted", "EdgeDeleted", "EdgeDeleted"]
    assert len({r["tx"] for r in rows}) == 1
    feed = await audit_feed(client, h, d, machineId=mid, type="graph.edge.deleted")
    assert sorted(e["data"]["edgeId"] for e in feed) == sorted([ab, ca])
    assert all(e["data"]["withNodeId"] == a for e in feed)


# --- guards: tenancy, machine state, idempotency -----------------------------------------------------


def _every_route(mid: str, node: str, edge: str) -> list[tuple[str, str, dict[str, Any] | None]]:
    return [("GET", base(mid), None), ("GET", f"{base(mid)}/nodes/{node}", None),
            ("GET", f"{base(mid)}/edges/{edge}", None),
            ("POST", f"{base(mid)}/nodes", {"type": "tool", "label": "x"}),
            ("PATCH", f"{base(mid)}/nodes/{node}", {"label": "y"}), ("DELETE", f"{base(mid)}/nodes/{node}", None),
            ("POST", f"{base(mid)}/edges", {"from": node, "to": str(uuid.uuid4()), "type": "uses"}),
            ("PATCH", f"{base(mid)}/edges/{edge}", {"type": "calls"}), ("DELETE", f"{base(mid)}/edges/{edge}", None)]


async def test_another_accounts_machine_graph_does_not_exist_for_you(
    client: httpx.AsyncClient, tenant: dict[str, Any], admin: dict[str, str]
) -> None:
    h, mid = tenant["headers"], await _machine(client, tenant)
    a, b = (await _node(client, h, mid)).json()["id"], (await _node(client, h, mid)).json()["id"]
    e = (await _edge(client, h, mid, a, b)).json()["id"]
    stranger = await new_tenant(client, admin)
    for method, path, body in [*_every_route(mid, a, e), ("GET", base(str(uuid.uuid4())), None)]:
        r = await client.request(method, path, headers=stranger["headers"], json=body)
        assert_problem(r, 404, "NOT_FOUND")


async def test_a_machine_must_be_operational(client: httpx.AsyncClient, tenant: dict[str, Any]) -> None:
    h = tenant["headers"]
    registered, _ = await register(client, h)
    rid = registered.json()["id"]
    for method, path, body in _every_route(rid, str(uuid.uuid4()), str(uuid.uuid4())):
        assert_problem(await client.request(method, path, headers=h, json=body), 409, "MACHINE_NOT_ACTIVATED")
    mid = await _machine(client, tenant)
    a, b = (await _node(client, h, mid)).json()["id"], (await _node(client, h, mid)).json()["id"]
    e = (await _edge(client, h, mid, a, b)).json()["id"]
    assert (await action(client, h, mid, "suspend")).status_code == 200
    for method, path, body in _every_route(mid, a, e):
        assert_problem(await client.request(method, path, headers=h, json=body), 409, "MACHINE_NOT_ACTIVE")


async def test_a_retried_post_creates_one_node_and_one_edge(
    client: httpx.AsyncClient, tenant: dict[str, Any]
) -> None:
    h, mid = tenant["headers"], await _machine(client, tenant)
    key = {**h, "Idempotency-Key": f"node-{uuid.uuid4()}"}
    first = await client.post(f"{base(mid)}/nodes", headers=key, json={"type": "tool", "label": "once"})
    again = await client.post(f"{base(mid)}/nodes", headers=key, json={"type": "tool", "label": "once"})
    assert first.status_code == again.status_code == 201 and again.headers.get("idempotent-replayed") == "true"
    assert again.json() == first.json() and again.headers["location"] == first.headers["location"]
    other = await client.post(f"{base(mid)}/nodes", headers=key, json={"type": "tool", "label": "different"})
    assert_problem(other, 422, "IDEMPOTENCY_KEY_REUSED")
    b = (await _node(client, h, mid)).json()["id"]
    ekey = {**h, "Idempotency-Key": f"edge-{uuid.uuid4()}"}
    body = {"from": first.json()["id"], "to": b, "type": "uses"}
    e1 = await client.post(f"{base(mid)}/edges", headers=ekey, json=body)
    e2 = await client.post(f"{base(mid)}/edges", headers=ekey, json=body)
    assert e1.status_code == e2.status_code == 201 and e1.json()["id"] == e2.json()["id"]
    graph = (await client.get(base(mid), headers=fresh(h, e1))).json()
    assert len(graph["nodes"]) == 2 and len(graph["edges"]) == 1


async def test_the_service_answers_a_recorded_create_again_without_a_second_node(
    client: httpx.AsyncClient, tenant: dict[str, Any], container: Container
) -> None:
    """Past the HTTP replay cache (a crash before the response was stored): ids derive from the key."""
    mid = uuid.UUID(await _machine(client, tenant))
    ctx = CommandContext(at=datetime.now(UTC), actor="test", account_id=uuid.UUID(tenant["id"]),
                         idempotency_key=f"k-{uuid.uuid4()}")
    first = await container.graph.create_node(ctx, mid, node_type="tool", label="x", status="draft", data={})
    second = await container.graph.create_node(ctx, mid, node_type="tool", label="x", status="draft", data={})
    assert first.item is not None and second.item is not None and first.item["id"] == second.item["id"]
    assert len(second.graph.nodes) == 1 and second.graph.version == 2  # Opened + one NodeCreated


# --- audit ------------------------------------------------------------------------------------------


async def test_every_change_is_in_the_audit_feed_with_its_data(
    client: httpx.AsyncClient, tenant: dict[str, Any]
) -> None:
    h, mid = tenant["headers"], await _machine(client, tenant)
    a = await _node(client, h, mid, type="capability", label="cap", data=CAPABILITY)
    b = await _node(client, h, mid, data={"gpus": 8})
    aid, bid = a.json()["id"], b.json()["id"]
    na = await client.patch(a.headers["location"], headers=h, json={"status": "active", "data": {"extra": 1}})
    e = await _edge(client, h, mid, aid, bid, data={"w": 1})
    ea = await client.patch(e.headers["location"], headers=h, json={"data": {"w": 2}})
    ed = await client.delete(e.headers["location"], headers=h)
    nd = await client.delete(b.headers["location"], headers=h)
    assert (na.status_code, ea.status_code, ed.status_code, nd.status_code) == (200, 200, 204, 204)
    feed = [x for x in await audit_feed(client, h, nd, machineId=mid) if x["type"].startswith("graph.")]
    assert [x["type"] for x in feed] == [
        "graph.opened", "graph.node.created", "graph.node.created", "graph.node.updated", "graph.edge.created",
        "graph.edge.updated", "graph.edge.deleted", "graph.node.deleted"]
    opened, created, _, updated, edge_created, edge_updated, edge_deleted, deleted = feed
    for x in feed:
        assert x["machineId"] == mid and x["accountId"] == tenant["id"] and x["actor"].startswith("api-key:")
    assert opened["data"]["machineId"] == mid
    assert created["data"]["nodeId"] == aid and created["data"]["data"]["providerKey"] == "openai"
    assert created["data"]["nodeType"] == "capability" and created["data"]["status"] == "draft"
    assert updated["data"]["status"] == "active" and updated["data"]["data"]["extra"] == 1
    assert edge_created["data"]["data"] == {"w": 1} and edge_created["data"]["fromNodeId"] == aid
    assert edge_updated["data"]["data"] == {"w": 2}
    assert edge_deleted["data"]["edgeId"] == e.json()["id"] and edge_deleted["data"]["withNodeId"] is None
    assert deleted["data"]["nodeId"] == bid

"""The graph read model on real PostgreSQL: small batches, one big batch and the aggregate all agree."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import msgspec

from app.container import Container
from domain.graph.aggregate import MachineGraph, data_of, graph_id_of
from domain.graph.commands import ReviseEdge, ReviseNode
from domain.shared.context import CommandContext
from domain.shared.errors import DomainError
from projections.graph import GraphProjection
from projections.rebuild import rebuild
from projections.runner import ProjectionRunner
from tests.journeys import all_visible, operational_machine

CAPABILITY = {"name": "Summarise", "price": {"amount": 250, "currency": "USD"}, "providerKey": "openai"}


async def churn(c: Container, ctx: CommandContext, mid: uuid.UUID, steps: int) -> None:
    """A seeded random walk of every graph command, refusals included (they record nothing)."""
    rng = random.Random(7)
    g = c.graph
    for i in range(steps):
        graph = await c.repo.get(MachineGraph, graph_id_of(mid)) if i else None
        nodes = [n["id"] for n in graph.nodes.values()] if graph else []
        edges = [e["id"] for e in graph.edges.values()] if graph else []
        step = msgspec.structs.replace(ctx, at=ctx.at + timedelta(seconds=i))
        roll = rng.random()
        try:
            if roll < 0.3 or len(nodes) < 2:
                cap = rng.random() < 0.3
                await g.create_node(step, mid, node_type="capability" if cap else "tool", label=f"n{i}",
                                    status="draft", data=CAPABILITY if cap else {"i": i})
            elif roll < 0.5:
                await g.revise_node(step, mid, ReviseNode(node_id=rng.choice(nodes), label=f"r{i}",
                                                          status=rng.choice(["active", "blocked", None]),
                                                          data={"i": None, "j": i}))
            elif roll < 0.75:
                src, dst = rng.sample(nodes, 2)
                await g.create_edge(step, mid, from_node_id=src, to_node_id=dst,
                                    edge_type=rng.choice(["uses", "feeds"]), data={"w": i})
            elif roll < 0.85 and edges:
                await g.revise_edge(step, mid, ReviseEdge(edge_id=rng.choice(edges), data={"w": -i}))
            elif roll < 0.92 and edges:
                await g.delete_edge(step, mid, rng.choice(edges))
            else:
                await g.delete_node(step, mid, rng.choice(nodes))
        except DomainError:
            pass  # e.g. a duplicate edge or a capability merge that no longer validates


async def rows(conn: asyncpg.Pool) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    nodes = await conn.fetch("SELECT id, type, label, status, data::text, version, created_at, updated_at"
                             " FROM graph_nodes_view ORDER BY id")
    edges = await conn.fetch("SELECT id, from_node_id, to_node_id, type, data::text, version, created_at, updated_at"
                             " FROM graph_edges_view ORDER BY id")
    return [tuple(r) for r in nodes], [tuple(r) for r in edges]


async def test_small_batches_a_rebuild_and_the_aggregate_agree(fresh_container: Container) -> None:
    c = fresh_container
    ctx = CommandContext(at=datetime(2026, 1, 1, tzinfo=UTC), actor="seed", account_id=uuid.uuid4())
    mid = (await operational_machine(c, ctx)).id
    await churn(c, ctx, mid, 150)
    graph = await c.repo.get(MachineGraph, graph_id_of(mid))
    assert graph.version > 100  # long enough that loads start from a snapshot
    kinds = {r["type"].rpartition(".")[2] for r in await c.pool.fetch("SELECT DISTINCT type FROM events")}
    assert {"NodeCreated", "NodeRevised", "NodeDeleted", "EdgeCreated", "EdgeRevised", "EdgeDeleted"} <= kinds
    assert await c.pool.fetchval("SELECT count(*) FROM snapshots WHERE stream_id = $1", graph.id) == 1
    cascaded = await c.pool.fetchval("SELECT count(*) FROM events WHERE type LIKE '%EdgeDeleted'"
                                     " AND data->>'with_node_id' IS NOT NULL")
    assert cascaded > 0

    await all_visible(c)
    await ProjectionRunner(c.pool, c.store, [], batch_size=7).catch_up(GraphProjection())
    live = await rows(c.pool)
    await rebuild(c.pool, c.store, GraphProjection(), batch_size=10_000)
    assert await rows(c.pool) == live

    nodes = await c.pool.fetch("SELECT id, machine_id, account_id, type, label, status, data::text AS data, version,"
                               " created_at, updated_at FROM graph_nodes_view")
    assert {r["id"] for r in nodes} == {n["id"] for n in graph.nodes.values()}
    for r in nodes:
        n = graph.node(r["id"])
        assert (r["machine_id"], r["account_id"]) == (mid, ctx.account_id)
        assert (r["type"], r["label"], r["status"], r["version"]) == (n["type"], n["label"], n["status"], n["version"])
        assert (r["created_at"], r["updated_at"]) == (n["created_at"], n["updated_at"])
        assert msgspec.json.decode(r["data"]) == data_of(n)
    edges = await c.pool.fetch("SELECT id, from_node_id, to_node_id, type, data::text AS data, version"
                               " FROM graph_edges_view")
    assert {r["id"] for r in edges} == {e["id"] for e in graph.edges.values()}
    for r in edges:
        e = graph.edge(r["id"])
        assert (r["from_node_id"], r["to_node_id"], r["type"], r["version"]) == (e["from"], e["to"], e["type"],
                                                                                e["version"])
        assert msgspec.json.decode(r["data"]) == data_of(e)

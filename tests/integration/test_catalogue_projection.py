"""The catalogue read model through the real services: a listing leaves and comes back with its causes."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import msgspec

from app.container import Container
from app.services.agents import ReportedEndpoint
from domain.graph.commands import ReviseNode
from domain.machines.commands import ChangeStatus, ReviseProfile
from domain.runtime.endpoint import endpoint_id
from domain.shared.context import CommandContext
from domain.shared.ids import derived_id
from domain.shared.money import Money
from ops.bench.workload import agent_endpoint
from projections.catalogue import CatalogueProjection
from projections.catalogue_reader import find_listings, get_listing, list_catalogue
from projections.rebuild import rebuild
from projections.runner import ProjectionRunner
from tests.integration.runner_tools import apply_live
from tests.journeys import all_visible, enrolled_agent, operational_machine

T0 = datetime(2026, 1, 1, tzinfo=UTC)
CAP = {"name": "Summarise", "price": {"amount": 250, "currency": "USD"}, "providerKey": "OpenAI",
       "inputSchema": {"type": "object", "required": ["text"]}}


class Clock:
    """Each command a second after the last, so events order by time as well as by log position."""

    def __init__(self, account_id: uuid.UUID) -> None:
        self.account_id, self.i = account_id, 0

    def __call__(self, **kw: Any) -> CommandContext:
        self.i += 1
        return CommandContext(at=T0 + timedelta(seconds=self.i), actor="test", account_id=self.account_id, **kw)


async def listed(c: Container, batch_size: int = 500) -> set[uuid.UUID]:
    await all_visible(c)
    await ProjectionRunner(c.pool, c.store, [], batch_size=batch_size).catch_up(CatalogueProjection())
    return {r["id"] for r in await c.pool.fetch("SELECT id FROM catalogue_listings WHERE listed")}


async def rows(pool: asyncpg.Pool) -> list[list[tuple[Any, ...]]]:
    return [[tuple(r) for r in await pool.fetch(f"SELECT * FROM {t} ORDER BY id")]
            for t in CatalogueProjection.tables]


async def test_a_listing_leaves_and_returns_with_each_of_its_conditions(fresh_container: Container) -> None:
    c = fresh_container
    clock = Clock(uuid.uuid4())
    mid = (await operational_machine(c, clock())).id
    out = await c.graph.create_node(clock(), mid, node_type="capability", label="sum", status="active", data=CAP)
    assert out.item is not None
    node_id = out.item["id"]
    lid = derived_id("listing", node_id)
    assert await listed(c) == set()  # no endpoint for its provider key yet
    await c.runtime.put_manual(clock(), mid, "openai", url="https://seller.example/v1", auth_token="s3cr3t",
                               metadata={})
    assert await listed(c) == {lid}

    await c.machines.suspend(clock(), mid, ChangeStatus(reason="audit"))
    assert await listed(c) == set()
    await c.machines.reactivate(clock(), mid)
    assert await listed(c) == {lid}

    for status in ("degraded", "blocked", "draft"):
        await c.graph.revise_node(clock(), mid, ReviseNode(node_id=node_id, status=status))
        assert await listed(c) == set(), status
        await c.graph.revise_node(clock(), mid, ReviseNode(node_id=node_id, status="active"))
        assert await listed(c) == {lid}

    await c.graph.revise_node(clock(), mid, ReviseNode(node_id=node_id, node_type="tool"))
    assert await listed(c) == set()
    await c.graph.revise_node(clock(), mid, ReviseNode(node_id=node_id, node_type="capability"))  # data unchanged
    assert await listed(c) == {lid}
    # Another provider key moves the listing to an endpoint that does not exist; moving back restores it.
    await c.graph.revise_node(clock(), mid, ReviseNode(node_id=node_id, data={"providerKey": "anthropic"}))
    assert await listed(c) == set()
    await c.graph.revise_node(clock(), mid, ReviseNode(node_id=node_id, data={"providerKey": "openai"}))
    assert await listed(c) == {lid}

    await c.runtime.delete(clock(), mid, "openai")
    assert await listed(c) == set()
    await c.runtime.put_manual(clock(), mid, "openai", url="https://seller.example/v2", auth_token=None, metadata={})
    assert await listed(c) == {lid}

    # An agent's lease: the endpoint turns agent-leased, expires (the worker's Expired event), comes back.
    _, token = await enrolled_agent(c, clock(), mid, keys=["openai"], lease_seconds=5)
    beat = clock()
    await c.agents.heartbeat(beat, token, [ReportedEndpoint(provider_key="openai", url="https://agent.example")])
    assert await listed(c) == {lid}
    row = await get_listing(c.pool, lid)
    assert row is not None and row.endpoint_source == "agent" and row.last_seen_at == beat.at
    assert row.lease_expires_at == beat.at + timedelta(seconds=5)
    expired = await c.runtime.expire(CommandContext(at=beat.at + timedelta(seconds=6), actor="timer"),
                                     endpoint_id(mid, "openai"))
    assert expired is not None and expired.status == "expired"
    assert await listed(c) == set()
    assert await get_listing(c.pool, lid) is None
    clock.i += 10
    await c.agents.heartbeat(clock(), token, [ReportedEndpoint(provider_key="openai", url="https://agent.example")])
    assert await listed(c) == {lid}

    await c.graph.delete_node(clock(), mid, node_id)
    assert await listed(c) == set()
    assert await c.pool.fetchval("SELECT count(*) FROM catalogue_listings WHERE id = $1", lid) == 0


async def test_what_a_listing_shows_and_retirement(fresh_container: Container) -> None:
    c = fresh_container
    clock = Clock(uuid.uuid4())
    seller = (await operational_machine(c, clock())).id
    buyer = (await operational_machine(c, clock())).id
    lids = {}
    for mid, price, key in ((seller, 250, "openai"), (seller, 90, "local"), (buyer, 100, "openai")):
        data = {**CAP, "price": {"amount": price, "currency": "USD"}, "providerKey": key}
        out = await c.graph.create_node(clock(), mid, node_type="capability", label="s", status="active", data=data)
        assert out.item is not None
        lids[(mid, key)] = derived_id("listing", out.item["id"])
        await c.runtime.put_manual(clock(), mid, key, url="https://x.example", auth_token="tok", metadata={})
    # Neither a draft capability nor another type is listed.
    await c.graph.create_node(clock(), seller, node_type="capability", label="d", status="draft", data=CAP)
    await c.graph.create_node(clock(), seller, node_type="tool", label="t", status="active", data=CAP)
    assert await listed(c, batch_size=3) == set(lids.values())

    found = await find_listings(c.pool, capability="Summarise", exclude_machine_id=buyer)
    assert [f.listing_id for f in found] == [lids[(seller, "local")], lids[(seller, "openai")]]  # cheapest first
    first = found[0]
    assert (first.seller_machine_id, first.seller_account_id, first.seller_name) == (seller, clock.account_id, "m")
    assert (first.capability, first.provider_key, first.price) == ("Summarise", "local", Money(90, "USD"))
    assert first.input_schema == CAP["inputSchema"] and first.endpoint_status == "active"
    assert first.reputation.runs == 0 and first.reputation.success_rate is None and not first.cooling_down
    assert "url" not in msgspec.structs.asdict(first) and "x.example" not in repr(first)

    async def ids(**kw: Any) -> list[uuid.UUID]:
        return [f.listing_id for f in await find_listings(c.pool, capability="Summarise", **kw)]

    assert await ids(provider_keys=["OPENAI"]) == sorted([lids[(seller, "openai")], lids[(buyer, "openai")]],
                                                         key=lambda i: (100 if i == lids[(buyer, "openai")] else 250))
    assert await ids(max_price=Money(100, "USD")) == [lids[(seller, "local")], lids[(buyer, "openai")]]
    assert await ids(max_price=Money(1000, "EUR")) == []
    assert await ids(sellers_allow=[buyer]) == [lids[(buyer, "openai")]]
    assert await ids(sellers_deny=[seller]) == [lids[(buyer, "openai")]]
    assert await ids(limit=1) == [lids[(seller, "local")]]
    assert await find_listings(c.pool, capability="summarise") == []  # names match exactly
    page = await list_catalogue(c.pool, seller=seller, limit=1)
    rest = await list_catalogue(c.pool, seller=seller, after=page[0].listing_id, limit=10)
    assert {p.listing_id for p in page + rest} == {lids[(seller, "openai")], lids[(seller, "local")]}

    await c.machines.retire(clock(), seller, ChangeStatus(reason="gone"))
    assert await listed(c) == {lids[(buyer, "openai")]}


async def test_small_batches_and_a_rebuild_agree(fresh_container: Container) -> None:
    c = fresh_container
    clock = Clock(uuid.uuid4())
    mid = (await operational_machine(c, clock())).id
    nodes = []
    for i in range(4):
        out = await c.graph.create_node(clock(), mid, node_type="capability", label=f"n{i}",
                                        status="active" if i % 2 else "draft",
                                        data={**CAP, "providerKey": f"k{i % 2}"})
        assert out.item is not None
        nodes.append(out.item["id"])
    await c.runtime.put_manual(clock(), mid, "k1", url="https://x.example", auth_token=None, metadata={})
    await c.graph.revise_node(clock(), mid, ReviseNode(node_id=nodes[0], status="active", label="renamed"))
    await c.graph.delete_node(clock(), mid, nodes[2])
    await c.machines.revise(clock(), mid, ReviseProfile(name="seller-7"), None)
    await c.machines.suspend(clock(), mid, ChangeStatus(reason=None))
    await c.machines.reactivate(clock(), mid)
    await c.runtime.put_manual(clock(), mid, "k0", url="https://y.example", auth_token=None, metadata={})
    await c.runtime.delete(clock(), mid, "k1")

    assert await listed(c, batch_size=1) == {derived_id("listing", nodes[0])}
    live = await rows(c.pool)
    assert [len(t) for t in live] == [3, 1, 2]
    await rebuild(c.pool, c.store, CatalogueProjection(), batch_size=10_000)
    assert await rows(c.pool) == live
    assert (await find_listings(c.pool, capability="Summarise"))[0].seller_name == "seller-7"



async def test_endpoint_events_need_no_machine_in_their_metadata(fresh_container: Container) -> None:
    """Endpoint streams name their machine in Opened; the bench's synthetic ones carry no machineId metadata."""
    c = fresh_container
    beats = [T0, T0 + timedelta(seconds=30)]
    await c.store.append(agent_endpoint(beats, 60, n=1))
    await listed(c)
    row = await c.pool.fetchrow("SELECT status, source, lease_expires_at, last_seen_at, version"
                                " FROM catalogue_endpoints")
    assert tuple(row) == ("active", "agent", beats[1] + timedelta(seconds=60), beats[1], 2)


async def test_live_heartbeat_batches_go_as_one_statement_and_flip_listings(fresh_container: Container) -> None:
    """The runner's live path: a batch of endpoint changes only (heartbeats, an expiry) is one statement, its
    update and the listings' refresh together; the refresh sees the statuses the batch sets, so an expiry
    unlists and the next heartbeat lists again, and the rows equal a rebuild's."""
    c = fresh_container
    clock = Clock(uuid.uuid4())
    mid = (await operational_machine(c, clock())).id
    listings = {}
    for key in ("k0", "k1"):
        out = await c.graph.create_node(clock(), mid, node_type="capability", label=key, status="active",
                                        data={**CAP, "providerKey": key})
        assert out.item is not None
        listings[key] = derived_id("listing", out.item["id"])
    _, token = await enrolled_agent(c, clock(), mid, keys=["k0", "k1"], lease_seconds=1)
    projection, sent = CatalogueProjection(), []

    async def beat(*keys: str) -> None:
        await c.agents.heartbeat(clock(), token, [ReportedEndpoint(provider_key=k, url=f"https://{k}.example")
                                                 for k in keys])

    async def live() -> set[uuid.UUID]:
        await all_visible(c)
        await apply_live(c.pool, c.store, projection, 3, sent)
        return {r["id"] for r in await c.pool.fetch("SELECT id FROM catalogue_listings WHERE listed")}

    await beat("k0", "k1")
    assert await live() == set(listings.values())
    sent.clear()
    for _ in range(3):
        await beat("k0", "k1")
    await c.runtime.expire(clock(), endpoint_id(mid, "k0"))  # the clock is past the one-second lease by now
    assert await live() == {listings["k1"]}
    assert any(q.startswith("WITH mm_batch_1 AS (UPDATE catalogue_endpoints")
               and "mm_batch_2 AS (\nUPDATE catalogue_listings" in q and "mm_checkpoint_advance" in q for q in sent)
    assert "BEGIN" not in sent
    await beat("k0")
    assert await live() == set(listings.values())
    live_rows = await rows(c.pool)
    await rebuild(c.pool, c.store, CatalogueProjection(), batch_size=10_000)
    assert await rows(c.pool) == live_rows

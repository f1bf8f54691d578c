"""A read model rebuilt --as-of a log position (or time) equals, row for row, the live read model captured when
the log stood there; the live tables are untouched."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import asyncpg
import pytest

from app.container import Container
from app.services.agents import ReportedEndpoint
from app.settings import Settings
from domain.graph.commands import ReviseNode
from domain.machines.commands import ChangeStatus, ReviseProfile
from domain.shared.context import CommandContext
from projections import checkpoints
from projections.registry import read_models
from projections.runner import ProjectionRunner
from tests.conftest import TEST_SECRET_KEY
from tests.integration.test_cli import mm
from tests.journeys import all_visible, enrolled_agent, operational_machine

TABLES = [t for p in read_models() for t in p.tables]


@pytest.fixture
async def c(fresh_database: str) -> AsyncIterator[Container]:
    container = await Container.open(Settings(secret_key=TEST_SECRET_KEY), fresh_database, min_size=1, max_size=8)
    try:
        yield container
    finally:
        await container.close()


async def activity(c: Container, round_: int) -> None:
    """Every read model gets rows: an account, machines (revised, suspended), an agent's heartbeats, graph nodes."""
    ctx = CommandContext(at=datetime.now(UTC), actor="test", account_id=uuid.uuid4())
    await c.accounts.open(ctx, f"acme-{round_}", is_admin=False)
    machine = await operational_machine(c, ctx)
    await c.machines.revise(ctx, machine.id, ReviseProfile(name=f"r{round_}", labels={"r": str(round_)}), None)
    _, token = await enrolled_agent(c, ctx, machine.id, keys=["gpu"], lease_seconds=60)
    for _ in range(3):
        await c.agents.heartbeat(CommandContext(at=datetime.now(UTC), actor="agent"), token,
                                 [ReportedEndpoint(provider_key="gpu", url=f"https://gpu{round_}.example")])
    node = (await c.graph.create_node(ctx, machine.id, node_type="tool", label="t", status="draft", data={})).item
    assert node is not None
    await c.graph.revise_node(ctx, machine.id, ReviseNode(node_id=node["id"], node_type=None, label="u",
                                                          status=None, data=None), None)
    if round_ % 2:
        await c.machines.suspend(ctx, machine.id, ChangeStatus(reason="x"), None)


async def catch_up(c: Container) -> None:
    await all_visible(c)
    runner = ProjectionRunner(c.pool, c.store, read_models())
    for p in read_models():
        await runner.catch_up(p)


async def rows(conn: asyncpg.Pool, schema: str) -> dict[str, list[str]]:
    return {t: sorted(r[0] for r in await conn.fetch(f'SELECT to_jsonb(x)::text FROM "{schema}".{t} x'))
            for t in TABLES}


async def test_as_of_a_position_and_a_time_equals_the_live_read_models_then(c: Container,
                                                                              fresh_database: str) -> None:
    for i in range(2):
        await activity(c, i)
    await catch_up(c)
    head = await c.store.head()
    assert head is not None
    async with c.pool.acquire() as conn:
        for p in read_models():  # the live read models stand exactly at the head
            assert await checkpoints.position(conn, p.name) == head
    then = await rows(c.pool, "public")
    moment = await c.pool.fetchval("SELECT max(recorded_at) FROM events")
    assert all(then[t] for t in ("machines_view", "audit_events", "runtime_endpoints_view", "graph_nodes_view"))

    for i in range(2, 4):
        await activity(c, i)
    await catch_up(c)
    now = await rows(c.pool, "public")
    assert now != then

    out = mm(fresh_database, "projections", "rebuild", "--all", "--as-of", head.token(), "--schema", "asof_pos")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SET search_path TO asof_pos" in out.stdout
    assert await rows(c.pool, "asof_pos") == then
    out = mm(fresh_database, "projections", "rebuild", "machines", "--as-of", moment.isoformat(), "--schema",
             "asof_time")
    assert out.returncode == 0, out.stdout + out.stderr
    got = await c.pool.fetch("SELECT to_jsonb(x)::text FROM asof_time.machines_view x")
    assert sorted(r[0] for r in got) == then["machines_view"]
    assert await rows(c.pool, "public") == now  # live tables untouched

    for bad in (["machines", "--as-of", "yesterday", "--schema", "s"], ["machines", "--as-of", "1.1", "--schema",
                "public"], ["--as-of", "1.1", "--schema", "s"], ["relay", "--as-of", "1.1", "--schema", "s"]):
        refused = mm(fresh_database, "projections", "rebuild", *bad)
        assert refused.returncode == 2, (bad, refused.stdout)

"""The runtime read models on real PostgreSQL: small batches, a rebuild and the aggregates all agree."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import msgspec

from app.container import Container
from app.services.agents import ReportedEndpoint
from domain.runtime.agent import MachineAgent
from domain.runtime.endpoint import RuntimeEndpoint, endpoint_id
from domain.shared.context import CommandContext
from domain.shared.errors import DomainError
from projections.rebuild import rebuild
from projections.runner import ProjectionRunner
from projections.runtime import RuntimeProjection
from tests.integration.runner_tools import apply_live
from tests.journeys import all_visible, enrolled_agent, operational_machine

KEYS = ["a", "b", "c", "d"]
T0 = datetime(2026, 1, 1, tzinfo=UTC)


async def churn(c: Container, account: uuid.UUID, mid: uuid.UUID, tokens: list[str], steps: int) -> None:
    """A seeded random walk of manual PUTs, deletes, heartbeats, expiries and one revocation."""
    rng = random.Random(11)
    for i in range(steps):
        ctx = CommandContext(at=T0 + timedelta(seconds=i), actor="seed", account_id=account)
        key, roll = rng.choice(KEYS), rng.random()
        try:
            if roll < 0.3:
                await c.runtime.put_manual(ctx, mid, key, url=f"https://{key}.example/{rng.randint(0, 3)}",
                                           auth_token=rng.choice([None, "t"]), metadata={"i": rng.randint(0, 2)})
            elif roll < 0.4:
                await c.runtime.delete(ctx, mid, key)
            elif roll < 0.8:
                picked = rng.sample(KEYS, rng.randint(0, 2))
                await c.agents.heartbeat(ctx, rng.choice(tokens), [
                    ReportedEndpoint(provider_key=k, url=f"https://agent-{k}.example") for k in picked],
                    lease_seconds=rng.choice([1, 5]))
            else:
                later = CommandContext(at=ctx.at + timedelta(seconds=3), actor="timer", causation_id=str(i))
                await c.runtime.expire(later, endpoint_id(mid, key))
            if i == steps // 2:
                agent = await c.agents.get(ctx, mid, uuid.UUID(hex=tokens[0][4:36]))
                await c.agents.revoke(ctx, mid, agent.id, "rotated")
        except DomainError:
            pass  # a delete of nothing, a revoked agent's heartbeat: refusals record nothing


async def rows(pool: asyncpg.Pool) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    endpoints = await pool.fetch(
        "SELECT id, account_id, machine_id, provider_key, url, has_auth_token, metadata::text, source, agent_id,"
        " status, lease_expires_at, version, created_at, updated_at FROM runtime_endpoints_view ORDER BY id")
    agents = await pool.fetch(
        "SELECT id, account_id, machine_id, name, allowed_provider_keys, lease_seconds, status, last_seen_at,"
        " last_lease_expires_at, version, created_at, updated_at FROM machine_agents_view ORDER BY id")
    return [tuple(r) for r in endpoints], [tuple(r) for r in agents]


async def test_small_batches_a_rebuild_and_the_aggregates_agree(fresh_container: Container) -> None:
    c = fresh_container
    ctx = CommandContext(at=T0, actor="seed", account_id=uuid.uuid4())
    mid = (await operational_machine(c, ctx)).id
    agents = [await enrolled_agent(c, ctx, mid, keys=KEYS, lease_seconds=5) for _ in range(2)]
    await churn(c, ctx.account_id, mid, [token for _, token in agents], 160)  # type: ignore[arg-type]
    kinds = {r["type"] for r in await c.pool.fetch("SELECT DISTINCT type FROM events WHERE type LIKE 'runtime:%'")}
    assert {f"runtime:RuntimeEndpoint.{k}" for k in ("Opened", "Upserted", "Expired", "Deleted")} <= kinds
    assert {f"runtime:MachineAgent.{k}" for k in ("Enrolled", "HeartbeatReceived", "Revoked")} <= kinds

    await all_visible(c)
    await ProjectionRunner(c.pool, c.store, [], batch_size=3).catch_up(RuntimeProjection())
    live = await rows(c.pool)
    assert len(live[0]) == len(KEYS) and len(live[1]) == 2
    await rebuild(c.pool, c.store, RuntimeProjection(), batch_size=10_000)
    assert await rows(c.pool) == live

    for r in await c.pool.fetch("SELECT * FROM runtime_endpoints_view"):
        e = await c.repo.get(RuntimeEndpoint, r["id"])
        assert (r["provider_key"], r["url"], r["has_auth_token"], r["source"], r["agent_id"], r["status"],
                r["lease_expires_at"], r["version"]) == (e.provider_key, e.url, e.has_auth_token, e.source,
                                                         e.agent_id, e.status, e.lease_expires_at, e.version)
        assert msgspec.json.decode(r["metadata"]) == e.metadata
    for r in await c.pool.fetch("SELECT * FROM machine_agents_view"):
        a = await c.repo.get(MachineAgent, r["id"])
        assert (r["status"], r["last_seen_at"], r["last_lease_expires_at"], r["version"], r["allowed_provider_keys"]) \
            == (a.status, a.last_seen_at, a.last_lease_expires_at, a.version, a.allowed_provider_keys)


async def test_live_batches_one_statement_each_for_heartbeats_agree_with_a_rebuild(fresh_container: Container) -> None:
    """The runner's live path (OneStatementBatch): a batch of heartbeats (endpoint and agent updates) is one
    statement with the checkpoint; batches of every other shape still go in a transaction; the rows equal a
    rebuild's."""
    c = fresh_container
    ctx = CommandContext(at=T0, actor="seed", account_id=uuid.uuid4())
    mid = (await operational_machine(c, ctx)).id
    agents = [await enrolled_agent(c, ctx, mid, keys=KEYS, lease_seconds=5) for _ in range(2)]
    await churn(c, ctx.account_id, mid, [token for _, token in agents], 160)  # type: ignore[arg-type]
    await all_visible(c)
    projection, sent = RuntimeProjection(), []
    await apply_live(c.pool, c.store, projection, 4, sent)
    one = [q for q in sent if q.startswith("WITH mm_batch_1 AS (UPDATE runtime_endpoints_view")
           and "mm_batch_2 AS (UPDATE machine_agents_view" in q and "mm_checkpoint_advance" in q]
    assert one, "no heartbeat batch went as one statement"
    assert "BEGIN" in sent  # the enrolments' executemany
    live = await rows(c.pool)
    assert len(live[0]) == len(KEYS) and len(live[1]) == 2
    await rebuild(c.pool, c.store, projection, batch_size=10_000)
    assert await rows(c.pool) == live

"""The policies read model on real PostgreSQL: batch sizes 1 and large, a rebuild, and the aggregates all agree."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import msgspec

from app.container import Container
from domain.policies import rules as r
from domain.policies.aggregate import Policy
from domain.policies.commands import RevisePolicy
from domain.shared.context import CommandContext
from domain.shared.money import Money
from projections.policies import PoliciesProjection
from projections.policies_reader import governing
from projections.rebuild import rebuild
from projections.runner import ProjectionRunner
from tests.journeys import all_visible

RULES: list[r.Rule] = [r.Capabilities(deny=("translate",)), r.SpendLimit(amount=Money(100, "USD"), period="day"),
                       r.RateLimit(tasks=5, per_seconds=60), r.ProviderKeys(allow=("openai",))]
MACHINE = uuid.uuid4()
SCOPES: list[r.Scope] = [r.AccountScope(), r.MachinesScope(machine_ids=(MACHINE,)),
                         r.LabelsScope(labels={"team": "a"})]


async def table(pool: asyncpg.Pool, name: str, order: str) -> list[tuple[Any, ...]]:
    return [tuple(row) for row in await pool.fetch(f"SELECT * FROM {name} ORDER BY {order}")]


async def test_batches_a_rebuild_and_the_aggregates_agree(fresh_container: Container) -> None:
    c = fresh_container
    rng = random.Random(11)
    account = uuid.uuid4()
    ctx = CommandContext(at=datetime(2026, 1, 1, tzinfo=UTC), actor="seed", account_id=account)
    ids = []
    for i in range(6):
        step = msgspec.structs.replace(ctx, at=ctx.at + timedelta(minutes=i))
        out = await c.policies.define(step, name=f"p{i}", description="", scope=SCOPES[i % 3], mode="enforce",
                                      rules=RULES[: 1 + i % 4], platform=False)
        ids.append(out.policy.id)
    for i in range(30):
        step = msgspec.structs.replace(ctx, at=ctx.at + timedelta(hours=1, minutes=i))
        cmd = RevisePolicy(mode=rng.choice(list(r.MODES)), scope=rng.choice(SCOPES),
                           rules=rng.sample(RULES, rng.randint(0, 4)), name=rng.choice([None, f"n{i}"]))
        await c.policies.revise(step, rng.choice(ids), cmd, None)
    await all_visible(c)

    await ProjectionRunner(c.pool, c.store, [], batch_size=1).catch_up(PoliciesProjection())
    current = await table(c.pool, "policies_view", "id")
    versions = await table(c.pool, "policy_versions_view", "policy_id, version")
    await rebuild(c.pool, c.store, PoliciesProjection(), batch_size=10_000)
    assert await table(c.pool, "policies_view", "id") == current
    assert await table(c.pool, "policy_versions_view", "policy_id, version") == versions

    total = 0
    for pid in ids:
        policy = await c.repo.get(Policy, pid)
        rows = await c.pool.fetch("SELECT * FROM policy_versions_view WHERE policy_id = $1 ORDER BY version", pid)
        assert [row["version"] for row in rows] == list(range(1, policy.version + 1))
        for row in rows:
            v = policy.at_version(row["version"])
            assert (row["name"], row["mode"], row["account_id"]) == (v.name, v.mode, account)
            assert msgspec.json.decode(row["rules"]) == msgspec.json.decode(msgspec.json.encode(v.rules))
            assert msgspec.json.decode(row["scope"]) == msgspec.json.decode(msgspec.json.encode(v.scope))
        total += len(rows)
    assert total == 36

    # The policies governing a machine, as evaluation reads them, are the in-scope current versions.
    found = await governing(c.pool, account, MACHINE, {"team": "a"})
    expected = []
    for pid in ids:
        p = await c.repo.get(Policy, pid)
        if p.mode != "disabled":
            expected.append(p.current_version(p.version, p.modified_on))
    assert sorted(x.policy_id for x in found) == sorted(x.policy_id for x in expected)
    assert {x.policy_id: (x.rules, x.scope, x.version) for x in found} == {
        x.policy_id: (x.rules, x.scope, x.version) for x in expected}
    elsewhere = await governing(c.pool, account, uuid.uuid4(), {})
    assert {x.policy_id for x in elsewhere} == {x.policy_id for x in expected if isinstance(x.scope, r.AccountScope)}
    assert await governing(c.pool, uuid.uuid4(), MACHINE, {"team": "a"}) == []  # another account's

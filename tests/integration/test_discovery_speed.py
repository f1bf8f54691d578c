"""Discovery over a catalogue of 10,000 listings of one capability: index-served reads, and its latency measured."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime

from app.container import Container
from app.services.task_sources import MAX_CANDIDATES, CatalogueOffers
from domain.shared.context import CommandContext
from domain.shared.money import Money
from domain.tasks.commands import Constraints
from tests.journeys import operational_machine

LISTINGS, SELLERS = 10_000, 100
# The 20 ms p99 target is measured by the bench (ops/bench phase tasks), not asserted here: a timed assertion in
# the suite fails on a busy machine and passes on a slow plan. This test holds what must be true at any speed:
# the index serves the read and discovery answers the full candidate set; it prints the figures it saw.


async def _seed(c: Container) -> None:
    """10,000 listed rows written straight into the catalogue's tables (the read model, not the log): what the
    catalogue projection would hold, in seconds instead of minutes of graph commands."""
    now = datetime.now(UTC)
    sellers = [uuid.uuid4() for _ in range(SELLERS)]
    async with c.pool.acquire() as conn:
        await conn.executemany(
            "INSERT INTO catalogue_machines (id, account_id, name, identity_verified, status, version, updated_at)"
            " VALUES ($1, $2, $3, true, 'active', 1, $4)",
            [(m, uuid.uuid4(), f"s{i}", now) for i, m in enumerate(sellers)])
        await conn.executemany(
            "INSERT INTO catalogue_endpoints (id, machine_id, provider_key, status, source, last_seen_at, version)"
            " VALUES ($1, $2, 'p1', 'active', 'manual', $3, 1)", [(uuid.uuid4(), m, now) for m in sellers])
        await conn.executemany(
            "INSERT INTO catalogue_listings (id, node_id, machine_id, account_id, node_type, node_status, capability,"
            " provider_key, price_amount, price_currency, input_schema, machine_operational, endpoint_active,"
            " created_at, updated_at) VALUES ($1, $2, $3, $4, 'capability', 'active', 'bench', 'p1', $5, 'USD',"
            " '{\"type\": \"object\", \"required\": [\"text\"]}'::jsonb, true, true, $6, $6)",
            [(uuid.uuid4(), uuid.uuid4(), sellers[i % SELLERS], uuid.uuid4(), 100 + i % 5000, now)
             for i in range(LISTINGS)])
        await conn.execute("ANALYZE catalogue_listings; ANALYZE catalogue_machines; ANALYZE catalogue_endpoints")


def _p99(samples: list[float]) -> float:
    return sorted(samples)[int(len(samples) * 0.99) - 1]


async def test_discovery_over_ten_thousand_listings(fresh_container: Container) -> None:
    c = fresh_container
    await _seed(c)
    plan = "\n".join(r[0] for r in await c.pool.fetch(
        "EXPLAIN SELECT id FROM catalogue_listings l WHERE l.listed AND l.capability = 'bench'"
        " AND l.price_currency = 'USD' AND l.price_amount <= 3000 ORDER BY l.price_amount, l.id LIMIT 100"))
    assert "catalogue_listings_discover_idx" in plan, plan

    offers = CatalogueOffers(c.pool)
    timings = []
    # The first uses of each pooled connection prepare the statements: a steady state is what is measured.
    for i in range(250):
        started = time.perf_counter()
        found = await offers.offers(capability="bench", provider_keys=(), max_price=Money(3000, "USD"),
                                    sellers_allow=(), sellers_deny=(uuid.uuid4(),), exclude_machine_id=uuid.uuid4())
        timings.append((time.perf_counter() - started) * 1000)
        assert MAX_CANDIDATES <= len(found) <= MAX_CANDIDATES + 20, i
    timings = timings[50:]

    ctx = CommandContext(at=datetime.now(UTC), actor="bench", account_id=uuid.uuid4())
    buyer = (await operational_machine(c, ctx)).id
    discover = []
    for i in range(120):
        task = (await c.tasks.submit(ctx, buyer, capability="bench", input={"text": "hi"},
                                     constraints=Constraints(max_price=Money(3000, "USD")), auto=False)).task
        started = time.perf_counter()
        out = await c.tasks.discover(ctx, buyer, task.id)
        if i >= 20:
            discover.append((time.perf_counter() - started) * 1000)
        assert len(out.task.candidates) == MAX_CANDIDATES
    print(f"\ncatalogue read p50 {sorted(timings)[100]:.1f} ms p99 {_p99(timings):.1f} ms;"
          f" whole discover command p50 {sorted(discover)[50]:.1f} ms p99 {_p99(discover):.1f} ms")

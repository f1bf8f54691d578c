"""Discovery reads over a large catalogue: seeds the catalogue read model, then times `find_listings`.

Run alone with `.venv/bin/python -m ops.bench.catalogue` (uses MM_DATABASE_URL's server, on a fresh database);
the tasks phase can reuse `seed_listings` and `discover_latencies`.
"""

from __future__ import annotations

import asyncio
import os
import random
import statistics
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg

from domain.shared.money import Money
from projections.catalogue_reader import find_listings


async def seed_listings(conn: asyncpg.Connection, listings: int, *, capabilities: int = 1, per_machine: int = 10,
                        keys: int = 2, seed: int = 7) -> list[str]:
    """Rows as the catalogue projection writes them, bulk-copied: `listings` listed rows over `capabilities` names
    (each machine with an active endpoint per provider key), plus one unlisted draft per machine that the indexes
    must skip, and stats for every other seller. Returns the capability names."""
    rng = random.Random(seed)
    names = [f"capability-{i}" for i in range(capabilities)]
    machines = [uuid.UUID(int=rng.getrandbits(128)) for _ in range(max(1, listings // per_machine))]
    now = time.time()
    await conn.copy_records_to_table(
        "catalogue_machines", columns=["id", "account_id", "name", "identity_verified", "status", "version",
                                       "updated_at"],
        records=[(m, m, f"seller-{i}", True, "active", 3, _ts(now)) for i, m in enumerate(machines)])
    await conn.copy_records_to_table(
        "catalogue_endpoints", columns=["id", "machine_id", "provider_key", "status", "source", "lease_expires_at",
                                        "last_seen_at", "version"],
        records=[(uuid.UUID(int=rng.getrandbits(128)), m, f"k{k}", "active", "agent", _ts(now + 60), _ts(now), 1)
                 for m in machines for k in range(keys)])
    rows = []
    for i in range(listings + len(machines)):
        m = machines[i % len(machines)]
        draft = i >= listings
        rows.append((uuid.UUID(int=rng.getrandbits(128)), uuid.UUID(int=rng.getrandbits(128)), m, m, "capability",
                     "draft" if draft else "active", names[i % len(names)], f"k{i % keys}", rng.randint(1, 10_000),
                     "USD", '{"type": "object", "properties": {"text": {"type": "string"}}}', True, True,
                     _ts(now), _ts(now)))
    await conn.copy_records_to_table(
        "catalogue_listings", columns=["id", "node_id", "machine_id", "account_id", "node_type", "node_status",
                                       "capability", "provider_key", "price_amount", "price_currency",
                                       "input_schema", "machine_operational", "endpoint_active", "created_at",
                                       "updated_at"], records=rows)
    await conn.copy_records_to_table(
        "seller_stats", columns=["machine_id", "account_id", "runs", "successes", "consecutive_failures",
                                 "cooling_down_until", "recent_latencies_ms", "p50_latency_ms", "last_run_at",
                                 "updated_at"],
        records=[(m, m, 100, 95, 0, None, [20, 30, 40], 30, _ts(now), _ts(now)) for m in machines[::2]])
    await conn.execute("ANALYZE catalogue_listings; ANALYZE catalogue_machines; ANALYZE catalogue_endpoints;"
                       " ANALYZE seller_stats")
    return names


def _ts(t: float) -> datetime:
    return datetime.fromtimestamp(t, UTC)


async def discover_latencies(pool: asyncpg.Pool, names: list[str], *, requests: int = 2000, concurrency: int = 8,
                             limit: int = 100) -> list[float]:
    """Seconds per `find_listings` call: a mix of no filter, provider keys, a price cap, a deny list."""
    rng = random.Random(3)
    shapes: list[dict[str, Any]] = [{}, {"provider_keys": ["k1"]}, {"max_price": Money(5_000, "USD")},
              {"sellers_deny": [uuid.uuid4()], "exclude_machine_id": uuid.uuid4()}]
    out: list[float] = []

    async def one() -> None:
        async with pool.acquire() as conn:
            started = time.perf_counter()
            await find_listings(conn, capability=rng.choice(names), limit=limit, **rng.choice(shapes))
            out.append(time.perf_counter() - started)

    sem = asyncio.Semaphore(concurrency)

    async def bounded() -> None:
        async with sem:
            await one()

    await asyncio.gather(*(bounded() for _ in range(requests)))
    return out


async def _main() -> None:
    from app.migrate import create_database, drop_database

    server = os.environ.get("MM_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    url = await create_database(server, "mm_bench_catalogue")
    try:
        pool = await asyncpg.create_pool(url, min_size=8, max_size=8)
        async with pool.acquire() as conn:
            names = await seed_listings(conn, 10_000)
        for limit in (20, 100, 500):
            await discover_latencies(pool, names, requests=200, limit=limit)  # warm-up
            lat = sorted(await discover_latencies(pool, names, limit=limit))
            p50, p99 = statistics.median(lat), lat[int(len(lat) * 0.99) - 1]
            print(f"find_listings over 10,000 listings, one capability, limit {limit}: "
                  f"p50 {p50 * 1000:.2f} ms, p99 {p99 * 1000:.2f} ms")
        await pool.close()
    finally:
        await drop_database(server, url)


if __name__ == "__main__":
    asyncio.run(_main())

"""`mm projections status|rebuild`: lag per projection, and replay-from-zero with an atomic swap."""

from __future__ import annotations

from app.db import create_pool
from app.settings import Settings
from app.store.event_store import EventStore
from projections.rebuild import rebuild
from projections.registry import by_name, projection_names, read_models
from projections.status import oldest_write_transaction_seconds, projection_status


async def show_status(settings: Settings, dsn: str) -> int:
    pool = await create_pool(dsn, settings, min_size=1, max_size=2)
    try:
        names = projection_names()
        rows = await projection_status(pool, names)
        oldest = await oldest_write_transaction_seconds(pool)
    finally:
        await pool.close()
    print(f"{'projection':<12} {'position':>22} {'applied':>10} {'lag events':>11} {'lag s':>8}  updated")
    for r in rows:
        print(f"{r['name']:<12} {str(r['tx_id']) + '.' + str(r['position']):>22} {r['events_applied']:>10}"
              f" {r['lag_events']:>11} {r['lag_seconds']:>8.2f}  {r['updated_at']:%Y-%m-%d %H:%M:%S}")
    missing = sorted(set(names) - {r["name"] for r in rows})
    if missing:
        print(f"not started yet: {', '.join(missing)}")
    print(f"oldest open write transaction: {oldest:.2f}s")
    return 0


async def rebuild_one(settings: Settings, dsn: str, name: str) -> int:
    projections = by_name(read_models(settings))
    if name not in projections:
        hint = " (the relay sends messages; replaying it would resend them)" if name == "relay" else ""
        print(f"cannot rebuild {name!r}{hint}; choose one of: {', '.join(sorted(projections))}")
        return 2
    pool = await create_pool(dsn, settings, min_size=1, max_size=2)
    try:
        applied = await rebuild(pool, EventStore(pool), projections[name], settings.projection_batch_size)
    finally:
        await pool.close()
    print(f"rebuilt {name}: {applied} events replayed and swapped in")
    return 0

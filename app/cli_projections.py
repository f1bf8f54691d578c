"""`mm projections status|rebuild`: lag per projection, and replay-from-zero with an atomic swap."""

from __future__ import annotations

from datetime import datetime

from app.db import create_pool
from app.settings import Settings
from app.store.event_store import EventStore
from app.store.types import LogPosition
from projections.rebuild import rebuild
from projections.rebuild_as_of import check_schema, rebuild_as_of
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


def parse_as_of(raw: str) -> LogPosition | datetime:
    """A log position token (`<tx>.<position>`, as X-Log-Position and stream events' logPosition show it) or an
    RFC 3339 time with an offset."""
    try:
        return LogPosition.parse(raw)
    except ValueError:
        pass
    try:
        at = datetime.fromisoformat(raw.replace("z", "Z"))
    except ValueError:
        at = None
    if at is None or at.tzinfo is None:
        raise ValueError(f"--as-of {raw!r}: give a log position like 1234.5678 or a time like 2026-01-31T12:00:00Z")
    return at


async def rebuild_as_of_into(settings: Settings, dsn: str, name: str | None, every: bool, as_of: str,
                             schema: str) -> int:
    projections = by_name(read_models())
    if every == (name is not None):
        print("name one read model or give --all")
        return 2
    if name is not None and name not in projections:
        print(f"cannot rebuild {name!r}; choose one of: {', '.join(sorted(projections))}")
        return 2
    try:
        until = parse_as_of(as_of)
        check_schema(schema)
    except ValueError as exc:
        print(exc)
        return 2
    chosen = list(projections.values()) if every else [projections[name or ""]]
    pool = await create_pool(dsn, settings, min_size=1, max_size=2)
    try:
        applied = await rebuild_as_of(pool, EventStore(pool), chosen, schema, until, settings.projection_batch_size)
    finally:
        await pool.close()
    tables = [t for p in chosen for t in p.tables]
    print(f"rebuilt {', '.join(p.name for p in chosen)} as of {as_of}: {applied} events into schema {schema}"
          " (the live tables are untouched)")
    print(f"query it with:  SET search_path TO {schema};  SELECT * FROM {tables[0]};")
    print(f"tables: {', '.join(f'{schema}.{t}' for t in tables)}; drop it with DROP SCHEMA {schema} CASCADE;")
    return 0

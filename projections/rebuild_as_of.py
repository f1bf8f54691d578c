"""Read models as they stood at a past point, rebuilt from the log into a schema of their own (live tables untouched).

`until` is a log position (every event at or before it in the readers' (tx_id, position) order: exactly what a
projection had applied when its checkpoint stood there) or a time (every event recorded at or before it; the
whole log is read, since commit order and clock order may differ by a transaction's length).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from datetime import datetime

import asyncpg

from app.store.event_store import EventStore
from app.store.types import START, LogPosition, RecordedEvent
from projections.base import Projection
from projections.runner import apply_events

log = logging.getLogger("mm.projections")

SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def check_schema(name: str) -> None:
    if not SCHEMA_NAME.match(name) or name.startswith("pg_") or name in ("public", "information_schema"):
        raise ValueError(f"schema {name!r}: use a new name of a-z, 0-9 and _ (not public, pg_*, information_schema)")


def _kept(events: Sequence[RecordedEvent], until: LogPosition | datetime) -> tuple[list[RecordedEvent], bool]:
    """The events inside the point, and whether the log has gone past it (so reading can stop)."""
    if isinstance(until, LogPosition):
        kept = [e for e in events if e.log_position <= until]
        return kept, len(kept) < len(events)
    return [e for e in events if e.recorded_at <= until], False


async def rebuild_as_of(pool: asyncpg.Pool, store: EventStore, projections: Sequence[Projection], schema: str,
                        until: LogPosition | datetime, batch_size: int = 1000) -> int:
    """Replays the log up to `until` into `schema`.<table> for every table the projections own; returns events read.

    Tables of the same name already in `schema` are replaced (it is a scratch schema for an investigation);
    the live schema itself is refused.
    """
    check_schema(schema)
    async with pool.acquire() as conn:
        live = await conn.fetchval("SELECT current_schema()")
        if schema == live:
            raise ValueError(f"schema {schema!r} holds the live read models; pick another name")
        tables = {p.name: {t: f'"{schema}".{t}' for t in p.tables} for p in projections}
        async with conn.transaction():
            await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
            for p in projections:
                for logical, target in tables[p.name].items():
                    await conn.execute(f"DROP TABLE IF EXISTS {target}")
                    await conn.execute(f'CREATE TABLE {target} (LIKE "{live}".{logical} INCLUDING ALL)')
        at, read = START, 0
        while True:
            async with conn.transaction():
                events = await store.read_all(at, batch_size, conn=conn)
                if not events:
                    break
                kept, done = _kept(events, until)
                for p in projections:
                    await apply_events(conn, p, tables[p.name], kept)
            at, read = events[-1].log_position, read + len(kept)
            if done:
                break
    log.info("rebuilt %s as of %s into schema %s: %d events", ", ".join(p.name for p in projections), until,
             schema, read)
    return read

"""Rebuild a read model from zero into shadow tables, then swap them in atomically."""

from __future__ import annotations

import logging

import asyncpg

from app.store.event_store import EventStore
from app.store.types import START
from projections import checkpoints
from projections.base import Projection, live_tables, shadow_tables
from projections.runner import apply_events

log = logging.getLogger("mm.projections")


async def rebuild(pool: asyncpg.Pool, store: EventStore, projection: Projection, batch_size: int = 1000) -> int:
    """Replay every event into fresh tables while the API keeps reading the old ones; returns events applied.

    Most of the replay runs outside any lock. Only the final step, which applies the last few events,
    renames the tables and moves the checkpoint, runs in one transaction holding the checkpoint row, so
    the live runner pauses for that moment and resumes exactly where the new tables end.
    """
    if not projection.tables:
        raise ValueError(f"projection {projection.name!r} owns no tables and cannot be rebuilt")
    shadow = shadow_tables(projection)
    async with pool.acquire() as conn:
        await checkpoints.ensure(conn, projection.name)
        async with conn.transaction():
            for logical, table in shadow.items():
                await conn.execute(f"DROP TABLE IF EXISTS {table}")
                await conn.execute(f"CREATE TABLE {table} (LIKE {logical} INCLUDING ALL)")
                await _copy_storage_parameters(conn, logical, table)
        at, applied = START, 0
        while True:
            async with conn.transaction():
                events = await store.read_all(at, batch_size, conn=conn)
                if not events:
                    break
                await apply_events(conn, projection, shadow, events)
            at, applied = events[-1].log_position, applied + len(events)
        tail = 0  # events that arrived during the replay, applied while the live runner waits
        async with conn.transaction():
            await checkpoints.lock(conn, projection.name)
            while events := await store.read_all(at, batch_size, conn=conn):
                await apply_events(conn, projection, shadow, events)
                at, applied, tail = events[-1].log_position, applied + len(events), tail + len(events)
            await _swap(conn, projection)
            await checkpoints.reset(conn, projection.name, at, applied)
    log.info("rebuilt %s: %d events up to %s, the last %d of them while holding the checkpoint",
             projection.name, applied, at.token(), tail)
    return applied


async def _copy_storage_parameters(conn: asyncpg.Connection, source: str, target: str) -> None:
    """LIKE ... INCLUDING ALL copies columns, defaults, constraints, indexes and column storage, not the table's
    storage parameters (e.g. audit_events' toast_tuple_target): the swapped-in table must keep them."""
    options = await conn.fetchval("SELECT reloptions FROM pg_class WHERE oid = $1::regclass", source)
    if options:  # each "name=value" as PostgreSQL itself stored it
        await conn.execute(f"ALTER TABLE {target} SET ({', '.join(options)})")


async def _swap(conn: asyncpg.Connection, projection: Projection) -> None:
    for logical, table in shadow_tables(projection).items():
        live = live_tables(projection)[logical]
        await conn.execute(f"DROP TABLE {live}")
        await conn.execute(f"ALTER TABLE {table} RENAME TO {live}")


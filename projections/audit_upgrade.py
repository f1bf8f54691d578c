"""Hashes audit rows written before the hash chain existed, by rebuilding the audit projection once.

Not a backfill in the migration: the chain is a fold over the whole log in Python's canonical form, and its
checkpoints need the projector's signing key, which the migrating process must not hold. A rebuild replays
the log into shadow tables while the API keeps serving the old ones, then swaps them in.
"""

from __future__ import annotations

import logging
import zlib

import asyncpg

from app.store.event_store import EventStore
from projections.base import Projection
from projections.rebuild import rebuild

log = logging.getLogger("mm.projections")
_LOCK = 0x6D6D0001 << 32 | zlib.crc32(b"audit-upgrade")


async def needs_hashing(conn: asyncpg.Connection) -> bool:
    # One index probe: rows are applied in log order, so unhashed rows, if any, are the oldest.
    return bool(await conn.fetchval(
        "SELECT hash IS NULL FROM audit_events ORDER BY tx_id, position LIMIT 1"))


async def hash_existing_rows(pool: asyncpg.Pool, store: EventStore, audit: Projection, batch_size: int) -> bool:
    """Rebuild the audit projection if its oldest row has no hash; one projector does it, others skip.

    A failure is logged, not raised: the feed keeps working unhashed, and the next start tries again."""
    try:
        return await _upgrade(pool, store, audit, batch_size)
    except Exception:
        log.exception("hashing the audit rows failed; run `mm projections rebuild audit`, or restart the projector")
        return False


async def _upgrade(pool: asyncpg.Pool, store: EventStore, audit: Projection, batch_size: int) -> bool:
    async with pool.acquire() as conn:
        if not await needs_hashing(conn):
            return False
        if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", _LOCK):
            return False
        try:
            if not await needs_hashing(conn):
                return False
            log.warning("audit rows predate the hash chain: rebuilding the audit projection to hash them")
            await rebuild(pool, store, audit, batch_size)
            return True
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK)

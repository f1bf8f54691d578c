"""In-process cache of API-key credentials, invalidated across processes when a key is revoked.

Authentication was one database round trip per request. Keys are read often and revoked rarely, so each API
process keeps the rows it has read, keyed by the key's digest, and drops them all when any key is revoked:
the revoking append NOTIFYs `CHANNEL` in its own transaction (delivered at its commit), and every process
LISTENs on a connection of its own. The bound on a revoked key, documented in ops/README.md: refused as soon
as the NOTIFY arrives (milliseconds), and in any case by `ttl` seconds (<= 1) after the row was read, even if
a notification is lost. While the listener is not connected nothing is served from the cache.
Unknown keys are never cached, so a key works the moment the response that shows it is sent.
When a row expires, the requests that need it meanwhile share one read of it (not one read each: at 32
requests in flight that was a read per request for as long as the read took, every TTL).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import asyncpg

from app.store.credentials import LOOKUP_SQL
from app.store.credentials import REVOKED_CHANNEL as CHANNEL
from app.store.listening import listen_forever

log = logging.getLogger("mm.auth")
_RETRY_S = 1.0


class CredentialCache:
    def __init__(self, pool: asyncpg.Pool, dsn: str | None, ttl: float) -> None:
        self.pool = pool
        self.dsn = dsn  # None: no listener, so every lookup reads the table
        self.ttl = ttl
        self._rows: dict[str, tuple[float, asyncpg.Record]] = {}
        # The read in flight for each digest, shared by the lookups that miss meanwhile (dropped on invalidation:
        # a lookup after a revocation must not take a row read before it).
        self._reads: dict[str, asyncio.Future[asyncpg.Record | None]] = {}
        # Bumped on every invalidation: a read that started before one must not be stored after it.
        self._generation = 0
        self._listening = False
        self._task: asyncio.Task[None] | None = None

    @property
    def listening(self) -> bool:
        return self._listening

    async def lookup(self, key_digest: str) -> asyncpg.Record | None:
        """The live (unrevoked) credential row for this digest, or None."""
        self._ensure_listener()
        now = time.monotonic()
        if not self._listening:
            row: asyncpg.Record | None = await self.pool.fetchrow(LOOKUP_SQL, key_digest)
            return row
        hit = self._rows.get(key_digest)
        if hit is not None and now - hit[0] < self.ttl:
            return hit[1]
        shared = self._reads.get(key_digest)
        if shared is not None:
            return await asyncio.shield(shared)
        generation = self._generation
        read = asyncio.ensure_future(self.pool.fetchrow(LOOKUP_SQL, key_digest))
        read.add_done_callback(_retrieve)
        self._reads[key_digest] = read
        try:
            # Shielded: a client that goes away does not cancel the read the others are waiting on.
            row = await asyncio.shield(read)
        finally:
            if self._reads.get(key_digest) is read:
                del self._reads[key_digest]
        if row is not None and self._listening and generation == self._generation:
            self._rows[key_digest] = (now, row)  # aged from before the read: its snapshot is at least this old
        return row

    def holds(self, key_digest: str) -> bool:
        """Whether a row for this digest is cached (tests and diagnostics)."""
        return key_digest in self._rows

    def invalidate(self, *_: Any) -> None:
        self._generation += 1
        self._rows.clear()
        self._reads.clear()

    def _ensure_listener(self) -> None:
        if self._task is None and self.dsn is not None:
            self._task = asyncio.create_task(self._listen(self.dsn), name="credential-cache-listener")

    async def _listen(self, dsn: str) -> None:
        await listen_forever(dsn, CHANNEL, self.invalidate, log=log, name="credential cache listener",
                             retry_s=_RETRY_S, on_up=self._up, on_down=self._down)

    def _up(self) -> None:
        self.invalidate()  # anything revoked while not listening
        self._listening = True

    def _down(self) -> None:
        self._listening = False
        self.invalidate()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None


def _retrieve(read: asyncio.Future[Any]) -> None:
    """Mark a shared read's failure as seen: its waiters may all have gone (no 'never retrieved' warning)."""
    if not read.cancelled():
        read.exception()

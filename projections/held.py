"""A pool connection kept between uses, given up by itself once its session has ended."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import asyncpg
from asyncpg.pool import PoolConnectionProxy


class HeldConnection:
    """One connection of `pool`, held between statements: releasing it after each would cost a reset round trip.

    A session that ends while held (a server restart, a network cut) is taken back by the pool at once, and its
    proxy then refuses every call ("connection has been released back to the pool"). Without noticing that, the
    next use after an outage failed once more for every caller sharing it, long after the database was back.
    asyncpg runs termination listeners on the loop's next iteration, so `get()` hands out a fresh connection
    from then on; a use in that same iteration fails once, like any statement on a lost session.
    """

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self._conn: PoolConnectionProxy | None = None
        self._lost = False
        self._listener: Callable[[object], None] | None = None

    async def get(self) -> PoolConnectionProxy:
        if self._conn is not None and self._lost:
            self._conn = None  # the pool already has it back
        if self._conn is None:
            conn: PoolConnectionProxy = await self.pool.acquire()
            self._conn, self._lost = conn, False

            def lost(_: object) -> None:
                # Only for this very connection: a late call for one given up before must not drop its successor.
                if self._conn is conn:
                    self._lost = True

            self._listener = lost
            conn.add_termination_listener(lost)
        return self._conn

    async def release(self) -> None:
        conn, self._conn, listener = self._conn, None, self._listener
        if conn is None or self._lost:
            return
        with contextlib.suppress(Exception):  # lost meanwhile: the pool has already taken it back
            conn.remove_termination_listener(listener)  # the session goes on serving other holders
            await self.pool.release(conn)

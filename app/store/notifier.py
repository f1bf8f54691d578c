"""Coalesced NOTIFY: wakes log followers after appends without serialising every commit on the notify lock."""

from __future__ import annotations

import asyncio
import contextlib

import asyncpg

CHANNEL = "mm_events"


class Notifier:
    """At most one NOTIFY per `interval` per process, sent after the appends that asked for it.

    A NOTIFY inside each append transaction would take PostgreSQL's global notify-queue lock at every
    commit; coalescing keeps appends lock-free while followers still wake within a few milliseconds
    (and poll as a fallback, so a lost wake-up only delays, never loses, an event).
    """

    def __init__(self, pool: asyncpg.Pool, interval: float = 0.005) -> None:
        self.pool = pool
        self.interval = interval
        self._wanted = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="event-notifier")

    def poke(self) -> None:
        self._wanted.set()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            await self._wanted.wait()
            self._wanted.clear()
            try:
                async with self.pool.acquire() as conn:
                    await conn.execute(f"NOTIFY {CHANNEL}")
            except (asyncpg.PostgresError, OSError):
                pass  # followers poll too; a missed wake-up costs latency, not data
            await asyncio.sleep(self.interval)

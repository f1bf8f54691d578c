"""A live runner survives anything a batch or its sessions throw: no projection task dies silently (a server
restart once left `accounts` dead with an asyncpg InternalClientError), and the listener listens again."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence

import asyncpg

from app.container import Container
from app.store.types import RecordedEvent
from projections import checkpoints
from projections.base import Tables
from projections.machines import MachinesProjection
from projections.runner import ProjectionRunner
from tests.integration.test_projections import app_container, seed  # noqa: F401 (fixture)


class FailsOnce(MachinesProjection):
    """A projection whose first batch raises something no connection error looks like."""

    def __init__(self) -> None:
        self.failed = False

    async def apply_many(self, conn: asyncpg.Connection, events: Sequence[RecordedEvent], t: Tables) -> None:
        if not self.failed:
            self.failed = True
            raise asyncpg.exceptions.InternalClientError("cannot switch to state 15; another operation is in progress")
        await super().apply_many(conn, events, t)


async def _applied(pool: asyncpg.Pool) -> int:
    return int(await pool.fetchval("SELECT COALESCE(max(events_applied), 0) FROM projection_checkpoints"
                                    " WHERE name = 'machines'"))


async def _until(check: Callable[[], Awaitable[bool]], within_s: float) -> float:
    started = time.monotonic()
    while not await check():
        assert time.monotonic() - started < within_s, "timed out"
        await asyncio.sleep(0.02)
    return time.monotonic() - started


async def test_a_projection_keeps_running_after_an_unexpected_error_and_a_lost_listener(
    app_container: Container,  # noqa: F811
) -> None:
    c = app_container
    total = await seed(c, 5)
    projection = FailsOnce()
    # Polling every 5 s: a pickup within 2.5 s below was most likely woken by the listener, not a poll.
    runner = ProjectionRunner(c.pool, c.store, [projection], poll_interval=5.0)
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
    try:
        await _until(lambda: _count_is(c.pool, total), 15)  # it failed once, retried, and caught up
        assert projection.failed

        # Kill the listener's session (as a server restart does): it must come back and wake the runner.
        await c.pool.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                             " WHERE datname = current_database() AND query LIKE 'LISTEN %'")
        await asyncio.sleep(0.5)  # the killed session is gone from pg_stat_activity by now

        async def listening() -> bool:  # it notices, waits one poll interval, and listens again
            return bool(await c.pool.fetchval("SELECT count(*) FROM pg_stat_activity WHERE datname ="
                                              " current_database() AND query LIKE 'LISTEN %'") == 1)

        await _until(listening, 20)
        before = await c.pool.fetchval("SELECT count(*) FROM events")
        await seed(c, 1)
        after = int(await c.pool.fetchval("SELECT count(*) FROM events"))
        waited = await _until(lambda: _count_is(c.pool, after), 10)
        assert after > before and waited < 2.5, f"projected {waited:.2f}s after the write: polled, not woken"
        async with c.pool.acquire() as conn:
            assert await checkpoints.position(conn, "machines") is not None
    finally:
        stop.set()
        await task


async def _count_is(pool: asyncpg.Pool, n: int) -> bool:
    return await _applied(pool) == n

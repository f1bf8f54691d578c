"""A live runner survives anything a batch or its sessions throw: no projection task dies silently (a server
restart once left `accounts` dead with an asyncpg InternalClientError), and the listener listens again."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence

import asyncpg

from app.container import Container
from app.store.types import RecordedEvent
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


async def test_a_projection_keeps_running_after_an_unexpected_error(app_container: Container) -> None:  # noqa: F811
    c = app_container
    total = await seed(c, 5)
    projection = FailsOnce()
    runner = ProjectionRunner(c.pool, c.store, [projection], poll_interval=0.2)
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
    try:
        await _until(lambda: _count_is(c.pool, total), 30)  # it failed once, retried, and caught up
        assert projection.failed
    finally:
        stop.set()
        await task


async def test_the_listener_listens_again_after_its_session_dies(app_container: Container) -> None:  # noqa: F811
    c = app_container
    # Polling only every 60 s: a write projected within 10 s below was woken by the listener.
    runner = ProjectionRunner(c.pool, c.store, [MachinesProjection()], poll_interval=60.0)
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
    listening = "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'LISTEN %'"
    try:
        await _until(lambda: _is_one(c.pool, listening), 30)
        old = await c.pool.fetchval(listening)
        # Kill the listener's session (as a server restart does): it must come back and wake the runner.
        assert await c.pool.fetchval("SELECT pg_terminate_backend($1)", old)

        async def listening_anew() -> bool:
            pids = [r["pid"] for r in await c.pool.fetch(listening)]
            return len(pids) == 1 and pids[0] != old

        await _until(listening_anew, 30)
        await asyncio.sleep(0.2)  # the runner may be mid-poll from its own start; let that settle
        total = await seed(c, 1)
        waited = await _until(lambda: _count_is(c.pool, total), 30)
        assert waited < 10, f"projected {waited:.2f}s after the write: polled, not woken"
    finally:
        stop.set()
        await task


async def _is_one(pool: asyncpg.Pool, sql: str) -> bool:
    return len(await pool.fetch(sql)) == 1


async def _count_is(pool: asyncpg.Pool, n: int) -> bool:
    return await _applied(pool) == n

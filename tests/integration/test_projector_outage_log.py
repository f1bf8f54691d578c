"""A database outage under a running projector: every event is still applied afterwards, and the log says so
in two lines (unreachable, reachable again), not one line per projection per retry."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from datetime import UTC, datetime

import pytest

from app.container import Container
from app.db import create_pool
from app.settings import Settings
from app.store.event_store import EventStore
from domain.shared.context import CommandContext
from projections import checkpoints
from projections.registry import read_models
from projections.runner import ProjectionRunner
from tests.integration.runner_tools import running
from tests.tcp_proxy import TcpProxy

KEY = "A" * 43 + "="


async def _caught_up(c: Container, names: list[str], within_s: float = 30) -> None:
    head = await c.store.head()
    assert head is not None
    deadline = time.monotonic() + within_s
    async with c.pool.acquire() as conn:
        while (behind := [n for n in names if await checkpoints.position(conn, n) != head]):
            assert time.monotonic() < deadline, f"projections never caught up: {behind}"
            await asyncio.sleep(0.05)


async def test_an_outage_logs_one_warning_and_one_recovery_and_loses_nothing(
    fresh_database: str, caplog: pytest.LogCaptureFixture
) -> None:
    proxy = TcpProxy.for_url(fresh_database)
    await proxy.start()
    settings = Settings()
    projections = read_models(settings)
    names = [p.name for p in projections]
    ctx = CommandContext(at=datetime.now(UTC), actor="test", account_id=uuid.uuid4())
    c = await Container.open(settings, fresh_database, min_size=1, max_size=4)  # the writer: never cut
    pool = await create_pool(proxy.url(fresh_database), settings, min_size=2, max_size=len(projections) + 6)
    runner = ProjectionRunner(pool, EventStore(pool), projections, poll_interval=0.1)
    stop = asyncio.Event()
    try:
        with caplog.at_level(logging.DEBUG, logger="mm.projections"):
            task = await running(runner, stop)
            await c.machines.register(ctx, name="before", description="", public_key=KEY, labels={})
            await _caught_up(c, names)
            caplog.clear()

            await proxy.cut()
            for i in range(3):  # acknowledged while the projector cannot reach the database
                await c.machines.register(ctx, name=f"during-{i}", description="", public_key=KEY, labels={})
            await asyncio.sleep(2.0)  # several retry intervals for every projection and the listener
            await proxy.restore()
            await _caught_up(c, names)
            stop.set()
            await task
        async with c.pool.acquire() as conn:
            projected = sorted(await conn.fetchval("SELECT array_agg(name) FROM machines_view"))
    finally:
        stop.set()
        await proxy.cut()
        await pool.close()
        await c.close()

    records = [r for r in caplog.records if r.name == "mm.projections"]
    retries = [r for r in records if r.levelno == logging.DEBUG and r.getMessage().endswith("retrying")]
    # The outage was seen, many times over: otherwise this test would prove nothing about the warnings.
    assert len(retries) >= len(projections), [r.getMessage() for r in records]
    warnings = [r.getMessage() for r in records if r.levelno >= logging.WARNING]
    assert len(warnings) == 2, warnings
    assert "the database is unreachable" in warnings[0]
    assert warnings[1].startswith("database reachable again after ")
    assert projected == ["before", "during-0", "during-1", "during-2"]

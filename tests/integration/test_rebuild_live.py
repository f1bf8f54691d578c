"""A rebuild that applies the tail while writers and a live runner keep going ends equal to a clean rebuild."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import asyncpg
import pytest

from app.container import Container
from app.settings import Settings
from app.store.event_store import EventStore
from app.store.types import LogPosition, RecordedEvent
from domain.machines.commands import ReviseProfile
from domain.shared.context import CommandContext
from projections.audit import AuditProjection
from projections.machines import MachinesProjection
from projections.rebuild import rebuild
from projections.runner import ProjectionRunner

KEY = "A" * 43 + "="


@pytest.fixture
async def c(fresh_database: str) -> AsyncIterator[Container]:
    container = await Container.open(Settings(), fresh_database, min_size=1, max_size=12)
    try:
        yield container
    finally:
        await container.close()


class CaughtUpPause(EventStore):
    """Lingers whenever a read finds nothing new: the replay has caught up, and writers keep committing
    meanwhile, so the rebuild's final (locked) step has a tail to apply."""

    async def read_all(
        self, after: LogPosition, limit: int = 500, conn: asyncpg.Connection | None = None
    ) -> list[RecordedEvent]:
        events = await super().read_all(after, limit, conn)
        if not events:
            await asyncio.sleep(0.2)
        return events


async def write_machines(c: Container, n: int) -> None:
    ctx = CommandContext(at=datetime.now(UTC), actor="writer", account_id=uuid.uuid4())
    for i in range(n):
        machine = (await c.machines.register(ctx, name=f"m{i}", description="", public_key=KEY, labels={})).machine
        await c.machines.revise(ctx, machine.id, ReviseProfile(name=f"machine-{i}", labels={"n": str(i)}), None)


async def read_models(pool: asyncpg.Pool) -> tuple[list[tuple[object, ...]], list[tuple[object, ...]]]:
    machines = await pool.fetch("SELECT * FROM machines_view ORDER BY id")
    audit = await pool.fetch("SELECT id, tx_id, position, type, machine_id, data::text FROM audit_events"
                             " ORDER BY tx_id, position")
    return [tuple(r) for r in machines], [tuple(r) for r in audit]


async def caught_up(pool: asyncpg.Pool) -> bool:
    total = await pool.fetchval("SELECT count(*) FROM events")
    applied = dict(await pool.fetch("SELECT name, events_applied FROM projection_checkpoints"))
    return applied.get("machines") == applied.get("audit") == total


async def test_rebuild_under_writers_and_a_live_runner_equals_a_clean_rebuild(
    c: Container, caplog: pytest.LogCaptureFixture
) -> None:
    await write_machines(c, 30)
    runner = ProjectionRunner(c.pool, c.store, [MachinesProjection(), AuditProjection()],
                              batch_size=20, poll_interval=0.05)
    stop, writing = asyncio.Event(), asyncio.Event()
    running = asyncio.create_task(runner.run(stop))

    async def writer() -> None:
        while not writing.is_set():
            await write_machines(c, 1)

    writers = [asyncio.create_task(writer()) for _ in range(3)]
    tails: list[int] = []
    try:
        await asyncio.sleep(0.5)
        with caplog.at_level(logging.INFO, logger="mm.projections"):
            for _ in range(3):  # until a rebuild's final step had events to apply, written during its replay
                for p in (MachinesProjection(), AuditProjection()):
                    await rebuild(c.pool, CaughtUpPause(c.pool), p, batch_size=25)
                tails = [int(r.args[-1]) for r in caplog.records  # type: ignore[index]
                         if r.getMessage().startswith("rebuilt ")]
                if any(tails):
                    break
        await asyncio.sleep(0.5)  # the live runner keeps going after the swaps, writers too
        writing.set()
        await asyncio.gather(*writers)
        for _ in range(600):
            if await caught_up(c.pool):
                break
            await asyncio.sleep(0.05)
        assert await caught_up(c.pool), "the live runner did not resume after the rebuilds"
    finally:
        writing.set()
        stop.set()
        await asyncio.gather(*writers, running, return_exceptions=True)

    print(f"\nevents applied in the rebuilds' final locked steps: {tails}")
    assert any(tails), f"no rebuild applied a tail (events written during its replay): {tails}"
    total = await c.pool.fetchval("SELECT count(*) FROM events")
    live = await read_models(c.pool)
    machines = await c.pool.fetchval("SELECT count(*) FROM events WHERE type = 'machines:Machine.Registered'")
    assert len(live[0]) == machines, "lost or duplicated machine rows"
    assert len(live[1]) == total == len({row[0] for row in live[1]}), "lost or duplicated audit rows"
    for p in (MachinesProjection(), AuditProjection()):  # a clean rebuild, nothing else running
        await rebuild(c.pool, c.store, p)
    assert await read_models(c.pool) == live

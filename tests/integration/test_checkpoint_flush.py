"""Checkpoint-only advances: the idle projections of one live batch move their checkpoints with one statement,
and a compare-and-set lost to someone else makes the loop re-read its checkpoint, never overwrite it."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import asyncpg
import pytest

from app.container import Container
from app.settings import Settings
from app.store.event_store import EventStore
from app.store.types import START, LogPosition, NewEvent, RecordedEvent
from projections import checkpoints
from projections.base import AsksWrites, Tables
from projections.runner import ProjectionRunner
from tests.integration.runner_tools import running

READ = "test:Read.Happened"
SKIPPED = "test:Skipped.Happened"


@pytest.fixture
async def c(fresh_database: str) -> AsyncIterator[Container]:
    container = await Container.open(Settings(), fresh_database, min_size=1, max_size=16)
    try:
        yield container
    finally:
        await container.close()


class Picky:
    """Reads only READ events (declares it, so the runner skips its transaction for the rest); counts them."""

    tables: tuple[str, ...] = ()
    prefixes = (READ,)

    def __init__(self, name: str) -> None:
        self.name = name
        self.handed: list[uuid.UUID] = []

    async def apply_many(self, conn: asyncpg.Connection, events: Sequence[RecordedEvent], t: Tables) -> None:
        self.handed += [e.event_id for e in events if e.type == READ]


@asynccontextmanager
async def _leading(c: Container, projections: Sequence[Picky]) -> AsyncIterator[ProjectionRunner]:
    """A runner leading `projections` in-process until the block ends."""
    runner = ProjectionRunner(c.pool, c.store, projections, poll_interval=5.0)
    stop = asyncio.Event()
    task = await running(runner, stop)
    try:
        yield runner
    finally:
        stop.set()
        await task


async def _append(store: EventStore, type_: str) -> RecordedEvent:
    result = await store.append([NewEvent(event_id=uuid.uuid4(), stream_id=uuid.uuid4(), stream_type="test:Probe",
                                          version=1, type=type_, data={}, metadata={})])
    return result.events[-1]


async def _row(c: Container, name: str) -> asyncpg.Record:
    row = await c.pool.fetchrow("SELECT tx_id::text::bigint AS tx_id, position, events_applied, last_event_at"
                                " FROM projection_checkpoints WHERE name = $1", name)
    assert row is not None
    return row


async def _until_at(c: Container, names: Sequence[str], at: LogPosition, within_s: float = 30) -> None:
    deadline = time.monotonic() + within_s
    while True:
        rows = [await _row(c, n) for n in names]
        if all(LogPosition(r["tx_id"], r["position"]) == at for r in rows):
            return
        assert time.monotonic() < deadline, f"checkpoints {[(r['tx_id'], r['position']) for r in rows]} != {at}"
        await asyncio.sleep(0.005)


async def test_idle_projections_advance_their_checkpoints_in_one_flush(c: Container) -> None:
    idle = [Picky(f"idle{i}") for i in range(8)]
    names = [p.name for p in idle]
    async with _leading(c, idle) as runner:
        # All eight at the head: idle from here on.
        await _until_at(c, names, (await _append(c.store, SKIPPED)).log_position)
        for _ in range(3):
            before = {n: await _row(c, n) for n in names}
            flushes = runner.checkpoint_flusher.flushes
            event = await _append(c.store, SKIPPED)
            await _until_at(c, names, event.log_position)
            # Before: eight autocommit UPDATEs, one per projection. Now the eight loops, woken by one feed
            # read, submit within a few event-loop iterations and one statement moves all eight (a second
            # is tolerated: a loop woken by its own poll rather than the shared read on a starved CI box).
            assert 1 <= runner.checkpoint_flusher.flushes - flushes <= 2
            for n in names:  # the counters the lag metrics read moved as advance_from moved them
                row = await _row(c, n)
                assert row["events_applied"] == before[n]["events_applied"] + 1
                assert row["last_event_at"] == event.recorded_at
    assert all(p.handed == [] for p in idle)


async def test_a_lost_compare_and_set_rereads_the_checkpoint_instead_of_overwriting_it(c: Container) -> None:
    picky = Picky("picky")
    async with _leading(c, [picky]) as runner:
        read = (await _append(c.store, READ)).log_position
        await _until_at(c, [picky.name], read)
        assert len(picky.handed) == 1
        # Someone else moves the checkpoint while the loop waits at `read` (as a rebuild's swap or a
        # `catch_up` would): back to the start, so that re-applying is visible.
        async with c.pool.acquire() as conn:
            await checkpoints.reset(conn, picky.name, START, 0)
        flushes = runner.checkpoint_flusher.flushes
        skipped = (await _append(c.store, SKIPPED)).log_position
        await _until_at(c, [picky.name], skipped)
        # The loop's advance read -> skipped went through the flusher and lost its compare-and-set; the loop
        # then re-read the checkpoint (START) and applied the log from there: the READ event a second time.
        # Had the advance overwritten the checkpoint, it would have jumped to `skipped` past that event.
        assert runner.checkpoint_flusher.flushes > flushes
        assert picky.handed == [picky.handed[0]] * 2
        assert (await _row(c, picky.name))["events_applied"] == 2


class Asks(Picky, AsksWrites):
    """Reads READ events, but says (through `writes`) that a batch writes nothing unless it says so."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.answer = False
        self.asked = 0

    async def writes(self, conn: asyncpg.Connection, events: Sequence[RecordedEvent], t: Tables,
                     at: LogPosition) -> bool:
        self.asked += 1
        assert events[0].log_position > at  # asked with the batch's start
        assert not conn.is_in_transaction()  # asked before, and outside, the batch's transaction
        return self.answer


async def test_a_batch_the_projection_says_writes_nothing_only_moves_the_checkpoint(c: Container) -> None:
    asks = Asks("asks")
    async with _leading(c, [asks]) as runner:
        flushes = runner.checkpoint_flusher.flushes
        quiet = await _append(c.store, READ)
        await _until_at(c, [asks.name], quiet.log_position)
        # Read, but declared empty: no apply, no transaction; the flusher moved the checkpoint.
        assert asks.asked >= 1 and asks.handed == []
        assert runner.checkpoint_flusher.flushes > flushes
        assert (await _row(c, asks.name))["events_applied"] == 1
        asks.answer = True
        flushes = runner.checkpoint_flusher.flushes
        loud = await _append(c.store, READ)
        await _until_at(c, [asks.name], loud.log_position)
        assert asks.handed == [loud.event_id]  # applied in its own transaction, not by the flusher
        assert runner.checkpoint_flusher.flushes == flushes

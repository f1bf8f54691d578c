"""Helpers for tests that drive a ProjectionRunner in-process."""

from __future__ import annotations

import asyncio
import time
import uuid

import asyncpg

from app.store.event_store import EventStore
from app.store.types import START, NewEvent, RecordedEvent
from projections import checkpoints
from projections.base import Projection
from projections.runner import ProjectionRunner, apply_events_from


async def running(runner: ProjectionRunner, stop: asyncio.Event) -> asyncio.Task[None]:
    """Start `runner` until `stop` is set; return once it leads every one of its projections."""
    task = asyncio.create_task(runner.run(stop))
    deadline = time.monotonic() + 30
    while runner.leading != {p.name for p in runner.projections}:
        assert time.monotonic() < deadline, "the runner never led every projection"
        await asyncio.sleep(0.01)
    return task


async def thing_events(store: EventStore, n: int) -> list[RecordedEvent]:
    """Append `n` events of one new stream to an empty log; return the log as recorded (up to 100 events)."""
    stream = uuid.uuid4()
    await store.append([NewEvent(event_id=uuid.uuid4(), stream_id=stream, stream_type="tests:Thing", version=v,
                                 type="tests:Thing.Happened", data={"n": v}, metadata={}) for v in range(1, n + 1)])
    return await store.read_all(START, 100)


async def apply_live(pool: asyncpg.Pool, store: EventStore, projection: Projection, batch: int,
                     sent: list[str]) -> None:
    """Apply every visible event after `projection`'s checkpoint through the runner's live path
    (`apply_events_from`: a OneStatementBatch per batch of `batch` events); each statement its session sends is
    appended to `sent` (once the loop has run the logger)."""
    tables = {name: name for name in projection.tables}
    async with pool.acquire() as conn:
        await checkpoints.ensure(conn, projection.name)
        at = await checkpoints.position(conn, projection.name)
        assert at is not None
        conn.add_query_logger(lambda record: sent.append(record.query.strip()))
        while events := await store.read_all(at, batch, conn=conn):
            at = await apply_events_from(conn, projection, tables, at, events)
        await asyncio.sleep(0)

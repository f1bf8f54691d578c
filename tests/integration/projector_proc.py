"""A projector run in a child process by the crash tests: slow on purpose, so a kill lands mid-batch."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence

import asyncpg

from app.db import create_pool
from app.settings import Settings
from app.store.event_store import EventStore
from app.store.types import RecordedEvent
from projections.audit import AuditProjection
from projections.base import Tables
from projections.machines import MachinesProjection
from projections.runner import ProjectionRunner


class Slow:
    def __init__(self, inner: MachinesProjection | AuditProjection) -> None:
        self.inner, self.name, self.tables = inner, inner.name, inner.tables

    async def apply_many(self, conn: asyncpg.Connection, events: Sequence[RecordedEvent], t: Tables) -> None:
        await self.inner.apply_many(conn, events, t)
        await asyncio.sleep(0.002 * len(events))


async def main(dsn: str) -> None:
    pool = await create_pool(dsn, Settings(), min_size=1, max_size=4)
    runner = ProjectionRunner(pool, EventStore(pool), [], batch_size=40)
    for p in (Slow(MachinesProjection()), Slow(AuditProjection())):
        await runner.catch_up(p)
    print("caught-up", flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))

"""A projector run in a child process by the crash test: it says when it is inside a batch and lingers there,
so the test can SIGKILL it between a batch's first row write and its commit."""

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

# Long enough for the test to read the line and send SIGKILL on a loaded box; the test then checks from the
# checkpoint that the batch really had not committed, so a late kill is never counted as a mid-batch one.
MID_BATCH_PAUSE_S = 0.25


class MidBatchReporting:
    def __init__(self, inner: MachinesProjection | AuditProjection) -> None:
        self.inner, self.name, self.tables = inner, inner.name, inner.tables

    async def apply_many(self, conn: asyncpg.Connection, events: Sequence[RecordedEvent], t: Tables) -> None:
        half = max(1, len(events) // 2)
        await self.inner.apply_many(conn, events[:half], t)  # rows written, nothing committed yet
        end = events[-1].log_position  # where the checkpoint lands if this batch commits
        print(f"mid-batch {self.name} {end.tx_id} {end.position}", flush=True)
        await asyncio.sleep(MID_BATCH_PAUSE_S)
        await self.inner.apply_many(conn, events[half:], t)


async def main(dsn: str) -> None:
    pool = await create_pool(dsn, Settings(), min_size=1, max_size=4)
    runner = ProjectionRunner(pool, EventStore(pool), [], batch_size=40)
    for p in (MidBatchReporting(MachinesProjection()), MidBatchReporting(AuditProjection())):
        await runner.catch_up(p)
    print("caught-up", flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))

"""Phase 1: single-event appends/s through EventStore.append vs raw asyncpg INSERTs into a scratch copy of events."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg
import msgspec

from app.db import create_pool
from app.settings import Settings
from app.store.event_store import EventStore
from app.store.notifier import Notifier
from app.store.types import NewEvent
from ops.bench.db import settle
from ops.bench.workload import registered

WRITERS = 16
SCRATCH = "bench_raw_events"
_encode = msgspec.json.Encoder().encode
_RAW_INSERT = (
    f"INSERT INTO {SCRATCH} (event_id, stream_id, stream_type, version, type, data, metadata)"
    " VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7::jsonb)"
)


@dataclass
class Timed:
    events: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0


@dataclass
class StoreResult:
    raw: Timed
    store: Timed

    @property
    def ratio(self) -> float:
        return self.store.rate / self.raw.rate if self.raw.rate else 0.0


async def drive(writers: int, seconds: float, op: Callable[[], Awaitable[object]]) -> Timed:
    """`writers` tasks each repeat `op` until the deadline; counts completed ops over the real elapsed time."""
    started = time.perf_counter()
    deadline = started + seconds

    async def writer() -> int:
        done = 0
        while time.perf_counter() < deadline:
            await op()
            done += 1
        return done

    counts = await asyncio.gather(*(writer() for _ in range(writers)))
    return Timed(sum(counts), time.perf_counter() - started)


def _template() -> NewEvent:
    return registered(uuid.uuid4(), datetime.now(UTC))


async def run(dsn: str, seconds: float, warmup: float, rounds: int, writers: int = WRITERS) -> StoreResult:
    """Raw baseline vs the store: same rows, pool settings, concurrency and total duration, interleaved in rounds."""
    template = _template()
    # One connection more than the writers for the store's coalesced NOTIFY (the app shares its pool the same way).
    pool = await create_pool(dsn, Settings(), min_size=writers + 1, max_size=writers + 1)
    notifier = Notifier(pool)
    try:
        async with pool.acquire() as conn:
            await conn.execute(f"DROP TABLE IF EXISTS {SCRATCH}")
            # Same columns, defaults, identity, CHECK/UNIQUE constraints and indexes as events.
            await conn.execute(f"CREATE TABLE {SCRATCH} (LIKE events INCLUDING ALL)")

        async def raw_insert() -> None:
            async with pool.acquire() as conn:
                await conn.execute(
                    _RAW_INSERT, uuid.uuid4(), uuid.uuid4(), template.stream_type, 1, template.type,
                    _encode(template.data).decode(), _encode(template.metadata).decode(),
                )

        store = EventStore(pool, notifier)
        notifier.start()

        async def store_append() -> None:
            await store.append([msgspec.structs.replace(template, event_id=uuid.uuid4(), stream_id=uuid.uuid4())])

        raw, appended = await _interleaved(pool, writers, seconds, warmup, rounds, raw_insert, store_append)
        async with pool.acquire() as conn:
            await conn.execute(f"DROP TABLE IF EXISTS {SCRATCH}")
        return StoreResult(raw=raw, store=appended)
    finally:
        await notifier.stop()
        await pool.close()


async def _interleaved(
    pool: asyncpg.Pool, writers: int, seconds: float, warmup: float, rounds: int,
    raw: Callable[[], Awaitable[object]], store: Callable[[], Awaitable[object]],
) -> tuple[Timed, Timed]:
    """Warm both up, then alternate A B B A A B ... so slow drift (other load, checkpoints) hits both equally."""
    async with pool.acquire() as conn:
        await settle(conn)
    await drive(writers, warmup, raw)
    await drive(writers, warmup, store)
    totals = {"raw": Timed(0, 0.0), "store": Timed(0, 0.0)}
    ops = {"raw": raw, "store": store}
    for i in range(rounds):
        order = ("raw", "store") if i % 2 == 0 else ("store", "raw")
        for name in order:
            t = await drive(writers, seconds / rounds, ops[name])
            totals[name] = Timed(totals[name].events + t.events, totals[name].seconds + t.seconds)
    return totals["raw"], totals["store"]

"""Phase 3: ProjectionRunner.catch_up from zero over a log of realistic machine events, per projection."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from app.db import create_pool
from app.settings import Settings
from app.store import event_store
from app.store.event_store import EventStore
from app.store.types import NewEvent, RecordedEvent
from ops.bench.db import reset, settle
from ops.bench.workload import interleave, machine_histories
from projections.base import Projection, Tables
from projections.registry import by_name, read_models
from projections.runner import ProjectionRunner

APPEND_CHUNK = 1_000  # events per bulk append while loading the log (not timed)
# Rows that show all 5 events of their machine, folded in order across batches: verified (event 3), then revised
# (renamed, still active) or suspended (event 5), at version 5.
MACHINES_RIGHT = (
    "SELECT count(*) FROM machines_view WHERE version = 5 AND identity_verified_at IS NOT NULL"
    " AND status = CASE WHEN name LIKE '%-renamed' THEN 'active' ELSE 'suspended' END"
)
LOADERS = 4  # concurrent bulk appends where order across streams does not matter


def _nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from _nodes(child)


async def read_plan(conn: asyncpg.Connection) -> str:
    """How PostgreSQL runs the store's global-log read from the start: an index range scan, or a full scan + sort."""
    sql = getattr(event_store, "READ_ALL_SQL", None)
    if sql is None:
        return "unknown (EventStore read query not found)"
    raw = await conn.fetchval(f"EXPLAIN (FORMAT JSON) {sql}", "0", 0, 500)
    plan = (json.loads(raw) if isinstance(raw, str) else raw)[0]["Plan"]
    steps = [n["Node Type"] + (f" on {n['Index Name']}" if "Index Name" in n else "") for n in _nodes(plan)]
    return " > ".join(s for s in steps if s not in ("Limit", "Gather Merge", "Gather"))


class NullProjection:
    """Reads and checkpoints like a real projection but writes no rows: the runner's own floor."""

    name = "bench_null"
    tables: tuple[str, ...] = ()

    async def apply_many(self, conn: asyncpg.Connection, events: Sequence[RecordedEvent], t: Tables) -> None:
        return None


@dataclass
class CatchUp:
    name: str
    events: int
    seconds: float
    rows_ok: bool
    detail: str

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0


@dataclass
class CatchUpResult:
    loaded: int
    machines: int
    load_seconds: float
    mix: Mix
    batch: int
    floor: CatchUp  # the no-op projection, run before and after the real ones
    runs: list[CatchUp]
    plan: str

    def ratio(self, run: CatchUp) -> float:
        """A projection's catch-up rate as a fraction of the runner's own floor in this run."""
        return run.rate / self.floor.rate if self.floor.rate else 0.0


async def bulk_append(store: EventStore, histories: Iterable[list[NewEvent]], loaders: int = LOADERS) -> int:
    """Append whole stream histories in bulk appends of up to APPEND_CHUNK events (`loaders` at a time);
    returns how many events were appended."""
    chunks: list[list[NewEvent]] = [[]]
    for history in histories:
        if len(chunks[-1]) + len(history) > APPEND_CHUNK:
            chunks.append([])
        chunks[-1].extend(history)
    queue = iter(chunks)

    async def loader() -> None:
        for chunk in queue:
            if chunk:
                await store.append(chunk)

    await asyncio.gather(*(loader() for _ in range(loaders)))
    return sum(len(c) for c in chunks)


async def append_in_order(store: EventStore, events: Sequence[NewEvent]) -> None:
    """Bulk appends of APPEND_CHUNK events, one after another, so the log keeps exactly this order."""
    for i in range(0, len(events), APPEND_CHUNK):
        await store.append(events[i:i + APPEND_CHUNK])


@dataclass
class Mix:
    """How the log's streams are spread: what each runner batch and each stream look like."""

    streams_per_batch: float  # distinct streams in an average batch
    gap: float  # average distance in the log between consecutive events of one stream


def mix(events: Sequence[NewEvent], batch: int) -> Mix:
    counts = [len({e.stream_id for e in events[i:i + batch]}) for i in range(0, len(events), batch)]
    last: dict[uuid.UUID, int] = {}
    gaps: list[int] = []
    for i, e in enumerate(events):
        if e.stream_id in last:
            gaps.append(i - last[e.stream_id])
        last[e.stream_id] = i
    return Mix(sum(counts) / len(counts) if counts else 0.0, sum(gaps) / len(gaps) if gaps else 0.0)


async def _load_log(store: EventStore, events: int, batch: int) -> tuple[int, int, Mix]:
    """Append `events` (rounded up to whole machine histories) interleaved as live traffic writes them;
    returns (events, machines, how the streams are spread)."""
    histories = list(machine_histories(events, uuid.uuid4()))
    log = interleave(histories)
    await append_in_order(store, log)
    return len(log), len(histories), mix(log, batch)


async def _time(pool: asyncpg.Pool, store: EventStore, projection: Projection, batch_size: int) -> tuple[int, float]:
    async with pool.acquire() as conn:
        await conn.execute("DELETE FROM projection_checkpoints WHERE name = $1", projection.name)
        for table in projection.tables:
            await conn.execute(f"TRUNCATE {table}")
        await settle(conn)
    runner = ProjectionRunner(pool, store, [projection], batch_size=batch_size)
    started = time.perf_counter()
    applied = await runner.catch_up(projection)
    return applied, time.perf_counter() - started


async def _catch_up(pool: asyncpg.Pool, store: EventStore, projection: Projection, batch: int,
                    loaded: int, check: str | None, expected: int) -> CatchUp:
    """Time one catch-up from zero, then check it applied every event and (`check`) left the expected rows."""
    applied, seconds = await _time(pool, store, projection, batch)
    rows = await pool.fetchval(check) if check else None
    ok = applied == loaded and (rows is None or rows == expected)
    detail = f"{applied:,} events" + (f", {rows:,} of {expected:,} expected rows" if check else "")
    return CatchUp(projection.name, applied, seconds, ok, detail)


async def run(dsn: str, events: int) -> CatchUpResult:
    """Load the log, then catch up from zero: the no-op floor, machines, audit, the floor again (A B B A, so drift
    during the run hits the floor and the projections alike)."""
    await reset(dsn)
    settings = Settings()
    batch = settings.projection_batch_size
    pool = await create_pool(dsn, settings, min_size=2, max_size=2)
    try:
        store = EventStore(pool)
        started = time.perf_counter()
        loaded, machines, mixed = await _load_log(store, events, batch)
        load_seconds = time.perf_counter() - started
        async with pool.acquire() as conn:
            await conn.execute("VACUUM ANALYZE events")  # a long-lived log has statistics and a visibility map
            plan = await read_plan(conn)
        registered = by_name(read_models())
        null = NullProjection()
        first = await _catch_up(pool, store, null, batch, loaded, None, 0)
        done = await _catch_up(pool, store, registered["machines"], batch, loaded, MACHINES_RIGHT, machines)
        audit = await _catch_up(pool, store, registered["audit"], batch, loaded,
                                "SELECT count(*) FROM audit_events", loaded)
        last = await _catch_up(pool, store, null, batch, loaded, None, 0)
        floor = CatchUp(null.name, first.events + last.events, first.seconds + last.seconds,
                        first.rows_ok and last.rows_ok, f"{first.events:,} events twice")
        return CatchUpResult(loaded, machines, load_seconds, mixed, batch, floor, [done, audit], plan)
    finally:
        await pool.close()

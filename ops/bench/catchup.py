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
from ops.bench.workload import machine_histories
from projections.base import Projection, Tables
from projections.registry import by_name, read_models
from projections.runner import ProjectionRunner

APPEND_CHUNK = 1_000  # events per bulk append while loading the log (not timed)
LOADERS = 4


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
    runs: list[CatchUp]
    plan: str


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


async def _load_log(store: EventStore, events: int) -> tuple[int, int]:
    """Append `events` (rounded up to whole machine histories) in bulk; returns (events, machines)."""
    histories = list(machine_histories(events, uuid.uuid4()))
    return await bulk_append(store, histories), len(histories)


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


async def run(dsn: str, events: int) -> CatchUpResult:
    await reset(dsn)
    settings = Settings()
    pool = await create_pool(dsn, settings, min_size=2, max_size=LOADERS + 1)
    try:
        store = EventStore(pool)
        started = time.perf_counter()
        loaded, machines = await _load_log(store, events)
        load_seconds = time.perf_counter() - started
        async with pool.acquire() as conn:
            await conn.execute("VACUUM ANALYZE events")  # a long-lived log has statistics and a visibility map
            plan = await read_plan(conn)
        runs: list[CatchUp] = []
        registered = by_name(read_models())
        cases: list[tuple[Projection, str | None, int | None]] = [
            (registered["machines"], "machines_view", machines),
            (registered["audit"], "audit_events", loaded),
            (NullProjection(), None, None),
        ]
        for projection, table, expected in cases:
            applied, seconds = await _time(pool, store, projection, settings.projection_batch_size)
            rows = await pool.fetchval(f"SELECT count(*) FROM {table}") if table else None
            ok = applied == loaded and (rows is None or rows == expected)
            detail = f"{applied:,} events" + (f", {rows:,} rows in {table}" if table else "")
            runs.append(CatchUp(projection.name, applied, seconds, ok, detail))
        return CatchUpResult(loaded, machines, load_seconds, runs, plan)
    finally:
        await pool.close()

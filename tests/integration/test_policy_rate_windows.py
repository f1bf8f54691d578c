"""A rate window through the real store: loads start from its snapshot and count exactly what was recorded."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from app.db import create_pool
from app.settings import Settings
from app.store.event_store import EventStore
from app.store.repository import Repository
from domain.policies.rate_window import RateWindow
from domain.shared.context import CommandContext

T0 = datetime(2026, 1, 1, tzinfo=UTC)
CTX = CommandContext(at=T0, actor="test")


async def test_a_long_window_loads_from_its_snapshot_with_every_count(fresh_database: str) -> None:
    pool = await create_pool(fresh_database, Settings(), min_size=1, max_size=2)
    try:
        repo = Repository(EventStore(pool))
        window = RateWindow.open(uuid.uuid4(), uuid.uuid4(), 3600, 7, T0)
        tasks = [uuid.uuid4() for _ in range(150)]
        for i, task in enumerate(tasks):
            window.count(task, T0 + timedelta(seconds=i))
            if i % 10 == 9:
                await repo.save(window, CTX)
        snapshot = await pool.fetchval("SELECT version FROM snapshots WHERE stream_id = $1", window.id)
        assert snapshot == 101  # taken: the window's counts are in the snapshot's JSON state
        loaded = await repo.get(RateWindow, window.id)
        at = T0 + timedelta(seconds=200)
        assert loaded.version == 151 and loaded.recent(at, None) == 150 and loaded.recent(at, tasks[0]) == 149
        assert loaded.recent(T0 + timedelta(seconds=3600 + 49), None) == 100  # the first 50 left the window
        loaded.count(tasks[3], at)  # counted once, whatever the load started from
        assert loaded.collect_events() == []
    finally:
        await pool.close()

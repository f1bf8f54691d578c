"""A live batch ends with one message (checkpoint compare-and-set, COMMIT, NOTIFY): applied and notified when the
checkpoint is where the batch began; rolled back, unnotified, when something moved it (sql/0160)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime

import asyncpg
import pytest

from app.container import Container
from app.settings import Settings
from app.store.types import LogPosition, RecordedEvent
from projections import checkpoints
from projections.base import Tables
from projections.checkpoints import Advance
from projections.runner import apply_events_from
from tests.integration.runner_tools import thing_events

CHANNEL = "mm_test_batch_commit"


class Rows:
    """Writes one row per event into a scratch table; NOTIFYs CHANNEL after each batch commits."""

    name = "test-batch-commit"
    tables: tuple[str, ...] = ("batch_commit_rows",)
    notify_channel = CHANNEL

    async def apply_many(self, conn: asyncpg.Connection, events: Sequence[RecordedEvent], t: Tables) -> None:
        await conn.executemany(f"INSERT INTO {t['batch_commit_rows']} (id) VALUES ($1)",
                               [(e.event_id,) for e in events])


@pytest.fixture
async def c(fresh_database: str) -> AsyncIterator[Container]:
    container = await Container.open(Settings(), fresh_database, min_size=1, max_size=4)
    try:
        await container.pool.execute("CREATE TABLE batch_commit_rows (id uuid PRIMARY KEY)")
        yield container
    finally:
        await container.close()


@asynccontextmanager
async def _batch_session(c: Container, p: Rows) -> AsyncIterator[tuple[asyncpg.Connection, LogPosition,
                                                                           asyncio.Queue[str]]]:
    """A session to apply on, the projection's checkpoint, and the NOTIFYs heard on CHANNEL meanwhile."""
    notified: asyncio.Queue[str] = asyncio.Queue()

    def heard(*args: object) -> None:
        notified.put_nowait(str(args[-1]))

    async with c.pool.acquire() as listener, c.pool.acquire() as conn:
        await listener.add_listener(CHANNEL, heard)
        try:
            await checkpoints.ensure(conn, p.name)
            at = await checkpoints.position(conn, p.name)
            assert at is not None
            yield conn, at, notified
        finally:
            await listener.remove_listener(CHANNEL, heard)


async def test_the_batch_commits_moves_its_checkpoint_and_notifies_after(c: Container) -> None:
    events, p = await thing_events(c.store, 3), Rows()
    async with _batch_session(c, p) as (conn, at, notified):
        assert await apply_events_from(conn, p, {"batch_commit_rows": "batch_commit_rows"}, at, events) \
            == events[-1].log_position
        assert not conn.is_in_transaction()
        await asyncio.wait_for(notified.get(), 5)
    assert await c.pool.fetchval("SELECT count(*) FROM batch_commit_rows") == 3
    row = await c.pool.fetchrow("SELECT events_applied, last_event_at FROM projection_checkpoints WHERE name = $1",
                                p.name)
    assert row["events_applied"] == 3 and row["last_event_at"] == events[-1].recorded_at


async def test_a_checkpoint_moved_under_the_batch_rolls_it_back_unnotified(c: Container) -> None:
    events, p = await thing_events(c.store, 3), Rows()
    async with _batch_session(c, p) as (conn, at, notified):
        # Another writer (a rebuild's swap, a catch-up beside the leader) moved it after this batch was read.
        elsewhere = events[0].log_position
        await checkpoints.advance(c.pool, p.name, elsewhere, 1, datetime.now(UTC))  # type: ignore[arg-type]
        assert await apply_events_from(conn, p, {"batch_commit_rows": "batch_commit_rows"}, at, events) == elsewhere
        assert not conn.is_in_transaction()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(notified.get(), 0.3)
    assert await c.pool.fetchval("SELECT count(*) FROM batch_commit_rows") == 0
    assert await checkpoints.position(c.pool, p.name) == elsewhere  # type: ignore[arg-type]


def test_the_message_inlines_only_literals_it_can_render() -> None:
    sql = checkpoints.commit_advancing_sql(
        Advance("it's", LogPosition(7, 8), LogPosition(9, 10), 2, datetime(2026, 1, 2, tzinfo=UTC)), "mm_audit")
    assert sql == ("SELECT mm_checkpoint_advance('it''s', '7'::xid8, 8, '9'::xid8, 10, 2,"
                   " '2026-01-02T00:00:00+00:00'::timestamptz); COMMIT; NOTIFY mm_audit")
    assert checkpoints.commit_advancing_sql(Advance("a", LogPosition(1, 1), LogPosition(1, 2), 1, None)).endswith(
        "1, NULL); COMMIT")
    with pytest.raises(ValueError):
        checkpoints.commit_advancing_sql(Advance("a\\", LogPosition(1, 1), LogPosition(1, 2), 1, None))
    with pytest.raises(ValueError):
        checkpoints.commit_advancing_sql(Advance("a", LogPosition(1, 1), LogPosition(1, 2), 1, None),
                                        "x; DROP TABLE t")

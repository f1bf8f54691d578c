"""A live batch whose rows fit in one write is sent with its checkpoint's compare-and-set as one statement
(projections/one_statement.py): all of it or none of it, and anything that is not one independent write still
goes in a transaction, as before."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from app.container import Container
from app.settings import Settings
from app.store.types import LogPosition, RecordedEvent
from projections import checkpoints
from projections.audit import CHUNK
from projections.base import Tables
from projections.one_statement import OneStatementBatch
from projections.rebuild import rebuild
from projections.registry import audit_projection
from projections.runner import apply_events_from
from tests.api.audit_stack import seed, settings
from tests.integration.runner_tools import thing_events

T = {"one_rows": "one_rows", "one_more": "one_more"}
Apply = Callable[[asyncpg.Connection, Sequence[RecordedEvent], Tables], Any]


class Scripted:
    """A projection whose batch is whatever `script` does with the session."""

    tables: tuple[str, ...] = ("one_rows", "one_more")

    def __init__(self, script: Apply, name: str = "test-one-statement") -> None:
        self.name, self.script = name, script

    async def apply_many(self, conn: asyncpg.Connection, events: Sequence[RecordedEvent], t: Tables) -> None:
        await self.script(conn, events, t)


async def insert_rows(conn: asyncpg.Connection, events: Sequence[RecordedEvent], t: Tables) -> None:
    await conn.execute(f"INSERT INTO {t['one_rows']} (id, n) SELECT * FROM unnest($1::uuid[], $2::int[])",
                       [e.event_id for e in events], [e.version for e in events])


@pytest.fixture
async def c(fresh_database: str) -> AsyncIterator[Container]:
    container = await Container.open(Settings(), fresh_database, min_size=1, max_size=4)
    try:
        await container.pool.execute("CREATE TABLE one_rows (id uuid PRIMARY KEY, n int NOT NULL);"
                                     " CREATE TABLE one_more (id uuid PRIMARY KEY)")
        yield container
    finally:
        await container.close()


@asynccontextmanager
async def _session(c: Container, name: str) -> AsyncIterator[tuple[asyncpg.Connection, LogPosition, list[str]]]:
    """A session, the projection's checkpoint, and every statement the session sends meanwhile."""
    sent: list[str] = []

    def logged(record: Any) -> None:
        if "typeinfo" not in record.query and "'jit'" not in record.query:  # asyncpg's own type lookups
            sent.append(record.query.strip())

    async with c.pool.acquire() as conn:
        await checkpoints.ensure(conn, name)
        at = await checkpoints.position(conn, name)
        assert at is not None
        conn.add_query_logger(logged)
        try:
            yield conn, at, sent
        finally:
            conn.remove_query_logger(logged)


async def _applied(c: Container, name: str) -> tuple[LogPosition | None, int]:
    return (await checkpoints.position(c.pool, name),  # type: ignore[arg-type]
            await c.pool.fetchval("SELECT events_applied FROM projection_checkpoints WHERE name = $1", name))


async def test_one_write_goes_with_the_checkpoint_as_one_statement(c: Container) -> None:
    events, p = await thing_events(c.store, 3), Scripted(insert_rows)
    async with _session(c, p.name) as (conn, at, sent):
        assert await apply_events_from(conn, p, T, at, events) == events[-1].log_position
        assert not conn.is_in_transaction()
    assert len(sent) == 1 and sent[0].startswith("WITH mm_batch_1 AS (INSERT") and "mm_checkpoint_advance" in sent[0]
    assert await c.pool.fetchval("SELECT sum(n) FROM one_rows") == 6
    assert await _applied(c, p.name) == (events[-1].log_position, 3)


async def test_a_moved_checkpoint_leaves_no_row_of_the_statement(c: Container) -> None:
    events, p = await thing_events(c.store, 3), Scripted(insert_rows)
    async with _session(c, p.name) as (conn, at, sent):
        elsewhere = events[0].log_position  # a catch-up beside the leader got there first
        await checkpoints.advance(c.pool, p.name, elsewhere, 1, datetime.now(UTC))  # type: ignore[arg-type]
        assert await apply_events_from(conn, p, T, at, events) == elsewhere
        assert not conn.is_in_transaction()
    assert len([q for q in sent if "mm_checkpoint_advance" in q]) == 1
    assert await c.pool.fetchval("SELECT count(*) FROM one_rows") == 0
    assert await _applied(c, p.name) == (elsewhere, 1)


async def test_a_failing_write_moves_no_checkpoint(c: Container) -> None:
    events, p = await thing_events(c.store, 3), Scripted(insert_rows)
    await c.pool.execute("INSERT INTO one_rows (id, n) VALUES ($1, 0)", events[1].event_id)
    async with _session(c, p.name) as (conn, at, _sent):
        with pytest.raises(asyncpg.UniqueViolationError):
            await apply_events_from(conn, p, T, at, events)
        assert not conn.is_in_transaction()
    assert await c.pool.fetchval("SELECT count(*) FROM one_rows") == 1
    assert await _applied(c, p.name) == (at, 0)


async def test_a_second_write_that_reads_the_first_runs_in_a_transaction(c: Container) -> None:
    async def insert_then_bump(conn: asyncpg.Connection, events: Sequence[RecordedEvent], t: Tables) -> None:
        await insert_rows(conn, events, t)
        # Reads the rows the first write made: in one statement it would see none of them.
        await conn.execute(f"UPDATE {t['one_rows']} SET n = n + 10 WHERE id = ANY($1::uuid[])",
                           [e.event_id for e in events])

    events, p = await thing_events(c.store, 3), Scripted(insert_then_bump)
    async with _session(c, p.name) as (conn, at, sent):
        assert await apply_events_from(conn, p, T, at, events) == events[-1].log_position
        assert not conn.is_in_transaction()
    assert sent[0] == "BEGIN" and sent[1].startswith("INSERT") and sent[2].startswith("UPDATE")
    assert "COMMIT" in sent[3] and len(sent) == 4
    assert await c.pool.fetchval("SELECT sum(n) FROM one_rows") == 36
    assert await _applied(c, p.name) == (events[-1].log_position, 3)


async def test_a_read_after_a_write_sees_it_inside_the_transaction(c: Container) -> None:
    seen: list[int] = []

    async def insert_then_read(conn: asyncpg.Connection, events: Sequence[RecordedEvent], t: Tables) -> None:
        await insert_rows(conn, events, t)
        seen.append(await conn.fetchval(f"SELECT count(*) FROM {t['one_rows']}"))
        seen.append(len(await conn.prefetch(f"SELECT id FROM {t['one_rows']}")))  # type: ignore[attr-defined]

    events, p = await thing_events(c.store, 3), Scripted(insert_then_read)
    async with _session(c, p.name) as (conn, at, sent):
        assert await apply_events_from(conn, p, T, at, events) == events[-1].log_position
    assert seen == [3, 3] and sent[0] == "BEGIN"
    assert await _applied(c, p.name) == (events[-1].log_position, 3)


async def test_independent_writes_go_in_one_statement_with_the_checkpoint(c: Container) -> None:
    async def two_tables(conn: asyncpg.Connection, events: Sequence[RecordedEvent], t: Tables) -> None:
        ids = [e.event_id for e in events]
        prior = await conn.prefetch(f"SELECT count(*) AS n FROM {t['one_more']}")  # type: ignore[attr-defined]
        assert prior[0]["n"] == 0
        parts = [f"INSERT INTO {t['one_rows']} (id, n) SELECT unnest($1::uuid[]), 1",
                 f"INSERT INTO {t['one_more']} (id) SELECT unnest($2::uuid[])"]
        assert isinstance(conn, OneStatementBatch) and conn.independent(parts, [ids, ids])

    events, p = await thing_events(c.store, 4), Scripted(two_tables)
    async with _session(c, p.name) as (conn, at, sent):
        assert await apply_events_from(conn, p, T, at, events) == events[-1].log_position
    assert len(sent) == 2 and sent[0].startswith("SELECT count(*)")
    assert sent[1].startswith("WITH mm_batch_1 AS (INSERT") and "mm_batch_2 AS (INSERT" in sent[1]
    assert (await c.pool.fetchval("SELECT count(*) FROM one_rows"),
            await c.pool.fetchval("SELECT count(*) FROM one_more")) == (4, 4)
    assert await _applied(c, p.name) == (events[-1].log_position, 4)


async def test_independent_writes_held_back_are_sent_first_when_the_batch_needs_a_transaction(
        c: Container) -> None:
    async def two_then_many(conn: asyncpg.Connection, events: Sequence[RecordedEvent], t: Tables) -> None:
        ids = [e.event_id for e in events]
        assert isinstance(conn, OneStatementBatch) and conn.independent(
            [f"INSERT INTO {t['one_rows']} (id, n) SELECT unnest($1::uuid[]), 2",
             f"INSERT INTO {t['one_more']} (id) SELECT unnest($2::uuid[])"], [ids, ids])
        assert not conn.independent([f"INSERT INTO {t['one_more']} (id) VALUES ($1)"], [[uuid.uuid4()]])
        await conn.executemany(f"UPDATE {t['one_rows']} SET n = n * 5 WHERE id = $1", [(i,) for i in ids])

    events, p = await thing_events(c.store, 2), Scripted(two_then_many)
    async with _session(c, p.name) as (conn, at, sent):
        assert await apply_events_from(conn, p, T, at, events) == events[-1].log_position
    assert sent[0] == "BEGIN" and sent[1].startswith("WITH mm_batch_1") and sent[1].endswith("SELECT 1")
    assert await c.pool.fetchval("SELECT sum(n) FROM one_rows") == 20
    assert await _applied(c, p.name) == (events[-1].log_position, 2)


async def test_what_a_batch_does_not_offer_fails_loudly(c: Container) -> None:
    async with c.pool.acquire() as conn:
        batch = OneStatementBatch(conn)
        with pytest.raises(AttributeError, match="cursor"):
            batch.cursor  # noqa: B018
        # A write without parameters (the simple protocol: maybe several statements) is never held back.
        assert not batch.begun
        await batch.execute("CREATE TEMP TABLE scratch (x int)")
        assert batch.begun and conn.is_in_transaction()
        await conn.execute("ROLLBACK")


@pytest.mark.parametrize("batch", [37, CHUNK * 2 + 50])
async def test_the_audit_feed_written_live_equals_its_rebuild(fresh_database: str, batch: int) -> None:
    """The audit projection's live batches (heads read first, the feed and heads in one statement, or a
    transaction when a batch signs a checkpoint or is written in chunks) give the very chain, checkpoints and
    heads a rebuild gives."""
    c = await Container.open(settings(audit_checkpoint_every=50, audit_checkpoint_interval_s=30.0),
                             fresh_database, min_size=1, max_size=4)
    try:
        accounts = [str(uuid.uuid4()) for _ in range(2)]
        await seed(c.store, accounts, 300, step=timedelta(milliseconds=300), chunk=40)
        audit = audit_projection(c.settings)
        tables = {name: name for name in audit.tables}
        async with _session(c, audit.name) as (conn, at, sent):
            while events := await c.store.read_all(at, batch, conn=conn):
                at = await apply_events_from(conn, audit, tables, at, events)
        alone = [q for q in sent if q.startswith("WITH mm_batch_1") and "mm_checkpoint_advance" in q]
        # Batches of 37: both kinds ran (one statement; a transaction for those that sign a checkpoint). One batch
        # of 300: its chunks, the first held back and then sent after BEGIN, in a transaction.
        assert "BEGIN" in sent and bool(alone) == (batch < CHUNK)
        live = await _snapshot(c.pool)
        assert len(live[0]) == 300 and live[1]
        assert await rebuild(c.pool, c.store, audit, batch_size=1000) == 300
        assert await _snapshot(c.pool) == live
    finally:
        await c.close()


async def _snapshot(pool: asyncpg.Pool) -> tuple[list[Any], ...]:
    out = []
    for sql in ("SELECT id, account_id, seq, prev_hash, hash, line FROM audit_events ORDER BY tx_id, position",
                "SELECT * FROM audit_checkpoints ORDER BY tx_id, position",
                "SELECT * FROM audit_chain_heads ORDER BY account_key"):
        out.append([tuple(r) for r in await pool.fetch(sql)])
    return tuple(out)

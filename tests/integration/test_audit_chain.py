"""The audit hash chain and its checkpoints are a function of the log: a rebuild, with other batch sizes,
reproduces every hash and every signed checkpoint; rows from before the chain get hashed by that rebuild."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import asyncpg
import pytest

from app.container import Container
from app.store.types import NewEvent
from projections.audit import CHUNK
from projections.audit_reader import RECORD_LINE
from projections.audit_upgrade import hash_existing_rows, needs_hashing
from projections.rebuild import rebuild
from projections.registry import audit_projection
from projections.runner import ProjectionRunner
from tests.api.audit_stack import caught_up, seed, settings


@pytest.fixture
async def audited(fresh_database: str) -> AsyncIterator[Container]:
    c = await Container.open(settings(audit_checkpoint_every=50, audit_checkpoint_interval_s=30.0),
                             fresh_database, min_size=1, max_size=6)
    try:
        accounts = [str(uuid.uuid4()) for _ in range(3)]
        await seed(c.store, accounts[:2], 900, step=timedelta(milliseconds=300), chunk=120)
        await seed(c.store, accounts[2:], 40, step=timedelta(seconds=7), chunk=5)
        yield c
    finally:
        await c.close()


async def _snapshot(pool: asyncpg.Pool) -> tuple[list[Any], list[Any], list[Any]]:
    events = await pool.fetch("SELECT id, account_id, seq, prev_hash, hash FROM audit_events ORDER BY tx_id, position")
    checkpoints = await pool.fetch("SELECT * FROM audit_checkpoints ORDER BY tx_id, position")
    heads = await pool.fetch("SELECT * FROM audit_chain_heads ORDER BY account_key")
    return [tuple(r) for r in events], [tuple(r) for r in checkpoints], [tuple(r) for r in heads]


async def test_a_rebuild_reproduces_every_hash_and_checkpoint(audited: Container) -> None:
    audit = audit_projection(audited.settings)
    runner = ProjectionRunner(audited.pool, audited.store, [audit], batch_size=97)
    await caught_up(runner)
    live = await _snapshot(audited.pool)
    events, checkpoints, _heads = live
    assert all(h is not None for *_, h in events) and len({h for *_, h in events}) == 940
    counts = [cp[1] for cp in checkpoints]
    assert any(c % 50 == 0 for c in counts) and any(c % 50 for c in counts), counts  # both triggers fired
    # Batches of 1,000 go in chunks of CHUNK rows, each built while the previous one is inserted: the same
    # chain, checkpoints, heads and stored export lines as batches of 97 in one statement each.
    assert CHUNK < 97 * 2 < 1000
    assert await rebuild(audited.pool, audited.store, audit, batch_size=1000) == 940
    assert await _snapshot(audited.pool) == live
    assert await audited.pool.fetchval(
        f"SELECT count(*) FROM audit_events e WHERE line IS DISTINCT FROM {RECORD_LINE}") == 0


async def test_the_feed_keeps_its_rows_inline_and_a_rebuild_keeps_that(audited: Container) -> None:
    # sql/0150: rows up to a page stay inline (no TOAST at ~2 kB); LIKE ... INCLUDING ALL alone would drop that.
    options = "SELECT reloptions FROM pg_class WHERE oid = 'audit_events'::regclass"
    assert await audited.pool.fetchval(options) == ["toast_tuple_target=8160"]
    audit = audit_projection(audited.settings)
    await caught_up(ProjectionRunner(audited.pool, audited.store, [audit]))
    # A 3 kB event (random hex: pglz cannot shrink it): its feed row (data + export line) is over 4 kB.
    await audited.store.append([NewEvent(
        event_id=uuid.uuid4(), stream_id=uuid.uuid4(), stream_type="machines:Machine", version=1,
        type="machines:Machine.ProfileRevised",
        data={"timestamp": "2026-01-02T00:00:00+00:00", "name": os.urandom(1500).hex()},
        metadata={"ownerAccountId": str(uuid.uuid4()), "actor": "system:seed"})])
    assert await rebuild(audited.pool, audited.store, audit) == 941
    assert await audited.pool.fetchval(options) == ["toast_tuple_target=8160"]
    # That row of the rebuilt table is stored in the heap, not in its TOAST table.
    wide = await audited.pool.fetchval("SELECT max(pg_column_size(a.*)) FROM audit_events a")
    toasted = await audited.pool.fetchval(
        "SELECT pg_relation_size(reltoastrelid) FROM pg_class WHERE oid = 'audit_events'::regclass")
    assert wide > 4000 and toasted == 0, (wide, toasted)


async def test_rows_from_before_the_chain_are_hashed_by_a_rebuild(audited: Container) -> None:
    audit = audit_projection(audited.settings)
    runner = ProjectionRunner(audited.pool, audited.store, [audit], batch_size=200)
    await caught_up(runner)
    chained = await _snapshot(audited.pool)
    # What a database migrated from before 0070 holds: rows without chain columns, no heads, no checkpoints.
    # No stored export line either (sql/0140 came after 0070; a line carries the chain columns it would lack).
    await audited.pool.execute("UPDATE audit_events SET seq = NULL, prev_hash = NULL, hash = NULL, line = NULL")
    await audited.pool.execute("TRUNCATE audit_chain_heads, audit_checkpoints")
    async with audited.pool.acquire() as conn:
        assert await needs_hashing(conn)
    assert await hash_existing_rows(audited.pool, audited.store, audit, 300)
    assert await _snapshot(audited.pool) == chained
    assert await audited.pool.fetchval(  # the rebuild stored each row's export line again
        f"SELECT count(*) FROM audit_events e WHERE line IS DISTINCT FROM {RECORD_LINE}") == 0
    assert not await hash_existing_rows(audited.pool, audited.store, audit, 300)


async def test_without_a_key_the_chain_is_kept_but_nothing_is_signed(audited: Container) -> None:
    keyless = audit_projection(settings(audit_signing_key=None))
    await caught_up(ProjectionRunner(audited.pool, audited.store, [keyless]))
    events, checkpoints, _ = await _snapshot(audited.pool)
    assert len(events) == 940 and all(e[-1] is not None for e in events) and checkpoints == []

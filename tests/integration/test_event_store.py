"""Event store against real PostgreSQL: append, concurrency, idempotency, and gap-free global reads."""

from __future__ import annotations

import asyncio
import random
import uuid

import asyncpg
import pytest

from app.store.event_store import EventStore
from app.store.types import LogPosition, NewEvent
from domain.shared.errors import ConcurrencyConflict


def ev(stream: uuid.UUID, version: int, event_id: uuid.UUID | None = None, **data: object) -> NewEvent:
    return NewEvent(
        event_id=event_id or uuid.uuid4(), stream_id=stream, stream_type="test:Stream", version=version,
        type="test:Stream.Happened", data={"n": version, **data}, metadata={"actor": "test"},
    )


async def test_append_and_load_round_trip(store: EventStore) -> None:
    stream = uuid.uuid4()
    first = await store.append([ev(stream, 1)])
    second = await store.append([ev(stream, 2), ev(stream, 3)])
    loaded = await store.load(stream)
    assert [e.version for e in loaded] == [1, 2, 3]
    assert loaded[0].data == {"n": 1} and loaded[0].metadata == {"actor": "test"}
    assert first.last < second.last
    assert not first.duplicate and not second.duplicate


async def test_an_append_answers_with_its_events_as_the_log_recorded_them(store: EventStore) -> None:
    """What a command answers with (e.g. an order's timeline) without reading back what it has just written."""
    stream, other = uuid.uuid4(), uuid.uuid4()
    one = await store.append([ev(stream, 1)])
    many = await store.append([ev(stream, 2), ev(other, 1), ev(stream, 3)])
    loaded = {(e.stream_id, e.version): e for e in [*await store.load(stream), *await store.load(other)]}
    for result in (one, many):
        assert result.events and result.events[-1].log_position == result.last
        for e in result.events:
            stored = loaded[(e.stream_id, e.version)]
            assert (e.position, e.tx_id, e.event_id, e.type, e.recorded_at, e.data) == (
                stored.position, stored.tx_id, stored.event_id, stored.type, stored.recorded_at, stored.data)
    assert [(e.stream_id, e.version) for e in many.events] == [(stream, 2), (other, 1), (stream, 3)]
    again = await store.append([ev(stream, 1, one.events[0].event_id)])
    assert again.duplicate and again.events == ()


async def test_same_version_twice_is_a_concurrency_conflict(store: EventStore) -> None:
    stream = uuid.uuid4()
    await store.append([ev(stream, 1)])
    with pytest.raises(ConcurrencyConflict):
        await store.append([ev(stream, 1)])
    assert len(await store.load(stream)) == 1


async def test_concurrent_writers_to_one_stream_one_wins(store: EventStore) -> None:
    stream = uuid.uuid4()
    await store.append([ev(stream, 1)])
    results = await asyncio.gather(*(store.append([ev(stream, 2)]) for _ in range(8)), return_exceptions=True)
    assert sum(1 for r in results if not isinstance(r, BaseException)) == 1
    assert all(isinstance(r, ConcurrencyConflict) for r in results if isinstance(r, BaseException))


async def test_append_with_a_recorded_event_id_is_an_idempotent_no_op(store: EventStore) -> None:
    stream, eid = uuid.uuid4(), uuid.uuid4()
    first = await store.append([ev(stream, 1, eid)])
    again = await store.append([ev(stream, 1, eid)])
    assert again.duplicate and again.last == first.last
    assert len(await store.load(stream)) == 1


async def test_multi_event_append_is_atomic(store: EventStore) -> None:
    stream = uuid.uuid4()
    await store.append([ev(stream, 1)])
    with pytest.raises(ConcurrencyConflict):
        await store.append([ev(stream, 2), ev(stream, 1)])  # second clashes: nothing of the batch stays
    assert [e.version for e in await store.load(stream)] == [1]


async def test_multi_event_retry_is_an_idempotent_no_op(store: EventStore) -> None:
    stream = uuid.uuid4()
    batch = [ev(stream, 1), ev(stream, 2), ev(uuid.uuid4(), 1)]
    first = await store.append(batch)
    again = await store.append(batch)
    assert again.duplicate and again.last == first.last
    assert [e.version for e in await store.load(stream)] == [1, 2]


async def test_batch_partly_recorded_before_is_refused_whole(store: EventStore) -> None:
    stream, other = uuid.uuid4(), uuid.uuid4()
    recorded = ev(stream, 1)
    await store.append([recorded])
    with pytest.raises(ConcurrencyConflict):
        await store.append([ev(other, 1), recorded, ev(stream, 2)])
    assert [e.version for e in await store.load(stream)] == [1]
    assert await store.load(other) == []


async def test_concurrent_identical_batches_record_once(store: EventStore) -> None:
    stream = uuid.uuid4()
    batch = [ev(stream, 1), ev(stream, 2)]
    results = await asyncio.gather(*(store.append(batch) for _ in range(8)), return_exceptions=True)
    done = [r for r in results if not isinstance(r, BaseException)]
    assert sum(1 for r in done if not r.duplicate) == 1
    # A racing copy either sees the batch recorded (a duplicate) or loses on the stream's version.
    assert all(isinstance(r, ConcurrencyConflict) for r in results if isinstance(r, BaseException))
    assert [e.version for e in await store.load(stream)] == [1, 2]


async def _insert(conn: asyncpg.Connection, stream: uuid.UUID) -> None:
    await conn.execute("INSERT INTO events (event_id, stream_id, stream_type, version, type, data)"
                       " VALUES ($1, $2, 'test:Stream', 1, 'test:Stream.Happened', '{}')", uuid.uuid4(), stream)


async def _blocked_by(pool: asyncpg.Pool, pid: int) -> int:
    """The backend waiting on a lock that backend `pid` holds."""
    for _ in range(500):
        if found := await pool.fetchval(
                "SELECT pid FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid)) LIMIT 1", pid):
            return int(found)
        await asyncio.sleep(0.01)
    raise AssertionError(f"nothing waits on backend {pid}")


async def test_a_multi_event_append_that_deadlocks_is_a_concurrency_conflict(store: EventStore,
                                                                             pool: asyncpg.Pool) -> None:
    """Two commands' appends that take the same stream versions in opposite orders: PostgreSQL breaks the
    deadlock by rolling one back, and that one is a version taken, as if it had come second."""
    s1, s2, s3 = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    holder = await pool.acquire()
    try:
        # Only the appends may be the deadlock's victim: the holder checks last.
        await holder.execute("SET deadlock_timeout = '30s'")
        tx = holder.transaction()
        await tx.start()
        await _insert(holder, s2)  # (s2, 1) held: the first append waits for it with (s1, 1) taken
        first = asyncio.ensure_future(store.append([ev(s1, 1), ev(s2, 1)]))
        first_pid = await _blocked_by(pool, holder.get_server_pid())
        # The second (another API process: a group of its own) takes (s3, 1), then waits for the first's (s1, 1).
        second = asyncio.ensure_future(EventStore(pool).append([ev(s3, 1), ev(s1, 1)]))
        await _blocked_by(pool, first_pid)
        # The holder now waits for the second's (s3, 1): a cycle, found by the append that waited longest.
        closing = asyncio.ensure_future(_insert(holder, s3))
        results = await asyncio.gather(first, second, return_exceptions=True)
        with pytest.raises(asyncpg.UniqueViolationError):
            await closing  # (s3, 1) went to the append that survived
        await tx.rollback()
    finally:
        await pool.release(holder)
    failed = [r for r in results if isinstance(r, BaseException)]
    assert len(failed) == 1 and isinstance(failed[0], ConcurrencyConflict), results
    assert isinstance(failed[0].__context__, asyncpg.DeadlockDetectedError)
    winner = [e.stream_id for e in next(r for r in results if not isinstance(r, BaseException)).events]
    assert winner in ([s1, s2], [s3, s1])
    assert [len(await store.load(s)) for s in (s1, s2, s3)] == ([1, 1, 0] if winner == [s1, s2] else [1, 0, 1])


async def _slow_writer(pool: asyncpg.Pool, ids: list[uuid.UUID], committed: set[uuid.UUID], rollback: bool) -> None:
    """Holds its transaction open a while (and sometimes rolls back): the case naive readers get wrong."""
    async with pool.acquire() as conn:
        for _ in range(5):
            eid, stream = uuid.uuid4(), uuid.uuid4()
            tx = conn.transaction()
            await tx.start()
            await conn.execute(
                "INSERT INTO events (event_id, stream_id, stream_type, version, type, data)"
                " VALUES ($1, $2, 'test:Slow', 1, 'test:Slow.Happened', '{}')",
                eid, stream,
            )
            ids.append(eid)
            await asyncio.sleep(random.uniform(0.005, 0.08))
            if rollback:
                await tx.rollback()
            else:
                await tx.commit()
                committed.add(eid)


async def _fast_writer(store: EventStore, committed: set[uuid.UUID], n: int) -> None:
    for _ in range(n):
        e = ev(uuid.uuid4(), 1)
        await store.append([e])
        committed.add(e.event_id)


async def _newest_row(pool: asyncpg.Pool) -> LogPosition:
    """The last row in log order, read past the visibility filter. Not store.head(): a transaction anywhere on
    the server (another database's too) can hold the horizon back for a moment, and with it head()."""
    row = await pool.fetchrow("SELECT tx_id::text::bigint AS tx_id, position FROM events"
                              " ORDER BY events.tx_id DESC, events.position DESC LIMIT 1")
    return LogPosition(0, 0) if row is None else LogPosition(row["tx_id"], row["position"])


@pytest.mark.slow
async def test_follower_sees_every_committed_event_exactly_once_in_stable_order(
    store: EventStore, pool: asyncpg.Pool
) -> None:
    start = await _newest_row(pool)
    committed: set[uuid.UUID] = set()
    attempted: list[uuid.UUID] = []
    seen: list[uuid.UUID] = []
    done = asyncio.Event()

    async def follow() -> None:
        after, last = start, None
        while last is None or after < last:
            batch = await store.read_all(after, limit=50)
            for e in batch:
                seen.append(e.event_id)
                after = e.log_position
            if not batch:
                if done.is_set() and last is None:
                    # Every writer has finished: the newest row is where a follower that skipped nothing ends.
                    last = await _newest_row(pool)
                await asyncio.sleep(0.001)

    follower = asyncio.create_task(follow())
    writers = [_fast_writer(store, committed, 60) for _ in range(24)]
    writers += [_slow_writer(pool, attempted, committed, rollback=i % 3 == 0) for i in range(9)]
    await asyncio.gather(*writers)
    done.set()
    await asyncio.wait_for(follower, 30)

    assert len(seen) == len(set(seen)), "an event was delivered twice"
    assert set(seen) == committed, f"missed {len(committed - set(seen))} committed events"
    rolled_back = set(attempted) - committed
    assert rolled_back and not rolled_back & set(seen)
    # A second reader from the same start sees the identical sequence: the order is stable.
    replay: list[uuid.UUID] = []
    after = start
    while batch := await store.read_all(after, limit=500):
        replay += [e.event_id for e in batch]
        after = batch[-1].log_position
    assert replay == seen


async def test_global_read_walks_the_tx_position_index(store: EventStore, pool: asyncpg.Pool) -> None:
    """Sorting by the bigint alias instead of the column once turned every batch into a full scan."""
    from app.store.event_store import READ_ALL_SQL

    async with pool.acquire() as conn, conn.transaction():
        # Test tables are tiny, so take scans that could not return rows in order off the table: what is
        # left is an index scan, and a Sort on top of it means ORDER BY does not follow the index.
        await conn.execute("SET LOCAL enable_seqscan = off")
        await conn.execute("SET LOCAL enable_bitmapscan = off")
        plan = await conn.fetchval(f"EXPLAIN (FORMAT JSON) {READ_ALL_SQL}", "0", 0, 500)
    text = plan if isinstance(plan, str) else str(plan)
    assert "events_tx_position_idx" in text
    assert '"Node Type": "Sort"' not in text


async def test_loaded_ids_are_exact_uuids(store: EventStore) -> None:
    stream = uuid.uuid4()
    sent = ev(stream, 1)
    await store.append([sent])
    (loaded,) = await store.load(stream)
    # asyncpg answers a UUID subclass; aggregates and the snapshot transcoder need the exact type.
    assert type(loaded.stream_id) is uuid.UUID and type(loaded.event_id) is uuid.UUID
    assert (loaded.stream_id, loaded.event_id) == (stream, sent.event_id)
    assert hash(loaded.stream_id) == hash(stream) and str(loaded.event_id) == str(sent.event_id)

"""Group commit: concurrent appends written together, each still its own atomic, idempotent command."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import pytest

from app.store.event_store import EventStore
from app.store.group_append import GroupAppender
from app.store.types import AppendResult, NewEvent
from domain.shared.errors import ConcurrencyConflict


def ev(stream: uuid.UUID, version: int, event_id: uuid.UUID | None = None) -> NewEvent:
    return NewEvent(event_id=event_id or uuid.uuid4(), stream_id=stream, stream_type="test:Grouped", version=version,
                    type="test:Grouped.Happened", data={"n": version}, metadata={"actor": "test"})


@pytest.fixture
def store(pool: asyncpg.Pool) -> EventStore:
    return EventStore(pool)  # its own group, so the statements counted are this test's


def groups(store: EventStore) -> GroupAppender:
    assert store._group is not None
    return store._group


async def _tx_ids(pool: asyncpg.Pool, results: list[AppendResult]) -> set[int]:
    rows = await pool.fetch("SELECT tx_id::text::bigint AS tx FROM events WHERE event_id = ANY($1::uuid[])",
                            [r.events[0].event_id for r in results])
    return {r["tx"] for r in rows}


async def test_concurrent_appends_are_written_as_one_statement_each_with_its_own_row(
        store: EventStore, pool: asyncpg.Pool) -> None:
    events = [ev(uuid.uuid4(), 1) for _ in range(20)]
    results = await asyncio.gather(*(store.append([e]) for e in events))
    assert groups(store).groups == 1  # all arrived before the first was written
    assert len(await _tx_ids(pool, results)) == 1  # one transaction
    for e, r in zip(events, results, strict=True):
        assert not r.duplicate
        assert r.events[0].event_id == e.event_id and r.events[0].log_position == r.last
        (loaded,) = await store.load(e.stream_id)
        assert loaded.event_id == e.event_id and loaded.log_position == r.last
    assert len({r.last for r in results}) == 20


async def test_a_lone_append_is_written_at_once_and_the_next_ones_in_groups(store: EventStore) -> None:
    first = await store.append([ev(uuid.uuid4(), 1)])
    assert groups(store).groups == 1 and not first.duplicate
    await asyncio.gather(*(store.append([ev(uuid.uuid4(), 1)]) for _ in range(5)))
    assert groups(store).groups == 2


async def test_a_retry_in_a_group_is_a_duplicate_answered_with_where_it_was_recorded(store: EventStore) -> None:
    stream, eid = uuid.uuid4(), uuid.uuid4()
    original = await store.append([ev(stream, 1, eid)])
    retry, *others = await asyncio.gather(store.append([ev(stream, 1, eid)]),
                                          *(store.append([ev(uuid.uuid4(), 1)]) for _ in range(4)))
    assert retry.duplicate and retry.last == original.last and retry.events == ()
    assert all(not o.duplicate for o in others)
    assert [e.event_id for e in await store.load(stream)] == [eid]


async def test_two_commands_on_one_stream_version_in_a_group_one_wins_the_others_are_recorded(
        store: EventStore) -> None:
    stream = uuid.uuid4()
    await store.append([ev(stream, 1)])
    results = await asyncio.gather(store.append([ev(stream, 2)]), store.append([ev(stream, 2)]),
                                   *(store.append([ev(uuid.uuid4(), 1)]) for _ in range(3)), return_exceptions=True)
    assert groups(store).groups == 2
    clashing, others = results[:2], results[2:]
    assert sum(isinstance(r, ConcurrencyConflict) for r in clashing) == 1
    assert all(isinstance(r, AppendResult) and not r.duplicate for r in others)
    assert [e.version for e in await store.load(stream)] == [1, 2]


async def test_a_row_postgresql_refuses_fails_only_its_own_append(store: EventStore) -> None:
    bad = ev(uuid.uuid4(), 0)  # events_version_check: version > 0
    good = [ev(uuid.uuid4(), 1) for _ in range(4)]
    results = await asyncio.gather(store.append([bad]), *(store.append([e]) for e in good), return_exceptions=True)
    assert isinstance(results[0], asyncpg.CheckViolationError)
    assert all(isinstance(r, AppendResult) and not r.duplicate for r in results[1:])
    for e in good:
        assert [x.event_id for x in await store.load(e.stream_id)] == [e.event_id]
    assert await store.load(bad.stream_id) == []


async def test_an_event_that_cannot_be_encoded_fails_only_its_own_append(store: EventStore) -> None:
    bad = NewEvent(event_id=uuid.uuid4(), stream_id=uuid.uuid4(), stream_type="test:Grouped", version=1,
                   type="test:Grouped.Happened", data={"n": object()}, metadata={})
    good = [ev(uuid.uuid4(), 1) for _ in range(3)]
    results = await asyncio.gather(*(store.append([e]) for e in good[:2]), store.append([bad]),
                                   store.append([good[2]]), return_exceptions=True)
    assert isinstance(results[2], TypeError)
    assert all(isinstance(r, AppendResult) and not r.duplicate for r in (*results[:2], results[3]))
    assert groups(store).groups == 1


async def test_a_cancelled_append_leaves_the_others_of_its_group_to_complete(store: EventStore) -> None:
    events = [ev(uuid.uuid4(), 1) for _ in range(6)]
    tasks = [asyncio.create_task(store.append([e])) for e in events]
    await asyncio.sleep(0)  # every append queued, the group not yet written
    tasks[0].cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(results[0], asyncio.CancelledError)
    assert all(isinstance(r, AppendResult) for r in results[1:])
    # The cancelled caller only stopped waiting: its event was written with the group (as a request cut off
    # mid-INSERT may have been), and a retry of it is answered as a duplicate.
    assert len(await store.load(events[0].stream_id)) == 1
    assert (await store.append([events[0]])).duplicate


async def test_a_lost_server_fails_every_append_of_the_group(pool: asyncpg.Pool, database_url: str) -> None:
    from app.db import create_pool
    from app.settings import Settings

    own = await create_pool(database_url, Settings(), min_size=1, max_size=2)
    store = EventStore(own)
    await store.append([ev(uuid.uuid4(), 1)])
    await own.close()  # every session gone, as after a server restart with no way back
    results = await asyncio.gather(*(store.append([ev(uuid.uuid4(), 1)]) for _ in range(3)), return_exceptions=True)
    assert all(isinstance(r, asyncpg.InterfaceError) for r in results), results
    await store.close()


def beat(agent: uuid.UUID, endpoint: uuid.UUID, version: int = 1) -> list[NewEvent]:
    """A command of two events on two streams, as a heartbeat records (the agent's, then its endpoint's)."""
    return [ev(agent, version), ev(endpoint, version)]


async def _rows(pool: asyncpg.Pool, results: list[AppendResult]) -> list[asyncpg.Record]:
    return await pool.fetch("SELECT event_id, tx_id::text::bigint AS tx, position FROM events"
                            " WHERE event_id = ANY($1::uuid[]) ORDER BY position",
                            [e.event_id for r in results for e in r.events])


async def test_concurrent_commands_of_several_events_are_one_statement_each_kept_whole_and_in_order(
        store: EventStore, pool: asyncpg.Pool) -> None:
    commands = [beat(uuid.uuid4(), uuid.uuid4()) for _ in range(12)]
    singles = [[ev(uuid.uuid4(), 1)] for _ in range(4)]
    results = await asyncio.gather(*(store.append(c) for c in [*commands, *singles]))
    assert groups(store).groups == 1 and len(await _tx_ids(pool, results)) == 1
    rows = await _rows(pool, results)
    at = {r["event_id"]: i for i, r in enumerate(rows)}
    for command, result in zip([*commands, *singles], results, strict=True):
        assert not result.duplicate
        assert [e.event_id for e in result.events] == [e.event_id for e in command]
        assert result.last == max(e.log_position for e in result.events)
        # Its rows next to each other in the log, in the command's own order (projections read them so).
        places = [at[e.event_id] for e in command]
        assert places == list(range(places[0], places[0] + len(command)))


async def test_a_command_that_gets_only_some_of_its_rows_records_none_and_its_group_still_lands(
        store: EventStore, pool: asyncpg.Pool) -> None:
    shared = uuid.uuid4()  # both commands write version 1 of this stream: one of them can have it
    first, second = [ev(uuid.uuid4(), 1), ev(shared, 1)], [ev(uuid.uuid4(), 1), ev(shared, 1)]
    others = [beat(uuid.uuid4(), uuid.uuid4()) for _ in range(3)]
    # All five queue before the group is written: one statement, where the first of the two (in lock order) takes
    # the shared row and the other gets only its own.
    results = await asyncio.gather(*(store.append(c) for c in [first, second, *others]), return_exceptions=True)
    lost = [c for c, r in zip((first, second), results, strict=False) if isinstance(r, ConcurrencyConflict)]
    assert len(lost) == 1, results
    assert await store.load(lost[0][0].stream_id) == []  # the loser's own stream: nothing of it recorded
    won = first if lost[0] is second else second
    assert [e.event_id for e in await store.load(shared)] == [won[1].event_id]
    for command, result in zip(others, results[2:], strict=True):
        assert isinstance(result, AppendResult) and not result.duplicate
        assert [e.event_id for e in result.events] == [e.event_id for e in command]
    # The group failed whole, naming the partial command: the other four went again as one group, it alone.
    assert groups(store).groups == 3


async def test_a_retried_command_of_several_events_in_a_group_is_a_duplicate(store: EventStore) -> None:
    command = beat(uuid.uuid4(), uuid.uuid4())
    original = await store.append(command)
    retry, *others = await asyncio.gather(store.append(command),
                                          *(store.append(beat(uuid.uuid4(), uuid.uuid4())) for _ in range(3)))
    assert retry.duplicate and retry.last == original.last and retry.events == ()
    assert all(not o.duplicate for o in others)
    assert groups(store).groups == 2


async def test_a_command_with_some_of_its_ids_recorded_before_is_refused_whole_in_a_group(store: EventStore) -> None:
    recorded = beat(uuid.uuid4(), uuid.uuid4())
    await store.append(recorded)
    half = [recorded[0], ev(uuid.uuid4(), 1)]  # one id already recorded, one new: not a retry of one command
    refused, *others = await asyncio.gather(store.append(half), *(store.append(beat(uuid.uuid4(), uuid.uuid4()))
                                                                  for _ in range(3)), return_exceptions=True)
    assert isinstance(refused, ConcurrencyConflict) and "part of this batch" in str(refused)
    assert await store.load(half[1].stream_id) == []
    assert all(isinstance(o, AppendResult) and not o.duplicate for o in others)
    assert groups(store).groups == 1 + 3  # the group failed naming it; the others went again together, it alone


async def test_the_same_command_sent_twice_at_once_is_recorded_once_and_answered_as_its_retry(
        store: EventStore) -> None:
    command = beat(uuid.uuid4(), uuid.uuid4())
    await store.append([ev(uuid.uuid4(), 1)])
    a, b = await asyncio.gather(store.append(command), store.append(command))
    assert sorted([a.duplicate, b.duplicate]) == [False, True]
    assert a.last == b.last
    assert [e.event_id for e in await store.load(command[0].stream_id)] == [command[0].event_id]

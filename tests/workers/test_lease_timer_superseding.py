"""A heartbeat's lease timer supersedes the endpoint's previous one: the PostgreSQL broker deletes it while it is
still queued (never once claimed), one batch sends only a stream's latest, and other brokers still deliver all."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from typing import Any

import asyncpg
import psycopg
import pytest
from dramatiq.brokers.stub import StubBroker
from dramatiq.message import Message

from app.store.types import RecordedEvent
from projections.relay import RelayProjection, planned_messages, timer_id
from tests.factories import FIXED_AT
from workers.pg_broker import PostgresBroker

ACTOR = "expire_runtime_endpoint_lease"


def beat(stream: uuid.UUID, version: int) -> RecordedEvent:
    """The endpoint's `version`-th agent upsert (the first opens it), its lease a minute after."""
    kind = "Opened" if version == 1 else "Upserted"
    lease = FIXED_AT + timedelta(seconds=30 * version + 60)
    return RecordedEvent(position=version, tx_id=version, event_id=uuid.uuid4(), stream_id=stream,
                         stream_type="runtime:RuntimeEndpoint", version=version, type=f"runtime:RuntimeEndpoint.{kind}",
                         data={"timestamp": FIXED_AT.isoformat(), "source": "agent",
                               "lease_expires_at": lease.isoformat()},
                         metadata={"actor": "agent:x"}, recorded_at=FIXED_AT)


def agent_upsert(stream: uuid.UUID, version: int) -> Any:
    """`beat` as an event to append: an agent's upsert of the endpoint, its lease a minute on."""
    from app.store.types import NewEvent

    e = beat(stream, version)
    return NewEvent(event_id=uuid.uuid4(), stream_id=stream, stream_type=e.stream_type, version=version,
                    type=e.type, data=e.data, metadata=e.metadata)


def _stored(url: str, ids: list[str]) -> dict[str, str]:
    """message id -> state, for those of `ids` the broker holds."""
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT message_id::text, state FROM worker_messages WHERE message_id = ANY(%s::uuid[])",
                            [[uuid.UUID(i) for i in ids]]).fetchall()
    return dict(rows)


def _relay(broker: Any, *batches: list[RecordedEvent], on_session: bool = False) -> None:
    """Through the broker's own connections (a thread), or `on_session`: on an asyncpg session of the broker's
    database, as the projector's relay does with the default broker."""
    relay = RelayProjection(broker, now=lambda: FIXED_AT, same_database=on_session)
    if on_session:
        relay._enqueue_all = None  # type: ignore[assignment,method-assign]  # never through the thread

    async def run() -> None:
        conn = await asyncpg.connect(broker.url) if on_session else None
        try:
            for events in batches:
                await relay.apply_many(conn, events, {})  # type: ignore[arg-type]  # the relay writes no rows
        finally:
            if conn is not None:
                await conn.close()

    asyncio.run(run())


def test_each_version_names_its_timer_and_the_one_it_supersedes() -> None:
    stream, other = uuid.uuid4(), uuid.uuid4()
    [first] = planned_messages(beat(stream, 1))
    [third] = planned_messages(beat(stream, 3))
    assert (first.actor, first.message_id, first.supersedes) == (ACTOR, timer_id(ACTOR, stream, 1), None)
    assert (third.message_id, third.supersedes) == (timer_id(ACTOR, stream, 3), timer_id(ACTOR, stream, 2))
    assert len({timer_id(ACTOR, s, v) for s in (stream, other) for v in (1, 2, 3)}) == 6
    # Redelivering or replaying an event plans the same message: the broker stores it once.
    assert planned_messages(beat(stream, 3))[0].message_id == third.message_id


@pytest.mark.parametrize("on_session", [False, True])
def test_the_postgres_broker_deletes_a_superseded_timer_still_queued(database_url: str, on_session: bool) -> None:
    stream, broker = uuid.uuid4(), PostgresBroker(database_url)
    ids = [timer_id(ACTOR, stream, v) for v in range(1, 4)]
    try:
        _relay(broker, [beat(stream, 1)], on_session=on_session)
        assert _stored(database_url, ids) == {ids[0]: "queued"}
        _relay(broker, [beat(stream, 2)], on_session=on_session)
        assert _stored(database_url, ids) == {ids[1]: "queued"}
        # A worker has claimed version 2's timer: it is left to finish (its actor finds the version moved on).
        with psycopg.connect(database_url) as conn:
            conn.execute("UPDATE worker_messages SET state = 'consumed', attempts = 1,"
                         " lease_expires_at = now() + interval '1 minute' WHERE message_id = %s::uuid", [ids[1]])
        _relay(broker, [beat(stream, 3)], on_session=on_session)
        assert _stored(database_url, ids) == {ids[1]: "consumed", ids[2]: "queued"}
    finally:
        broker.close()


@pytest.mark.parametrize("on_session", [False, True])
def test_one_batch_sends_only_the_latest_timer_of_a_stream(database_url: str, on_session: bool) -> None:
    stream, other, broker = uuid.uuid4(), uuid.uuid4(), PostgresBroker(database_url)
    ids = [timer_id(ACTOR, stream, v) for v in range(1, 6)]
    try:
        _relay(broker, [beat(stream, 1)], [beat(stream, 2), beat(other, 1), beat(stream, 3), beat(stream, 4)],
               on_session=on_session)
        assert _stored(database_url, ids) == {ids[3]: "queued"}
        assert _stored(database_url, [timer_id(ACTOR, other, 1)]) == {timer_id(ACTOR, other, 1): "queued"}
    finally:
        broker.close()


@pytest.mark.parametrize("batches", [1, 2])
def test_another_broker_still_delivers_every_timer(batches: int) -> None:
    # No deleting there: a stale timer is delivered, and the actor ignores it (workers/runtime_leases.py).
    broker, stream = StubBroker(), uuid.uuid4()
    broker.declare_queue("runtime")
    events = [beat(stream, 1), beat(stream, 2)]
    _relay(broker, *([events] if batches == 1 else [[e] for e in events]))
    sent = [Message.decode(m).message_id for m in broker.queues["runtime.DQ"].queue]
    assert timer_id(ACTOR, stream, 2) in sent
    assert len(sent) == (1 if batches == 1 else 2)


async def test_the_projectors_relay_hands_off_on_its_session_ahead_of_the_checkpoint(fresh_database: str) -> None:
    """The runner's live path with the default broker (its table in the projector's database): the messages go
    on the relay's own session, committed ahead of the batch's compare-and-set, never through a thread; a
    batch applied again (its checkpoint lost) stores nothing twice."""
    from app.container import Container
    from app.settings import Settings
    from projections import checkpoints
    from projections.runner import apply_events_from

    c = await Container.open(Settings(), fresh_database, min_size=1, max_size=4)
    broker = PostgresBroker(fresh_database)
    relay = RelayProjection(broker, same_database=True)
    relay._enqueue_all = None  # type: ignore[assignment,method-assign]  # never through the thread
    stream = uuid.uuid4()
    try:
        await c.store.append([agent_upsert(stream, v) for v in (1, 2)])
        events = await c.store.load(stream)
        sent: list[str] = []
        async with c.pool.acquire() as conn:
            await checkpoints.ensure(conn, relay.name)
            start = await checkpoints.position(conn, relay.name)
            assert start is not None
            conn.add_query_logger(lambda record: sent.append(record.query.strip()))
            assert await apply_events_from(conn, relay, {}, start, events) == events[-1].log_position
            # The checkpoint lost (a crash before its commit was flushed): the same batch once more.
            await conn.execute("UPDATE projection_checkpoints SET tx_id = $2::text::xid8, position = $3"
                               " WHERE name = $1", relay.name, str(start.tx_id), start.position)
            await apply_events_from(conn, relay, {}, start, events)
        enqueues = [i for i, q in enumerate(sent) if "INSERT INTO worker_messages" in q]
        advances = [i for i, q in enumerate(sent) if "mm_checkpoint_advance" in q]
        assert len(enqueues) == 2 and enqueues[0] < advances[0] and "BEGIN" not in sent
        ids = [timer_id(ACTOR, stream, v) for v in (1, 2)]
        assert _stored(fresh_database, ids) == {ids[1]: "queued"}
    finally:
        broker.close()
        await c.close()

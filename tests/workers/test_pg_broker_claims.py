"""PostgresBroker's consumer: one statement claims or says when the next message is due; acks skip the WAL wait."""

from __future__ import annotations

from tests.workers.test_pg_broker import _actor, _broker, _queue, _rows
from workers.pg_broker_consumer import PostgresConsumer


def test_one_claim_statement_claims_ready_messages_or_says_when_the_next_is_due(database_url: str) -> None:
    broker, queue = _broker(database_url), _queue()
    act = _actor(broker, queue, lambda: None)
    consumer = broker.consume(queue, prefetch=5, timeout=100)
    assert isinstance(consumer, PostgresConsumer)
    try:
        assert consumer._claim(5) is None  # nothing queued: wait for a NOTIFY (or the poll)
        act.send_with_options(delay=30_000)
        due_in = consumer._claim(5)
        assert due_in is not None and 25 < due_in <= 30  # only a delayed one: wait until it is due
        ready = act.send()
        assert consumer._claim(5) == 0.0  # claimed: look again at once
        [claimed] = [m for m in consumer._buffer]
        assert claimed.message_id == ready.message_id
        assert {r["state"] for r in _rows(database_url, queue)} == {"queued", "consumed"}
    finally:
        consumer.close()
        broker.close()


def test_acks_commit_without_waiting_for_the_wal_flush_and_enqueues_and_claims_do(database_url: str) -> None:
    broker, queue = _broker(database_url), _queue()
    act = _actor(broker, queue, lambda: None)
    try:
        with broker.ack_pool.connection() as conn:
            assert conn.execute("SHOW synchronous_commit").fetchone() == ("off",)
        with broker.pool.connection() as conn:
            assert conn.execute("SHOW synchronous_commit").fetchone() == ("on",)
        act.send()
        consumer = broker.consume(queue, prefetch=1, timeout=1000)
        try:
            assert consumer._conn.execute("SHOW synchronous_commit").fetchone() == ("on",)  # type: ignore[attr-defined]
            message = next(consumer)
            assert message is not None
            consumer.ack(message)
        finally:
            consumer.close()
        assert [(r["state"], r["lease_expires_at"]) for r in _rows(database_url, queue)] == [("done", None)]
    finally:
        broker.close()

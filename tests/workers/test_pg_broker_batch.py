"""PostgresBroker.enqueue_many: a batch is one atomic upsert that keeps dedupe, retries and the given order."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import psycopg
from dramatiq.message import Message

from tests.workers.test_pg_broker import JOIN_MS, _actor, _broker, _queue, _rows, _running


def _xmins(url: str, queue: str) -> set[str]:
    with psycopg.connect(url) as conn:
        return {r[0] for r in conn.execute("SELECT xmin::text FROM worker_messages WHERE queue_name = %s", [queue])}


def test_a_batch_is_stored_in_one_transaction_in_order_each_id_once_and_processed_once(database_url: str) -> None:
    broker, queue, seen = _broker(database_url), _queue(), Counter[int]()
    act = _actor(broker, queue, lambda n: seen.update([n]))
    known = act.message(-1)
    broker.enqueue(known)  # already stored: the batch's copy of it is a duplicate
    messages = [act.message(n) for n in range(40)]
    batch: list[tuple[Message[Any], int | None]] = [(m, None) for m in messages]
    batch.insert(10, (messages[3], None))  # a repeated id inside the batch
    batch.append((known, None))
    batch.append((act.message(99), 1200))  # a delayed one
    sent_at = time.monotonic()
    returned = broker.enqueue_many(batch)
    assert [m.message_id for m in returned] == [m.message_id for m, _ in batch]
    rows = _rows(database_url, queue)
    stored = [str(r["message_id"]) for r in rows]
    assert stored == [known.message_id, *(m.message_id for m in messages), returned[-1].message_id]
    assert len(_xmins(database_url, queue) - _xmins_of(database_url, known.message_id)) == 1
    with _running(broker):
        broker.join(queue, timeout=JOIN_MS)
    assert seen == Counter([-1, *range(40), 99])
    [delayed] = [r for r in _rows(database_url, queue) if str(r["message_id"]) == returned[-1].message_id]
    assert delayed["consumed_at"] is not None and delayed["eta"] > delayed["created_at"]
    assert time.monotonic() - sent_at >= 1.2


def _xmins_of(url: str, message_id: str) -> set[str]:
    with psycopg.connect(url) as conn:
        return {r[0] for r in conn.execute("SELECT xmin::text FROM worker_messages WHERE message_id = %s::uuid",
                                           [message_id])}


def test_a_retry_in_a_batch_requeues_its_consumed_row_and_a_plain_duplicate_does_not(database_url: str) -> None:
    broker, queue = _broker(database_url), _queue()
    act = _actor(broker, queue, lambda: None)
    first, second = act.message(), act.message()
    broker.enqueue_many([(first, None), (second, None)])
    consumer = broker.consume(queue, prefetch=2, timeout=1000)
    try:
        claimed = [next(consumer), next(consumer)]
        assert {m.message_id for m in claimed if m is not None} == {first.message_id, second.message_id}
        retry = first.copy(options={**first.options, "retries": 1})
        broker.enqueue_many([(retry, 50), (second, None)])
        by_id = {str(r["message_id"]): r for r in _rows(database_url, queue)}
        assert (by_id[first.message_id]["state"], by_id[first.message_id]["retries"]) == ("queued", 1)
        assert (by_id[second.message_id]["state"], by_id[second.message_id]["retries"]) == ("consumed", 0)
    finally:
        consumer.close()
        broker.close()

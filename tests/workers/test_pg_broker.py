"""PostgresBroker through real dramatiq Workers on real PostgreSQL (plus one RabbitMQ run via make_broker)."""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import quote

import dramatiq
import psycopg
import pytest
from dramatiq import Worker
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.brokers.redis import RedisBroker
from dramatiq.brokers.stub import StubBroker
from dramatiq.common import dq_name, xq_name
from dramatiq.errors import ConnectionClosed
from dramatiq.message import Message
from psycopg.conninfo import make_conninfo

from tests.workers.harness import require_rabbitmq
from workers.broker import configure_broker, make_broker
from workers.pg_broker import PostgresBroker
from workers.pg_broker_consumer import PgMessageProxy

RABBIT_URL = "amqp://guest:guest@127.0.0.1:5672/"
JOIN_MS = 15_000


def _queue() -> str:
    return f"t_{uuid.uuid4().hex[:12]}"


def _broker(url: str, **kw: Any) -> PostgresBroker:
    kw.setdefault("poll_interval", 0.2)
    return PostgresBroker(url, **kw)


def _actor(broker: dramatiq.Broker, queue: str, fn: Callable[..., Any], **options: Any) -> dramatiq.Actor[Any, Any]:
    return dramatiq.actor(broker=broker, queue_name=queue, actor_name=f"{queue}_actor", **options)(fn)


@contextmanager
def _running(broker: dramatiq.Broker, threads: int = 2) -> Iterator[Worker]:
    worker = Worker(broker, worker_threads=threads, worker_timeout=100)
    worker.start()
    try:
        yield worker
    finally:
        worker.stop()
        broker.close()


def _rows(url: str, queue: str) -> list[dict[str, Any]]:
    with psycopg.connect(url) as conn, conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        cur.execute("SELECT * FROM worker_messages WHERE queue_name = %s ORDER BY id", [queue])
        return cur.fetchall()


def test_messages_are_processed_exactly_once(database_url: str) -> None:
    broker, queue, seen = _broker(database_url), _queue(), Counter[int]()
    act = _actor(broker, queue, lambda n: seen.update([n]))
    with _running(broker):
        for n in range(10):
            act.send(n)
        broker.join(queue, timeout=JOIN_MS)
    assert seen == Counter(range(10))
    rows = _rows(database_url, queue)
    assert [r["state"] for r in rows] == ["done"] * 10
    assert all(r["attempts"] == 1 and r["lease_expires_at"] is None for r in rows)


def test_same_message_id_enqueued_twice_is_stored_and_processed_once(database_url: str) -> None:
    broker, queue, seen = _broker(database_url), _queue(), Counter[int]()
    act = _actor(broker, queue, lambda n: seen.update([n]))
    message = act.message(7)
    broker.enqueue(message)
    broker.enqueue(message)
    assert len(_rows(database_url, queue)) == 1
    with _running(broker):
        broker.join(queue, timeout=JOIN_MS)
        broker.enqueue(message)  # a late duplicate after completion (the relay replaying an event)
        time.sleep(0.5)
        broker.join(queue, timeout=JOIN_MS)
    assert seen == Counter({7: 1})
    assert [(r["state"], r["message_id"]) for r in _rows(database_url, queue)] == [
        ("done", uuid.UUID(message.message_id))
    ]


def test_delayed_message_runs_after_its_eta_and_not_before(database_url: str) -> None:
    broker, queue, done_at = _broker(database_url), _queue(), list[float]()
    act = _actor(broker, queue, lambda: done_at.append(time.monotonic()))
    with _running(broker):
        start = time.monotonic()
        sent = act.send_with_options(delay=1500)
        time.sleep(0.9)
        assert done_at == [], "delayed message ran before its eta"
        broker.join(queue, timeout=JOIN_MS)
    assert len(done_at) == 1 and done_at[0] - start >= 1.5
    assert "eta" in sent.options  # like other brokers, the returned copy says when it is due
    assert not Message.decode(bytes(_rows(database_url, queue)[0]["message"])).options.get("eta")


def test_a_delayed_enqueue_leaves_the_message_it_was_given_as_it_was(database_url: str) -> None:
    broker, queue = _broker(database_url), _queue()
    message = _actor(broker, queue, lambda: None).message_with_options(retries=2)
    before = dict(message.options)
    try:
        sent = broker.enqueue(message, delay=60_000)
    finally:
        broker.close()
    assert sent is not message and sent.options.get("eta") and sent.options["retries"] == 2
    assert message.options == before  # the eta went on the copy only
    stored = Message.decode(bytes(_rows(database_url, queue)[0]["message"]))
    assert stored.options == before and stored.message_id == message.message_id


def test_failing_actor_is_retried_with_backoff_then_succeeds(database_url: str) -> None:
    broker, queue, calls = _broker(database_url), _queue(), list[int]()

    def flaky() -> None:
        calls.append(1)
        if len(calls) < 3:
            raise RuntimeError("transient")

    act = _actor(broker, queue, flaky, max_retries=5, min_backoff=50, max_backoff=200)
    with _running(broker):
        act.send()
        broker.join(queue, timeout=JOIN_MS)
    assert len(calls) == 3
    [row] = _rows(database_url, queue)
    assert (row["state"], row["retries"], row["attempts"]) == ("done", 2, 3)


def test_message_past_max_retries_is_dead_lettered_not_lost(database_url: str) -> None:
    broker, queue, calls = _broker(database_url), _queue(), list[int]()

    def broken() -> None:
        calls.append(1)
        raise RuntimeError("boom")

    act = _actor(broker, queue, broken, max_retries=1, min_backoff=50, max_backoff=100)
    with _running(broker):
        act.send()
        broker.join(queue, timeout=JOIN_MS)
        time.sleep(0.3)  # a wrongly re-queued message would run a third time here
    assert len(calls) == 2
    [row] = _rows(database_url, queue)
    assert row["state"] == "rejected" and row["lease_expires_at"] is None
    assert "boom" in Message.decode(bytes(row["message"])).options["traceback"]


def test_expired_lease_of_a_dead_consumer_is_reclaimed_and_its_late_settle_is_fenced(database_url: str) -> None:
    queue, seen = _queue(), Counter[int]()
    dead = _broker(database_url, lease_seconds=1)
    _actor(dead, queue, lambda n: None).send(1)
    consumer = dead.consume(queue, prefetch=1, timeout=200)
    claimed = next(m for m in consumer if m is not None)
    assert isinstance(claimed, PgMessageProxy)
    consumer.close()  # the "process" dies holding the message: no ack, no requeue
    assert _rows(database_url, queue)[0]["state"] == "consumed"

    live = _broker(database_url, lease_seconds=1)
    _actor(live, queue, lambda n: seen.update([n]))
    with _running(live):
        live.join(queue, timeout=JOIN_MS)
    assert seen == Counter({1: 1})
    consumer.nack(claimed)  # the stale holder wakes up: its settle must not touch the re-claimed row
    dead.close()
    [row] = _rows(database_url, queue)
    assert (row["state"], row["attempts"]) == ("done", 2)


def test_lease_is_renewed_while_a_slow_message_runs(database_url: str) -> None:
    broker, queue, calls = _broker(database_url, lease_seconds=2), _queue(), list[int]()

    def slow() -> None:
        calls.append(1)
        time.sleep(5)  # 2.5 leases: only renewal keeps the process's own consumer from reclaiming it

    act = _actor(broker, queue, slow, time_limit=10_000)
    with _running(broker):
        act.send()
        broker.join(queue, timeout=JOIN_MS)
    assert len(calls) == 1
    assert _rows(database_url, queue)[0]["attempts"] == 1


def test_two_workers_never_process_the_same_message(database_url: str) -> None:
    queue, n = _queue(), 200
    seen, by_worker, lock = Counter[int](), Counter[str](), threading.Lock()

    def record(tag: str) -> Callable[[int], None]:
        def handle(i: int) -> None:
            time.sleep(0.002)
            with lock:
                seen[i] += 1
                by_worker[tag] += 1

        return handle

    a, b = _broker(database_url), _broker(database_url)
    act = _actor(a, queue, record("a"))
    _actor(b, queue, record("b"))
    with _running(a), _running(b):
        for i in range(n):
            act.send(i)
        a.join(queue, timeout=JOIN_MS)
    assert len(seen) == n and set(seen.values()) == {1}
    assert by_worker["a"] > 0 and by_worker["b"] > 0 and sum(by_worker.values()) == n


def test_consumer_claims_at_most_prefetch_and_gives_back_unhanded_claims_on_close(database_url: str) -> None:
    broker, queue = _broker(database_url), _queue()
    act = _actor(broker, queue, lambda n: None)
    for n in range(6):
        act.send(n)
    consumer = broker.consume(queue, prefetch=3, timeout=100)
    first = next(consumer)
    assert first is not None
    assert Counter(r["state"] for r in _rows(database_url, queue)) == Counter(consumed=3, queued=3)
    assert next(consumer) is not None and next(consumer) is not None
    assert next(consumer) is None  # prefetch is full until something is settled
    consumer.ack(first)
    assert next(consumer) is not None
    consumer.close()  # three handed out and unsettled; nothing was left buffered
    assert Counter(r["state"] for r in _rows(database_url, queue)) == Counter(consumed=3, done=1, queued=2)

    again = broker.consume(queue, prefetch=2, timeout=100)
    assert next(again) is not None
    again.close()  # one handed out, one only prefetched: the prefetched one goes back now, not at lease expiry
    broker.close()
    assert Counter(r["state"] for r in _rows(database_url, queue)) == Counter(consumed=4, done=1, queued=1)


def test_lost_connections_surface_as_dramatiq_connection_errors(database_url: str) -> None:
    queue = _queue()
    # A key=value DSN with an application_name of its own, so only this broker's sessions are killed.
    broker = _broker(make_conninfo(database_url, application_name=queue))
    act = _actor(broker, queue, lambda: None)
    consumer = broker.consume(queue, prefetch=1, timeout=100)
    act.send()  # leaves one idle pool connection behind
    with psycopg.connect(database_url, autocommit=True) as admin:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND application_name = %s",
            [queue],
        )
    with pytest.raises(ConnectionClosed):
        next(consumer)
    with pytest.raises(ConnectionClosed):
        act.send()  # the pool's dead connection is discarded ...
    act.send()  # ... so the next enqueue reconnects
    consumer.close()
    broker.close()
    assert len(_rows(database_url, queue)) == 2


def test_unix_socket_dsn_works(database_url: str) -> None:
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT current_setting('unix_socket_directories'), current_setting('port'), current_database(),"
            " current_user"
        ).fetchone()
    assert row is not None
    dirs, port, db, user = row
    if not dirs:
        pytest.skip("the test server listens on no unix socket")
    url = f"postgresql://{quote(user)}@/{quote(db)}?host={quote(dirs.split(',')[0].strip())}&port={port}"
    broker, queue, seen = make_broker(url), _queue(), Counter[int]()
    assert isinstance(broker, PostgresBroker)
    act = _actor(broker, queue, lambda n: seen.update([n]))
    with _running(broker):
        act.send(3)
        broker.join(queue, timeout=JOIN_MS)
    assert seen == Counter({3: 1})


def test_same_actor_runs_through_rabbitmq_via_make_broker() -> None:
    broker, queue, seen = make_broker(require_rabbitmq()), _queue(), Counter[int]()
    assert isinstance(broker, RabbitmqBroker)
    act = _actor(broker, queue, lambda n: seen.update([n]))
    try:
        with _running(broker):
            for n in range(3):
                act.send(n)
            broker.join(queue, min_successes=2, idle_time=50, timeout=JOIN_MS)
        assert seen == Counter(range(3))
    finally:
        channel = make_broker(RABBIT_URL)
        assert isinstance(channel, RabbitmqBroker)
        for name in (queue, dq_name(queue), xq_name(queue)):
            channel.channel.queue_delete(name)
        channel.close()


def test_make_broker_maps_schemes_and_rejects_unknown_ones() -> None:
    assert isinstance(make_broker("postgres://u@localhost/db"), PostgresBroker)
    assert isinstance(make_broker("postgresql://u@/db?host=/tmp"), PostgresBroker)
    assert isinstance(make_broker("amqps://u:p@rabbit/"), RabbitmqBroker)
    assert isinstance(make_broker("redis://localhost:6379/0"), RedisBroker)
    assert isinstance(make_broker("rediss://localhost:6379/0"), RedisBroker)
    assert isinstance(make_broker("stub://"), StubBroker)
    with pytest.raises(ValueError, match="unsupported broker URL scheme 'kafka'") as err:
        make_broker("kafka://user:secret@host:9092")
    assert "secret" not in str(err.value)


def test_configure_broker_sets_the_global_broker() -> None:
    previous = dramatiq.broker.global_broker
    try:
        broker = configure_broker("stub://")
        assert dramatiq.get_broker() is broker
        assert any(type(m).__name__ == "Retries" for m in broker.middleware)
        assert not any("Prometheus" in type(m).__name__ for m in broker.middleware)
    finally:
        dramatiq.broker.global_broker = previous


def test_cleanup_keeps_up_with_a_busy_queue(database_url: str) -> None:
    """Finished rows past retention go in batches until none is left (within a per-tick cap), not 1,000 a minute."""
    broker, queue = _broker(database_url, done_retention_seconds=60), _queue()
    _actor(broker, queue, lambda: None)  # declares the queue
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO worker_messages (message_id, queue_name, actor_name, state, message, updated_at)"
            " SELECT gen_random_uuid(), %s, 'a', 'done', '\\x00', now() - make_interval(secs => %s)"
            " FROM generate_series(1, %s)", [queue, 3600, 5_000])
        conn.execute(
            "INSERT INTO worker_messages (message_id, queue_name, actor_name, state, message)"
            " SELECT gen_random_uuid(), %s, 'a', 'done', '\\x00' FROM generate_series(1, 10)", [queue])
    consumer = broker.consume(queue, prefetch=1, timeout=100)
    try:
        assert consumer.clean_up(60) == 5_000  # type: ignore[attr-defined]
    finally:
        consumer.close()
        broker.close()
    assert Counter(r["state"] for r in _rows(database_url, queue)) == Counter(done=10)  # recent ones stay


def test_a_missing_rabbitmq_skips_locally_but_fails_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.workers import harness

    monkeypatch.setattr(harness, "_reachable", lambda host, port: False)
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception):
        harness.require_rabbitmq()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true requires it"):
        harness.require_rabbitmq()
    with pytest.raises(pytest.fail.Exception):
        harness.broker_url_for("rabbitmq", "postgresql://unused")

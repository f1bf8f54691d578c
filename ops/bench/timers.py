"""Phase 5: lease timers. The relay turns endpoint heartbeats into delayed messages on the PostgreSQL broker, and
one worker process drains the timers that come due. Each must keep up with the heartbeat rate."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import asyncpg
import dramatiq
from dramatiq.brokers.stub import StubBroker

from app.db import create_pool
from app.settings import Settings
from app.store.event_store import EventStore
from app.store.types import START, RecordedEvent
from ops.bench.catchup import bulk_append
from ops.bench.db import reset, settle
from ops.bench.heartbeats import BEAT_SECONDS, LEASE_SECONDS
from ops.bench.store import Timed
from ops.bench.workload import agent_endpoint
from projections.relay import RelayProjection
from workers import runtime
from workers.broker import make_broker

dramatiq.set_broker(StubBroker())  # actors bind at import; never let dramatiq pick a default broker here
from workers.runtime_leases import expire_runtime_endpoint_lease as lease_actor  # noqa: E402

THREADS = 8  # one worker process, dramatiq's default thread count
POLL_SECONDS = 0.02  # how often the drain is checked; bounds the timing error of a drain
DRAIN_WITHIN = 120.0
EXPIRED = "runtime:RuntimeEndpoint.Expired"
_UNDONE = "SELECT count(*) FROM worker_messages WHERE state <> 'done'"
T = TypeVar("T")


@dataclass
class TimersResult:
    enqueue: Timed  # baseline: broker.enqueue of the same timer messages, built beforehand
    relay: Timed  # RelayProjection.apply_many over the read-back events
    relay_delayed: int  # of the baseline's messages (one per relayed event) and the relay's (one per stream: a
    # heartbeat's timer supersedes the endpoint's previous one), how many were still delayed when both had run
    renewed: Timed  # worker: timers whose endpoint a later heartbeat renewed (one index lookup each)
    expiring: Timed  # worker: timers whose lease really ran out (load the endpoint, append Expired)
    expired_due: int  # Expired events on the expiring streams afterwards (expected: one each)
    expired_renewed: int  # Expired events on the renewed streams afterwards (expected: none)
    troubled: int  # timer messages retried or dead-lettered
    seeded: int  # events appended during setup
    batch: int  # events per relay call (the runner's batch size)
    setup_seconds: float


def _beats(last: datetime, count: int) -> list[datetime]:
    """`count` heartbeat times BEAT_SECONDS apart, the last at `last`."""
    return [last - timedelta(seconds=BEAT_SECONDS * (count - 1 - k)) for k in range(count)]


def _chunks(items: Sequence[T], size: int) -> list[list[T]]:
    return [list(items[i:i + size]) for i in range(0, len(items), size)]


async def _read_back(store: EventStore, expected: int, batch: int, within: float = 30.0) -> list[RecordedEvent]:
    """The whole log through EventStore.read_all, as the runner reads it. One pass can stop short: readers see
    only events older than every transaction still open on the server (a shared server has others)."""
    events: list[RecordedEvent] = []
    after = START
    deadline = time.monotonic() + within
    while len(events) < expected:
        got = await store.read_all(after, batch)
        if got:
            events += got
            after = got[-1].log_position
        elif time.monotonic() > deadline:
            raise TimeoutError(f"read back {len(events):,} of {expected:,} events within {within:.0f} s")
        else:
            await asyncio.sleep(0.05)
    return events


def _timer(event: RecordedEvent) -> dramatiq.Message[Any]:
    """The message the relay sends for a leased endpoint event, built directly (with a random message id)."""
    return dramatiq.Message(
        queue_name="runtime", actor_name=lease_actor.actor_name, args=(), options={},
        kwargs={"endpoint_id": str(event.stream_id), "version": event.version, "event_id": str(event.event_id)},
    )


async def _enqueue(broker: dramatiq.Broker, messages: list[dramatiq.Message[Any]], delay_ms: int) -> Timed:
    """Baseline: the broker's own enqueue in a plain loop on one thread, nothing else."""
    def loop() -> float:
        started = time.perf_counter()
        for message in messages:
            broker.enqueue(message, delay=delay_ms)
        return time.perf_counter() - started

    return Timed(len(messages), await asyncio.to_thread(loop))


async def _relay(relay: RelayProjection, conn: asyncpg.Connection, batches: list[list[RecordedEvent]]) -> Timed:
    """RelayProjection.apply_many per read batch, as ProjectionRunner hands them over; only the relay is timed."""
    seconds = 0.0
    for batch in batches:
        started = time.perf_counter()
        await relay.apply_many(conn, batch, {})
        seconds += time.perf_counter() - started
    return Timed(sum(len(b) for b in batches), seconds)


@contextmanager
def _worker(dsn: str) -> Iterator[tuple[dramatiq.Broker, dramatiq.Worker]]:
    """The lease actor bound to a fresh PostgreSQL broker with the worker process's middleware, and one worker of
    THREADS threads, not yet started (as tests/workers/harness.py `worker_on` binds it); stops both afterwards."""
    broker = make_broker(dsn)
    runtime.add_worker_middleware(broker)
    previous = lease_actor.broker
    lease_actor.broker = broker
    broker.declare_actor(lease_actor)
    runtime.use_database(dsn)  # also a fresh container and lock for this worker's event loop
    worker = dramatiq.Worker(broker, worker_threads=THREADS, worker_timeout=100)
    try:
        yield broker, worker
    finally:
        worker.stop()
        broker.close()
        lease_actor.broker = previous
        runtime.use_database(None)


async def _drain(dsn: str, conn: asyncpg.Connection, events: list[RecordedEvent], batch: int) -> Timed:
    """Relay the due timers of `events` (not timed), then start one worker and time it until none is left undone.
    The worker's start-up (threads, broker connections, the container's pool) is inside the timing."""
    with _worker(dsn) as (broker, worker):
        relay = RelayProjection(broker, same_database=True)
        for chunk in _chunks(events, batch):
            await relay.apply_many(conn, chunk, {})
        queued = await conn.fetchval(_UNDONE)
        if queued != len(events):
            raise RuntimeError(f"{queued:,} timer messages pending before the worker started, not {len(events):,}")
        await conn.execute("VACUUM ANALYZE worker_messages")
        await settle(conn)
        started = time.perf_counter()
        worker.start()
        deadline = time.monotonic() + DRAIN_WITHIN
        while await conn.fetchval(_UNDONE):
            if time.monotonic() > deadline:
                raise TimeoutError(f"the worker did not drain {len(events):,} timers within {DRAIN_WITHIN:.0f} s")
            await asyncio.sleep(POLL_SECONDS)
        return Timed(len(events), time.perf_counter() - started)


async def _expired(conn: asyncpg.Connection, streams: set[uuid.UUID]) -> int:
    n: int = await conn.fetchval(
        "SELECT count(*) FROM events WHERE type = $1 AND stream_id = ANY($2::uuid[])", EXPIRED, list(streams))
    return n


async def run(dsn: str, relayed: int, renewed: int, expiring: int) -> TimersResult:
    """Relay `relayed` heartbeat events (rounded up to even: 2 per stream); drain `renewed` timers of endpoints a
    later heartbeat renewed, then `expiring` timers whose lease ran out."""
    await reset(dsn)
    settings = Settings()
    batch = settings.projection_batch_size
    pool = await create_pool(dsn, settings, min_size=2, max_size=4)
    try:
        store = EventStore(pool)
        started = time.perf_counter()
        now = datetime.now(UTC) - timedelta(seconds=1)
        # Steady state at `now`: a renewed agent beat at now-60 s (lease ends now: its timer is due) and again at
        # now-30 s (version 2: the timer finds the version moved on). An expiring agent beat at now-90 s and now-60 s,
        # then stopped: its version-2 timer is due and its lease really over. The relay streams beat at now-30 s and
        # now, so their timers are due 30-60 s after `now`, well after the relay runs.
        plan = (("relay", (relayed + 1) // 2, now), ("renewed", renewed, now - timedelta(seconds=BEAT_SECONDS)),
                ("expiring", expiring, now - timedelta(seconds=2 * BEAT_SECONDS)))
        streams: dict[str, set[uuid.UUID]] = {}
        histories = []
        for kind, count, last in plan:
            made = [agent_endpoint(_beats(last, 2), LEASE_SECONDS, n) for n in range(count)]
            streams[kind] = {h[0].stream_id for h in made}
            histories += made
        seeded = await bulk_append(store, histories)
        log = await _read_back(store, seeded, batch)
        relay_events = [e for e in log if e.stream_id in streams["relay"]]
        renewed_events = [e for e in log if e.stream_id in streams["renewed"] and e.version == 1]
        expiring_events = [e for e in log if e.stream_id in streams["expiring"] and e.version == 2]
        async with pool.acquire() as conn:
            await conn.execute("VACUUM ANALYZE events")  # a long-lived log has statistics and a visibility map
            await settle(conn)
            setup = time.perf_counter() - started

            # Relay vs the broker's own enqueue of the same timers, interleaved A B B A against drift.
            broker = make_broker(dsn)
            try:
                relay = RelayProjection(broker, same_database=True)
                delay_ms = LEASE_SECONDS * 1000
                await _enqueue(broker, [_timer(e) for e in relay_events[:50]], delay_ms)  # connect, warm up
                await conn.execute("DELETE FROM worker_messages")
                messages = [_timer(e) for e in relay_events]
                half = len(relay_events) // 2
                relay_halves = (_chunks(relay_events[:half], batch), _chunks(relay_events[half:], batch))
                a1 = await _enqueue(broker, messages[:half], delay_ms)
                r1 = await _relay(relay, conn, relay_halves[0])
                r2 = await _relay(relay, conn, relay_halves[1])
                a2 = await _enqueue(broker, messages[half:], delay_ms)
            finally:
                broker.close()
            delayed = await conn.fetchval("SELECT count(*) FROM worker_messages WHERE eta > now()")
            # None of those is due for a while; the drains below count every undone row, so clear them out.
            await conn.execute("DELETE FROM worker_messages")

            drained = await _drain(dsn, conn, renewed_events, batch)
            expired = await _drain(dsn, conn, expiring_events, batch)
            troubled = await conn.fetchval(
                "SELECT count(*) FROM worker_messages WHERE state = 'rejected' OR retries > 0 OR attempts > 1")
            expired_due = await _expired(conn, streams["expiring"])
            expired_renewed = await _expired(conn, streams["renewed"])
    finally:
        await pool.close()
    return TimersResult(
        enqueue=Timed(a1.events + a2.events, a1.seconds + a2.seconds),
        relay=Timed(r1.events + r2.events, r1.seconds + r2.seconds),
        relay_delayed=delayed, renewed=drained, expiring=expired, expired_due=expired_due,
        expired_renewed=expired_renewed, troubled=troubled, seeded=seeded, batch=batch,
        setup_seconds=setup,
    )

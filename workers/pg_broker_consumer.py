"""Consumer side of PostgresBroker: claims, leases, LISTEN/NOTIFY wake-ups, and the shared connection helpers."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any, Protocol

import psycopg
from dramatiq.broker import Consumer, MessageProxy
from dramatiq.errors import BrokerConnectionError, ConnectionClosed, ConnectionFailed, DecodeError
from dramatiq.logging import get_logger
from dramatiq.message import Message
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from workers import pg_broker_sql as sql

#: One NOTIFY channel for every queue; the payload is the queue name (channel names are capped at 63 bytes).
CHANNEL = "worker_messages"

# Applied only where the URL does not say otherwise; keepalives catch a silently dropped TCP peer
# (libpq ignores them on unix sockets).
_CONNINFO_DEFAULTS: dict[str, Any] = {
    "connect_timeout": 10,
    "application_name": "dramatiq-pg",
    "keepalives": 1,
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,
}

# How often a consumer deletes finished rows past their retention.
_CLEANUP_EVERY_S = 10.0
# Up to 40,000 rows per tick per consumer: 4,000 finished messages/s, ten times the heartbeat timers' rate.
_CLEANUP_BATCH, _CLEANUP_MAX_BATCHES = 2000, 20
# Floor for idle waits so a queue whose ready rows are momentarily locked by a peer's claim is not spun on.
_MIN_WAIT_S = 0.02
# The longest gap between scans for expired claims: with the default 10 s lease it is lease/4 = 2.5 s.
_MAX_RECLAIM_EVERY_S = 5.0
# After a failed renewal (say a lock timeout), try again this soon rather than a third of a lease later.
_RENEW_RETRY_S = 0.25


def build_conninfo(url: str) -> str:
    """The URL (any libpq form, incl. unix-socket `?host=/dir`) plus our defaults for what it leaves unset."""
    given = conninfo_to_dict(url)
    return make_conninfo(url, **{k: v for k, v in _CONNINFO_DEFAULTS.items() if k not in given})


def without_flush_wait(conninfo: str) -> str:
    """`conninfo` for sessions whose commits do not wait for the WAL flush (synchronous_commit=off)."""
    given = conninfo_to_dict(conninfo).get("options")
    return make_conninfo(conninfo, options=f"{given or ''} -c synchronous_commit=off".strip())


def connect(conninfo: str) -> psycopg.Connection[Any]:
    try:
        return psycopg.connect(conninfo, autocommit=True)
    except psycopg.Error as e:
        raise ConnectionFailed(e) from None


@contextmanager
def translate_errors() -> Iterator[None]:
    """Surface lost connections as dramatiq's ConnectionClosed so workers retry/restart like on other brokers."""
    try:
        yield
    except (psycopg.OperationalError, psycopg.InterfaceError) as e:
        raise ConnectionClosed(e) from None


class LeaseBook:
    """Messages this process holds, by row: a restarted consumer keeps renewing leases of ones already handed out."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rows: dict[int, tuple[str, int]] = {}

    def track(self, queue_name: str, row_id: int, attempts: int) -> None:
        with self._lock:
            self._rows[row_id] = (queue_name, attempts)

    def untrack(self, row_id: int) -> None:
        with self._lock:
            self._rows.pop(row_id, None)

    def held(self, queue_name: str) -> tuple[list[int], list[int]]:
        with self._lock:
            pairs = [(rid, att) for rid, (q, att) in self._rows.items() if q == queue_name]
        return [p[0] for p in pairs], [p[1] for p in pairs]


class PgMessageProxy(MessageProxy):
    """A claimed message plus the (row id, attempts) fence that settles it."""

    def __init__(self, message: Message[Any], row_id: int, attempts: int, owner: PostgresConsumer) -> None:
        super().__init__(message)
        self.row_id = row_id
        self.attempts = attempts
        self.owner = owner
        # Set when the retry of this message could not be stored (the database was away): ms of back-off.
        self.retry_delay: int | None = None


class _PooledConnections(Protocol):
    def connection(self) -> AbstractContextManager[psycopg.Connection[Any]]: ...


class BrokerSide(Protocol):
    """What a consumer needs of its PostgresBroker (typed structurally, so this module never imports it)."""

    conninfo: str
    lease_seconds: float
    poll_interval: float
    done_retention_seconds: float | None
    leases: LeaseBook

    @property
    def pool(self) -> _PooledConnections: ...

    @property
    def ack_pool(self) -> _PooledConnections: ...

    @property
    def keeps_done_rows(self) -> bool: ...

    def enqueue(self, message: Message[Any], *, delay: int | None = None) -> Message[Any]: ...


class PostgresConsumer(Consumer):
    """Iterates one queue; not thread-safe except ack/nack/requeue, which dramatiq calls from worker threads."""

    def __init__(self, broker: BrokerSide, queue_name: str, prefetch: int, timeout: int) -> None:
        self.logger = get_logger(__name__, type(self))
        self.broker = broker
        self.queue_name = queue_name
        self.prefetch = max(1, prefetch)
        self.timeout = timeout
        self._buffer: deque[PgMessageProxy] = deque()
        self._outstanding: set[int] = set()
        self._lock = threading.Lock()
        self._freed = threading.Event()
        lease = broker.lease_seconds
        now = time.monotonic()
        self._renew_every = lease / 3
        # Frequent enough that a dead peer's claims run again soon after they expire; one index scan each.
        self._reclaim_every = max(_MIN_WAIT_S, min(lease / 4, _MAX_RECLAIM_EVERY_S))
        # Renew at once: a consumer restarted after a connection error may hold messages whose lease
        # went unrenewed while it was down.
        self._next_renew = now
        self._next_reclaim = now  # reclaim at start: a restarted worker recovers what its predecessor held
        self._next_cleanup = now + _CLEANUP_EVERY_S
        # A dedicated connection: it LISTENs, and psycopg queues notifies that arrive during our own queries.
        self._conn = connect(broker.conninfo)
        with translate_errors():
            self._conn.execute(f"LISTEN {CHANNEL}")

    def __next__(self) -> PgMessageProxy | None:
        if self._buffer:
            return self._buffer.popleft()
        deadline = time.monotonic() + self.timeout / 1000
        with translate_errors():
            while True:
                self._maintain()
                self._freed.clear()
                room = self.prefetch - self._held()
                wait = self.broker.poll_interval
                if room > 0:
                    due_in = self._claim(room)
                    if self._buffer:
                        return self._buffer.popleft()
                    if due_in is not None:
                        wait = min(wait, max(0.0, due_in))
                now = time.monotonic()
                remaining = deadline - now
                if remaining <= 0:
                    return None
                # Never sleep past the next renewal or reclaim scan, however long the poll interval: a
                # long actor's lease is kept alive only by this loop.
                wait = min(wait, self._next_renew - now, self._next_reclaim - now)
                wait = max(_MIN_WAIT_S, min(wait, remaining))
                if room > 0:
                    self._wait_for_notify(wait)
                else:
                    self._freed.wait(wait)  # full prefetch: wake when a worker thread settles one

    def ack(self, message: MessageProxy) -> None:
        proxy = _ours(message)
        if proxy.retry_delay is not None:
            # Its retry was never stored: store it now (a connection error here makes dramatiq retry this ack
            # until the database is back) rather than settle the row as done and lose the message.
            self.logger.warning("Storing the retry of message %r that failed to enqueue.", proxy.message_id)
            self.broker.enqueue(proxy._message, delay=proxy.retry_delay)
            proxy.retry_delay = None
            proxy.owner.forget(proxy)
            return
        statement = sql.ACK if self.broker.keeps_done_rows else sql.ACK_DELETE
        # Without waiting for the WAL flush: an ack is derived state. Lost in a server crash (the last few hundred
        # ms of such commits), the row is consumed again with a lease nobody renews, so it runs again once the
        # lease expires, and the actors are idempotent (they go on from the recorded stream: a settled task does
        # nothing, a finished run is never called again). An enqueue or a claim still waits for its flush.
        with self.broker.ack_pool.connection() as conn:
            conn.execute(statement, {"id": proxy.row_id, "attempts": proxy.attempts})
        proxy.owner.forget(proxy)

    def nack(self, message: MessageProxy) -> None:
        proxy = _ours(message)
        # Store the message as it is now: Retries put the last traceback into its options.
        params = {"id": proxy.row_id, "attempts": proxy.attempts, "message": proxy.encode()}
        with self.broker.pool.connection() as conn:
            conn.execute(sql.NACK, params)
        proxy.owner.forget(proxy)

    def requeue(self, messages: Iterable[MessageProxy]) -> None:
        proxies = [_ours(m) for m in messages]
        if not proxies:
            return
        self.logger.debug("Re-enqueueing %d message(s) on queue %r.", len(proxies), self.queue_name)
        params = {
            "ids": [p.row_id for p in proxies],
            "attempts": [p.attempts for p in proxies],
            "channel": CHANNEL,
            "queue": self.queue_name,
        }
        with self.broker.pool.connection() as conn:
            conn.execute(sql.REQUEUE, params)
        for p in proxies:
            p.owner.forget(p)

    def close(self) -> None:
        try:
            # Claimed but never handed to dramatiq: give them back now rather than after the lease.
            if self._buffer:
                self.requeue(list(self._buffer))
                self._buffer.clear()
        except BrokerConnectionError:
            self.logger.warning("Could not requeue prefetched messages; they return when their lease expires.")
        finally:
            self._conn.close()

    def forget(self, proxy: PgMessageProxy) -> None:
        with self._lock:
            self._outstanding.discard(proxy.row_id)
        self.broker.leases.untrack(proxy.row_id)
        self._freed.set()

    def _held(self) -> int:
        with self._lock:
            return len(self._outstanding)

    def _claim(self, n: int) -> float | None:
        """Claims up to `n` ready messages into the buffer. Returns in how many seconds the next queued message
        is due: 0 when some were claimed (more may be ready), None when none is queued."""
        params = {"queue": self.queue_name, "n": n, "lease": self.broker.lease_seconds}
        rows = self._conn.execute(sql.CLAIM, params).fetchall()
        due_in = next((row[4] for row in rows if row[0] is None), None)
        claimed = [row for row in rows if row[0] is not None]
        for row_id, attempts, _eta, data, _ in sorted(claimed, key=lambda r: (r[2], r[0])):
            try:
                message = Message.decode(bytes(data))
            except DecodeError:
                self.logger.exception("Rejecting undecodable message row %d on %r.", row_id, self.queue_name)
                self._conn.execute(sql.NACK, {"id": row_id, "attempts": attempts, "message": bytes(data)})
                continue
            with self._lock:
                self._outstanding.add(row_id)
            self.broker.leases.track(self.queue_name, row_id, attempts)
            self._buffer.append(PgMessageProxy(message, row_id, attempts, self))
        if claimed:
            return 0.0
        return None if due_in is None else float(due_in)

    def _wait_for_notify(self, seconds: float) -> None:
        notifies = self._conn.notifies(timeout=seconds)
        try:
            for notify in notifies:
                if notify.payload == self.queue_name:
                    return
        finally:
            notifies.close()  # ends psycopg's listening section now, so later notifies go to its backlog

    def _maintain(self) -> None:
        now = time.monotonic()
        if now >= self._next_renew:
            self._next_renew = now + self._renew_every
            if not self._tolerating("renew leases", self._renew):
                self._next_renew = now + _RENEW_RETRY_S  # well within the lease
        if now >= self._next_reclaim:
            self._next_reclaim = now + self._reclaim_every
            self._tolerating("reclaim expired leases", self._reclaim)
        keep = self.broker.done_retention_seconds
        if now >= self._next_cleanup and keep:
            self._next_cleanup = now + _CLEANUP_EVERY_S
            self._tolerating("clean up finished rows", lambda: self.clean_up(keep))

    def _tolerating(self, what: str, step: Callable[[], object]) -> bool:
        """Run one maintenance step; a failure that leaves the session usable (a lock or statement
        timeout, say) is logged and retried later instead of letting dramatiq tear the consumer down."""
        try:
            step()
            return True
        except psycopg.Error as e:
            if self._conn.broken or self._conn.closed:
                raise  # the connection is gone: dramatiq restarts the consumer, which renews at once
            self.logger.warning("Could not %s on %r (%s); will retry.", what, self.queue_name, e)
            return False

    def _renew(self) -> None:
        ids, attempts = self.broker.leases.held(self.queue_name)
        if not ids:
            return
        params = {"ids": ids, "attempts": attempts, "lease": self.broker.lease_seconds}
        renewed = {row[0] for row in self._conn.execute(sql.RENEW, params).fetchall()}
        still_held = set(self.broker.leases.held(self.queue_name)[0])  # minus those settled meanwhile
        lost = [row_id for row_id in ids if row_id not in renewed and row_id in still_held]
        if lost:
            # The lease ran out and a peer claimed the row again: this holder's fenced settle will match
            # nothing, so stop renewing (and warning about) those rows.
            self.logger.warning("Lost the claim on %d message(s) of %r.", len(lost), self.queue_name)
            for row_id in lost:
                self.broker.leases.untrack(row_id)

    def _reclaim(self) -> None:
        cur = self._conn.execute(sql.RECLAIM, {"queue": self.queue_name})
        if cur.rowcount:
            self.logger.warning("Reclaimed %d message(s) with expired leases on %r.", cur.rowcount, self.queue_name)

    def clean_up(self, keep: float) -> int:
        """Delete finished rows past retention in short batches, up to a cap per tick: a busy queue (lease
        timers run at hundreds per second) must not outgrow a fixed trickle of deletes."""
        deleted = 0
        for _ in range(_CLEANUP_MAX_BATCHES):
            n = self._conn.execute(sql.CLEANUP, {"queue": self.queue_name, "keep": keep}).rowcount
            deleted += n
            if n < _CLEANUP_BATCH:
                break
        return deleted


def _ours(message: MessageProxy) -> PgMessageProxy:
    if not isinstance(message, PgMessageProxy):
        raise TypeError(f"expected a message claimed from PostgresBroker, got {message!r}")
    return message

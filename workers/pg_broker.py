"""A Dramatiq 2.x broker on PostgreSQL (psycopg 3): table worker_messages, SKIP LOCKED claims, leases, NOTIFY."""

from __future__ import annotations

import os
import re
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from typing import Any

import psycopg
from dramatiq.broker import Broker, Consumer
from dramatiq.common import q_name
from dramatiq.errors import BrokerConnectionError, ConnectionFailed, QueueJoinTimeout, QueueNotFound
from dramatiq.message import Message
from dramatiq.middleware import Middleware
from psycopg.pq import TransactionStatus

from workers.pg_broker_consumer import (
    CHANNEL,
    LeaseBook,
    PgMessageProxy,
    PostgresConsumer,
    build_conninfo,
    connect,
    translate_errors,
    without_flush_wait,
)

__all__ = ["PostgresBroker"]

# A re-enqueue of a message id that already has a row is a duplicate and is dropped, except a retry: the
# Retries middleware re-enqueues the message it is processing (same id, options["retries"] bumped), so a
# higher retries count on a consumed row puts that row back in the queue, fenced from the pending ack.
# One statement for a whole batch: rows are inserted in the order given (ORDER BY ord), so ids (the claim's
# tie-break after eta) follow the caller's order as one INSERT per message did; one NOTIFY per woken queue.
_ENQUEUE = """
WITH upsert AS (
    INSERT INTO worker_messages AS w (message_id, queue_name, actor_name, eta, retries, message)
    SELECT m.message_id, m.queue_name, m.actor_name,
           COALESCE(to_timestamp(m.eta_ms / 1000), now() + make_interval(secs => m.delay_s)), m.retries, m.message
    FROM unnest(%(message_id)s::uuid[], %(queue)s::text[], %(actor)s::text[], %(eta_ms)s::float8[],
                %(delay_s)s::float8[], %(retries)s::int[], %(message)s::bytea[])
         WITH ORDINALITY AS m(message_id, queue_name, actor_name, eta_ms, delay_s, retries, message, ord)
    ORDER BY m.ord
    ON CONFLICT (message_id) DO UPDATE
        SET state = 'queued', eta = EXCLUDED.eta, retries = EXCLUDED.retries, message = EXCLUDED.message,
            lease_expires_at = NULL, updated_at = now()
        WHERE w.state = 'consumed' AND EXCLUDED.retries > w.retries
    RETURNING w.queue_name, w.eta <= now() AS ready
)
SELECT pg_notify(%(channel)s, q.queue_name) FROM (SELECT DISTINCT queue_name FROM upsert WHERE ready) AS q
"""
# The same, also deleting the superseded messages still waiting (projections/relay.py SUPERSEDING). A claimed
# one is left alone: the claim's row lock makes the DELETE wait, then find it consumed. A sibling CTE: it runs
# whether or not the outer query reads it, and sees none of the rows this statement inserts.
_ENQUEUE_CANCELLING = _ENQUEUE.replace("WITH upsert AS (", (
    "WITH cancelled AS (DELETE FROM worker_messages WHERE message_id = ANY(%(cancel)s::uuid[]) AND state = 'queued'),"
    " upsert AS ("), 1)
_COLUMNS = ("message_id", "queue", "actor", "eta_ms", "delay_s", "retries", "message")
# The same statements with positional parameters, for a caller on an asyncpg session (enqueue_many_on), numbered
# in this order.
_POSITIONS = {name: i for i, name in enumerate((*_COLUMNS, "channel", "cancel"), 1)}
_ENQUEUE_ON, _ENQUEUE_CANCELLING_ON = (re.sub(r"%\((\w+)\)s", lambda m: f"${_POSITIONS[m.group(1)]}", sql)
                                       for sql in (_ENQUEUE, _ENQUEUE_CANCELLING))
_PENDING = "SELECT count(*) FROM worker_messages WHERE queue_name = %s AND state IN ('queued', 'consumed')"


def _without_repeated_ids(params: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """The messages cut into runs without a repeated message id (one upsert statement cannot touch a row twice):
    one run in the normal case; a repeat starts a new run, so the later copy is judged against the earlier one
    as it would be one statement per message."""
    runs: list[list[dict[str, Any]]] = [[]]
    seen: set[uuid.UUID] = set()
    for p in params:
        if p["message_id"] in seen:
            runs.append([])
            seen.clear()
        runs[-1].append(p)
        seen.add(p["message_id"])
    return runs


class _Pool:
    """A small thread-safe pool of autocommit connections shared by enqueue and the worker threads' acks."""

    def __init__(self, conninfo: str, size: int, timeout: float) -> None:
        self._conninfo = conninfo
        self._timeout = timeout
        self._slots = threading.BoundedSemaphore(size)
        self._lock = threading.Lock()
        self._idle: list[psycopg.Connection[Any]] = []
        self._pid = os.getpid()

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection[Any]]:
        if not self._slots.acquire(timeout=self._timeout):
            raise ConnectionFailed(f"no free connection in the PostgresBroker pool within {self._timeout}s")
        try:
            conn = self._take()
            try:
                with translate_errors():
                    yield conn
            finally:
                self._give_back(conn)
        finally:
            self._slots.release()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    def _take(self) -> psycopg.Connection[Any]:
        with self._lock:
            if self._pid != os.getpid():
                # Forked child: the parent's sockets are not ours to use or close (psycopg skips closing them).
                self._idle, self._pid = [], os.getpid()
            if self._idle:
                return self._idle.pop()
        return connect(self._conninfo)

    def _give_back(self, conn: psycopg.Connection[Any]) -> None:
        healthy = not conn.closed and not conn.broken and conn.info.transaction_status == TransactionStatus.IDLE
        if not healthy:
            conn.close()
            return
        with self._lock:
            self._idle.append(conn)


class PostgresBroker(Broker):
    """Dramatiq broker storing messages in PostgreSQL table worker_messages (created by sql/0050).

    Delays and retry back-off are stored as the row's `eta`, so no `.DQ` delay queues are declared and
    workers never hold delayed messages in memory. A claimed row carries a lease the consumer renews while
    the message is in the process; a dead worker's leases expire and its messages are claimed again.
    Message ids must be UUIDs (dramatiq's default); a second enqueue of a known id is dropped.

    Parameters:
      url: libpq URL, e.g. postgresql://user@host/db or postgresql://user@/db?host=/socket/dir
      lease_seconds: how long a claim survives without renewal (MM_WORKER_CLAIM_LEASE_S). The consumer
        renews its claims every third of it while their actors run, and scans for expired claims every
        quarter of it (at most every 5 s), so a killed worker's messages run again within about
        lease + lease/4 + poll_interval.
      poll_interval: the longest a consumer sleeps between looks when no NOTIFY wakes it.
      pool_size: connections for enqueue and acks (each consumer also holds one of its own).
      done_retention_seconds: how long finished rows stay to dedupe late re-enqueues (None: forever,
        0: delete on ack). Rejected (dead-lettered) rows are always kept. An hour covers a relay that
        re-sends after a crash (seconds); longer would only grow the table (lease timers alone finish
        333/s at 10,000 agents), and actors are idempotent anyway.
    """

    def __init__(
        self,
        url: str,
        *,
        middleware: list[Middleware] | None = None,
        lease_seconds: float = 10.0,
        poll_interval: float = 1.0,
        pool_size: int = 10,
        pool_timeout: float = 30.0,
        done_retention_seconds: float | None = 3600,
    ) -> None:
        super().__init__(middleware=middleware)
        if lease_seconds <= 0 or poll_interval <= 0 or pool_size < 1:
            raise ValueError("lease_seconds and poll_interval must be > 0 and pool_size >= 1")
        self.url = url
        self.conninfo = build_conninfo(url)
        self.lease_seconds = float(lease_seconds)
        self.poll_interval = float(poll_interval)
        self.done_retention_seconds = None if done_retention_seconds is None else float(done_retention_seconds)
        self.queues: set[str] = set()
        self.pool = _Pool(self.conninfo, pool_size, pool_timeout)
        # Acks only: derived state, committed without waiting for the WAL flush (see consumer.ack).
        self.ack_pool = _Pool(without_flush_wait(self.conninfo), pool_size, pool_timeout)
        self.leases = LeaseBook()

    @property
    def keeps_done_rows(self) -> bool:
        return self.done_retention_seconds is None or self.done_retention_seconds > 0

    def consume(self, queue_name: str, prefetch: int = 1, timeout: int = 30000) -> Consumer:
        """A consumer for a declared queue; `timeout` (ms) bounds how long one `next()` idles."""
        if queue_name not in self.queues:
            raise QueueNotFound(queue_name)
        return PostgresConsumer(self, queue_name, prefetch, timeout)

    def declare_queue(self, queue_name: str) -> None:
        if queue_name not in self.queues:
            self.emit_before("declare_queue", queue_name)
            self.queues.add(queue_name)
            self.emit_after("declare_queue", queue_name)

    def enqueue(self, message: Message[Any], *, delay: int | None = None) -> Message[Any]:
        """Store `message` (deduped by message_id), ready now or after `delay` ms; wakes idle consumers."""
        return self.enqueue_many([(message, delay)])[0]

    def enqueue_many(self, messages: list[tuple[Message[Any], int | None]],
                     cancel: Sequence[str] = ()) -> list[Message[Any]]:
        """`enqueue` for several messages in one statement: one round trip and one commit (one WAL flush) for all
        of them, all or none stored. The relay hands over a batch at a time; a commit per message was its whole
        cost under load, and then a statement per message most of what was left. `cancel`: ids of messages this
        batch supersedes, deleted in the same statement if still queued (not yet claimed)."""
        prepared, statements = self._statements(messages, cancel)
        try:
            with self.pool.connection() as conn, conn.transaction() if len(statements) > 1 else nullcontext():
                for cancelling, params in statements:  # one, as a rule: committed on its own (autocommit)
                    conn.execute(_ENQUEUE_CANCELLING if cancelling else _ENQUEUE, params)
        except BrokerConnectionError:
            # The Retries middleware re-enqueues the message it holds, and dramatiq only logs a failure there
            # before it acks: the ack would then settle the row as done and the retry would be lost. Such a
            # message carries its retry to the ack, which stores the retry instead (consumer.ack).
            for message, delay in messages:
                if isinstance(message, PgMessageProxy):
                    message.retry_delay = delay or 0
            raise
        return self._enqueued(prepared)

    async def enqueue_many_on(self, conn: Any, messages: list[tuple[Message[Any], int | None]],
                              cancel: Sequence[str] = ()) -> list[Message[Any]]:
        """`enqueue_many` on `conn`, an asyncpg session of the database this broker's table lives in (the relay's
        own): the same statement, with no thread hop and no connection of the broker's. It commits on its own
        (or with `conn`'s transaction, if one is open): the caller knows what its session's commits promise."""
        prepared, statements = self._statements(messages, cancel)
        async with conn.transaction() if len(statements) > 1 else nullcontext():
            for cancelling, params in statements:
                await conn.execute(_ENQUEUE_CANCELLING_ON if cancelling else _ENQUEUE_ON,
                                   *(params[name] for name in _POSITIONS if name in params))
        return self._enqueued(prepared)

    def _statements(self, messages: list[tuple[Message[Any], int | None]], cancel: Sequence[str]) -> tuple[
            list[tuple[Message[Any], dict[str, Any], int | None]], list[tuple[bool, dict[str, Any]]]]:
        """The messages prepared (before-enqueue hooks run), and the enqueue statements that store them: whether
        each is the cancelling one (the first, if there is anything to cancel), and its named parameters."""
        prepared = [self._prepare(m, d) for m, d in messages]
        for result, _, delay in prepared:
            self.emit_before("enqueue", result, delay)
        statements = []
        for i, run in enumerate(_without_repeated_ids([p for _, p, _ in prepared])):
            params = {"channel": CHANNEL, **{c: [p[c] for p in run] for c in _COLUMNS}}
            if i == 0 and cancel:
                params["cancel"] = [uuid.UUID(m) for m in cancel]
            statements.append(("cancel" in params, params))
        return prepared, statements

    def _enqueued(self, prepared: list[tuple[Message[Any], dict[str, Any], int | None]]) -> list[Message[Any]]:
        for result, _, delay in prepared:
            self.emit_after("enqueue", result, delay)
        return [result for result, _, _ in prepared]

    def _prepare(self, message: Message[Any], delay: int | None) -> tuple[Message[Any], dict[str, Any], int | None]:
        stored = message.copy(queue_name=q_name(message.queue_name))
        # The eta lives in the row, not the message: a message carrying one would be parked in worker memory.
        eta_ms = stored.options.pop("eta", None)
        if delay is not None:
            eta_ms = None  # an explicit delay wins over an eta the message may carry from elsewhere
        try:
            message_id = uuid.UUID(stored.message_id)
        except ValueError:
            raise ValueError(f"PostgresBroker needs UUID message ids, got {stored.message_id!r}") from None
        params = {
            "message_id": message_id,
            "queue": stored.queue_name,
            "actor": stored.actor_name,
            "eta_ms": eta_ms,
            "delay_s": (delay or 0) / 1000,
            "retries": int(stored.options.get("retries", 0)),
            "message": stored.encode(),
        }
        if delay is not None:
            # The caller and the after-enqueue hooks get the message with its eta, as dramatiq's brokers return a
            # delayed one; the row's copy was encoded without it just above. The options dict is this copy's own
            # (Message.copy makes a new one), so no other message changes, and a second copy is saved.
            stored.options["eta"] = int(time.time() * 1000) + delay
        self.logger.debug("Enqueueing message %r on queue %r.", stored.message_id, stored.queue_name)
        return stored, params, delay

    def get_declared_queues(self) -> set[str]:
        return self.queues.copy()

    def flush(self, queue_name: str) -> None:
        """Delete every row of the queue, finished and dead-lettered ones included."""
        with self.pool.connection() as conn:
            conn.execute("DELETE FROM worker_messages WHERE queue_name = %s", [q_name(queue_name)])

    def flush_all(self) -> None:
        """Delete every row of the queues declared on this broker (other queues in the table are left alone)."""
        with self.pool.connection() as conn:
            conn.execute("DELETE FROM worker_messages WHERE queue_name = ANY(%s)", [sorted(self.queues)])

    def join(self, queue_name: str, *, interval: int = 100, timeout: int | None = None) -> None:
        """Wait until the queue has no queued (incl. delayed) or consumed rows; meant for tests.

        Raises:
          QueueJoinTimeout: when `timeout` (ms) elapses first.
        """
        deadline = None if timeout is None else time.monotonic() + timeout / 1000
        while True:
            with self.pool.connection() as conn:
                row = conn.execute(_PENDING, [q_name(queue_name)]).fetchone()
            if row is not None and row[0] == 0:
                return
            if deadline is not None and time.monotonic() >= deadline:
                raise QueueJoinTimeout(queue_name)
            time.sleep(interval / 1000)

    def close(self) -> None:
        self.pool.close()
        self.ack_pool.close()

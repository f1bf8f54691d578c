"""Runs projections: batched catch-up, live follow on NOTIFY, one leader per projection, exactly-once."""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import math
import time
import zlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, cast

import asyncpg

from app.store.event_store import EventStore
from app.store.notifier import CHANNEL
from app.store.types import LogPosition, RecordedEvent
from projections import checkpoints
from projections.base import Projection, Tables, live_tables, reads, writes
from projections.checkpoint_flush import CheckpointFlusher
from projections.checkpoints import Advance
from projections.held import HeldConnection
from projections.one_statement import OneStatementBatch

log = logging.getLogger("mm.projections")

# Retries after a wake-up that found nothing yet: the writer has committed, but an older open
# transaction still holds the visibility horizon back for a few milliseconds.
_SETTLE_DELAYS = (0.002, 0.005, 0.01, 0.02, 0.05)
# Under a steady stream of commits every NOTIFY would start a round of reads and transactions that finds a
# handful of events, and the per-round work (the read, each projection's commit) would dwarf the projections'
# own (measured in ops/bench `commands`: 5x the CPU per event of catch-up). So after a read that found some
# events the next one waits, for up to this long, letting the next events accumulate. The wait grows with
# how many commands the last read found (the full window from COALESCE_COMMANDS on): one or two (a lone
# client, one worker step however many events it recorded) wait a few ms; a busy log waits the full window.
# Commands, not events: one command's transaction of several events says nothing about how busy the log is
# (counting events, a lone auto task's worker step of 4 events made the next read wait 12 ms). Nor
# transactions: the event store writes concurrent commands' appends as one (see _commands). An idle
# log (the last read found nothing) is read at once on a wake-up; a full batch (catching up) is followed at once.
COALESCE_S = 0.025
COALESCE_COMMANDS = 8


# After a failure, try again this soon (or at the poll interval, if shorter): a restarted server is back in
# about a second, and a long poll interval must not keep a projection, or the listener, away for that long.
_RETRY_S = 0.5
# What a session lost mid-operation raises (asyncpg's InternalClientError included: "cannot switch to state").
_CONNECTION_ERRORS = (asyncpg.PostgresError, OSError, asyncpg.InterfaceError, asyncpg.exceptions.InternalClientError)
# Of those, what a server that is down or restarting causes (see _OutageLog); any other PostgreSQL error is the
# projection's own (a bug, a constraint) and is logged every time.
_OUTAGE_ERRORS = (OSError, asyncpg.InterfaceError, asyncpg.exceptions.InternalClientError,
                  asyncpg.PostgresConnectionError, asyncpg.exceptions.AdminShutdownError,
                  asyncpg.exceptions.CrashShutdownError, asyncpg.exceptions.CannotConnectNowError)


async def _first(*waits: Awaitable[object]) -> None:
    """Wait until any of `waits` finishes; cancel the rest."""
    tasks = [asyncio.ensure_future(w) for w in waits]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()


def lock_key(name: str) -> int:
    return 0x6D6D0000 << 32 | zlib.crc32(name.encode())


class ReadAhead:
    """The next batch of a catch-up, read on a second session while the first writes the current batch.

    A catch-up alternates Python (decoding the events, building rows) and PostgreSQL (the read, the writes),
    each idle while the other works; reading ahead overlaps the next read and its decoding with this batch's
    writes. It is only ever a prefix of what a read at the same position would return later (the log reader's
    gap-free rule), and it is used only if the checkpoint still stands where it was read from.
    """

    # A pool without a spare session makes the read wait: give up soon and read on the batch's own session.
    ACQUIRE_TIMEOUT_S = 1.0

    def __init__(self, pool: asyncpg.Pool, store: EventStore, limit: int) -> None:
        self.pool, self.store, self.limit = pool, store, limit
        self._after: LogPosition | None = None
        self._task: asyncio.Task[list[RecordedEvent]] | None = None
        self.used = 0  # batches handed out (tests count them)

    def start(self, after: LogPosition) -> None:
        self._after = after
        self._task = asyncio.create_task(self._read(after), name="catch-up-read-ahead")

    async def _read(self, after: LogPosition) -> list[RecordedEvent]:
        async with self.pool.acquire(timeout=self.ACQUIRE_TIMEOUT_S) as conn:
            return await self.store.read_all(after, self.limit, conn=conn)

    async def take(self, at: LogPosition) -> list[RecordedEvent] | None:
        """What was read ahead after `at`; None if nothing was read from there, or the read failed (the caller
        reads on its own session), or it found nothing (more may be visible by now: read again)."""
        task, self._task = self._task, None
        if task is None:
            return None
        if self._after != at:
            await _cancelled(task)
            return None
        try:
            events = await task
        except Exception:
            return None
        self.used += bool(events)
        return events or None

    async def close(self) -> None:
        if (task := self._task) is not None:
            self._task = None
            await _cancelled(task)


async def _cancelled(task: asyncio.Task[Any]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task


async def apply_batch(
    conn: asyncpg.Connection,
    store: EventStore,
    projection: Projection,
    tables: Tables,
    checkpoint_name: str,
    limit: int,
    ahead: ReadAhead | None = None,
) -> int:
    """One transaction: read the checkpoint and the next events, write rows, then advance the checkpoint if
    no other writer moved it meanwhile (one compare-and-set UPDATE; else roll back and retry from there).
    `ahead`: reads the batch after a full one while this one is written (catch-up), used by the next call.

    The checkpoint's row lock comes last on purpose: a transaction holds back every log reader's visibility
    horizon from its first write (the row lock assigns its xid) until it commits, so reading the log and
    the relay's enqueueing (through the broker's own connections) happen before that window opens.
    """
    while True:
        after: LogPosition | None = None
        try:
            async with conn.transaction():
                after = await checkpoints.position(conn, checkpoint_name)
                if after is None:
                    raise LookupError(f"no checkpoint row for projection {checkpoint_name!r}")
                events = (await ahead.take(after) if ahead is not None else None) \
                    or await store.read_all(after, limit, conn=conn)
                if not events:
                    return 0
                if ahead is not None and len(events) == limit:
                    ahead.start(events[-1].log_position)
                await apply_events(conn, projection, tables, events)
                last = events[-1]
                if not await checkpoints.advance_from(
                    conn, checkpoint_name, after, last.log_position, len(events), last.recorded_at
                ):
                    raise _Moved  # rolls our rows back
            await _committed(conn, projection)
            return len(events)
        except _Moved:
            # Another writer (a second `catch_up` beside the leader) applied these events first: take the
            # next batch from where it left off. A relay's messages are deduplicated by message id.
            continue
        except (asyncpg.IntegrityConstraintViolationError, asyncpg.DeadlockDetectedError):
            # The same race seen earlier: our rows collided with the other writer's. Rolled back; retry
            # if the checkpoint has moved, else it is a real error of this projection.
            if await checkpoints.position(conn, checkpoint_name) == after:
                raise


class _Moved(Exception):
    """The checkpoint moved under this batch."""


async def apply_events_from(
    conn: asyncpg.Connection, projection: Projection, tables: Tables, at: LogPosition,
    events: Sequence[RecordedEvent], skip: Callable[[Advance], Awaitable[bool]] | None = None,
) -> LogPosition:
    """One transaction: write the rows of `events` (the log's next events after `at`, already read) and move
    the checkpoint from `at` to the last of them, unless something else moved it first (compare-and-set:
    then the rows roll back). Returns the checkpoint as it now stands, where the next batch starts.

    The checkpoint's UPDATE comes last, as in `apply_batch`, and for the same reason. `skip`: how to move the
    checkpoint over events this projection does not read (the runner's CheckpointFlusher, which writes
    every projection's such advance in one statement); by default a statement of its own on `conn`.
    """
    last = events[-1]
    advance = Advance(projection.name, at, last.log_position, len(events), last.recorded_at)
    if not any(reads(projection, e) for e in events) or not await writes(projection, conn, events, tables, at):
        # Nothing here for this projection: no transaction, only the checkpoint moves (a compare-and-set,
        # which alone suffices as no row is written: see CheckpointFlusher). Lost: re-read, never overwrite.
        if skip is not None:
            moved = await skip(advance)
        else:
            moved = await checkpoints.advance_from(
                conn, advance.name, advance.expected, advance.to, advance.applied, advance.last_event_at
            )
        if not moved:
            return await _checkpoint(conn, projection.name)
        return last.log_position
    # Most batches are one statement with the checkpoint's compare-and-set (OneStatementBatch); the others open
    # their transaction on their first statement and end with one message: the compare-and-set, COMMIT and the
    # projection's NOTIFY (checkpoints.commit_advancing_sql). So the transaction is driven by hand rather than by
    # conn.transaction(), whose BEGIN and COMMIT are messages of their own.
    channel = getattr(projection, "notify_channel", None)
    batch, alone = OneStatementBatch(conn), False
    try:
        try:
            # The batch stands in for the session (it offers what projections call on one).
            await apply_events(cast(asyncpg.Connection, batch), projection, tables, events)
            alone = await batch.finish(advance)
            if not alone:
                await conn.execute(checkpoints.commit_advancing_sql(advance, channel))
        except BaseException:
            await _rollback(conn)
            raise
    except asyncpg.PostgresError as exc:
        if getattr(exc, "sqlstate", None) == checkpoints.MOVED_SQLSTATE:
            return await _checkpoint(conn, projection.name)  # something else moved it: rows rolled back
        if isinstance(exc, asyncpg.IntegrityConstraintViolationError | asyncpg.DeadlockDetectedError):
            # Our rows collided with another writer's (see apply_batch): fine if it moved the checkpoint.
            if (now := await _checkpoint(conn, projection.name)) == at:
                raise
            return now
        raise
    if alone and channel is not None:
        await _committed(conn, projection)  # after the commit, as commit_advancing_sql sends it
    return last.log_position


async def _rollback(conn: asyncpg.Connection) -> None:
    """End a failed batch's transaction. A session that cannot (lost, or cancelled mid-statement) is left to the
    pool, which closes or resets it on release: nothing of the batch was committed either way."""
    if not conn.is_closed() and conn.is_in_transaction():
        with contextlib.suppress(*_CONNECTION_ERRORS):
            await conn.execute("ROLLBACK")


async def _checkpoint(conn: asyncpg.Connection, name: str) -> LogPosition:
    at = await checkpoints.position(conn, name)
    if at is None:
        raise LookupError(f"no checkpoint row for projection {name!r}")
    return at


async def _committed(conn: asyncpg.Connection, projection: Projection) -> None:
    if (channel := getattr(projection, "notify_channel", None)) is not None:
        # After the commit, in a statement of its own: a NOTIFY inside the batch would hold the batch's
        # xid (and every log reader's horizon) while it queues for PostgreSQL's global notify lock.
        await conn.execute(f"NOTIFY {channel}")


async def apply_events(
    conn: asyncpg.Connection, projection: Projection, tables: Tables, events: Sequence[RecordedEvent]
) -> None:
    await projection.apply_many(conn, events, tables)


class _Feed:
    """The log as this process has read it, shared by all its projections: one read and one decode per wake-up.

    The window holds every log event in the range (base, head] of the (tx_id, position) order, and nothing
    else: each read takes the next events after `head` with the store's gap-free rule, so the window is always
    a contiguous stretch of the log as every reader sees it. A projection whose checkpoint lies in that range
    takes its next events from here; one behind it (starting, rebuilt, slow) reads the log on its own until it
    lands in the window again. Each projection still applies in its own transaction with its own
    compare-and-set checkpoint, so sharing the read changes what is read how often, never what is applied.
    """

    def __init__(self, pool: asyncpg.Pool, store: EventStore, batch_size: int, coalesce: float,
                 on_new: Callable[[], None]) -> None:
        self.store, self.batch_size, self.coalesce, self.on_new = store, batch_size, coalesce, on_new
        # Room for a few batches, so a projection a little slower than the others still reads from here.
        self.capacity = 4 * batch_size
        self.events: list[RecordedEvent] = []
        self.base: LogPosition | None = None
        self.head: LogPosition | None = None
        self.reads = 0  # log reads made (tests count them)
        self._reading: asyncio.Future[int] | None = None
        self._found_at = -math.inf  # when the last read that found some (not a full batch of) events started
        self._pause = 0.0  # how long after that the next read may start
        self._conn = HeldConnection(pool)

    def after(self, at: LogPosition, limit: int) -> list[RecordedEvent] | None:
        """The next events after `at` (up to `limit`), or None when `at` lies outside the window."""
        if self.base is None or self.head is None or not (self.base <= at <= self.head):
            return None
        first = bisect.bisect_right(self.events, at, key=_position)
        return self.events[first:first + limit]

    def join(self, at: LogPosition) -> None:
        """Start the window at `at` if it holds nothing yet (the first projection to ask, or all have moved on)."""
        if self.head is None or (not self.events and at > self.head):
            self.rebase(at)

    def rebase(self, at: LogPosition) -> None:
        """Drop the window and start it afresh at `at` (a read in flight from the old head is discarded)."""
        self.events = []
        self.base = self.head = at

    async def read(self, settle: bool = False) -> int:
        """Read what follows `head` into the window; callers arriving meanwhile share the one read in flight.

        After a read that found some events, the next waits until up to `coalesce` after that read began (see
        COALESCE_S), so under a steady stream of commits each read takes what has arrived meanwhile. After a
        read that found nothing (idle), or a full batch (catching up), the next one starts at once. `settle`: a
        wake-up found nothing yet, because an older open transaction still held the visibility horizon back:
        retry a few times soon.
        """
        if self._reading is not None:
            return await asyncio.shield(self._reading)
        self._reading = asyncio.get_running_loop().create_future()
        try:
            n = await self._read(settle)
        except asyncio.CancelledError:
            # Only the reader's own task is cancelled: those sharing its read try again, woken at once.
            self._reading.set_result(0)
            self.on_new()
            raise
        except Exception as exc:
            self._reading.set_exception(exc)
            self._reading.exception()  # retrieved: a caller that shares it gets it raised too
            raise
        else:
            self._reading.set_result(n)
            return n
        finally:
            self._reading = None

    async def _read(self, settle: bool) -> int:
        loop = asyncio.get_running_loop()
        pause = self._found_at + self._pause - loop.time()
        if pause > 0:
            await asyncio.sleep(pause)
        started = loop.time()
        n, commands = await self._read_once()
        for delay in _SETTLE_DELAYS if settle and not n else ():
            await asyncio.sleep(delay)
            started = loop.time()
            n, commands = await self._read_once()
            if n:
                break
        self._found_at = started if 0 < n < self.batch_size else -math.inf
        self._pause = self.coalesce * min(1.0, commands / COALESCE_COMMANDS)
        return n

    async def _read_once(self) -> tuple[int, int]:
        """Read what follows `head` into the window: how many events, and how many commands recorded them."""
        start = self.head
        assert start is not None
        try:
            events = await self.store.read_all(start, self.batch_size, conn=await self._conn.get())
        except BaseException:
            await self.close()
            raise
        self.reads += 1
        if self.head is not start:
            return 0, 0  # rebased meanwhile: these events follow the old head, not the new one
        if events:
            self.events.extend(events)
            self.head = events[-1].log_position
            if (extra := len(self.events) - self.capacity) > 0:
                self.base = self.events[extra - 1].log_position
                del self.events[:extra]
            self.on_new()
        return len(events), _commands(events)

    async def close(self) -> None:
        await self._conn.release()


def _commands(events: Sequence[RecordedEvent]) -> int:
    """How many commands recorded `events`: one per transaction and request (or message). A transaction of one
    command's several events counts once; one of several commands' appends written together (the
    event store's group commit) counts each of them, as they would count written one by one."""
    return len({(e.tx_id, e.metadata.get("requestId"), e.metadata.get("causationId")) for e in events})


def _position(event: RecordedEvent) -> LogPosition:
    return event.log_position


class _OutageLog:
    """One warning when the database becomes unreachable and one when it is back, not one per projection per
    retry: a server restart of a few seconds made every projection and the listener log a line every retry
    interval (about 90 lines per restart, hiding anything else). Errors other than a lost or refused session
    are not an outage and are always logged by the caller."""

    def __init__(self) -> None:
        self.since: float | None = None
        self.failures = 0

    def failed(self, who: str, exc: BaseException) -> None:
        self.failures += 1
        if self.since is None:
            self.since = time.monotonic()
            log.warning("%s: %s: %s; the database is unreachable, retrying every %.1f s (until it is back, "
                        "further connection errors are logged at DEBUG)", who, type(exc).__name__, exc, _RETRY_S)
        else:
            log.debug("%s: %s: %s; retrying", who, type(exc).__name__, exc)

    def reached(self) -> None:
        if self.since is not None:
            log.warning("database reachable again after %.1f s (%d failed attempts); projections resume",
                        time.monotonic() - self.since, self.failures)
            self.since, self.failures = None, 0


class ProjectionRunner:
    def __init__(
        self,
        pool: asyncpg.Pool,
        store: EventStore,
        projections: Sequence[Projection],
        *,
        batch_size: int = 500,
        poll_interval: float = 0.5,
        dsn: str | None = None,
        coalesce: float = COALESCE_S,
    ) -> None:
        self.pool = pool
        self.store = store
        self.projections = list(projections)
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.dsn = dsn
        self.coalesce = coalesce
        self._wake: dict[str, asyncio.Event] = {p.name: asyncio.Event() for p in self.projections}
        self.feed = _Feed(pool, store, batch_size, coalesce, self._wake_all)
        self.checkpoint_flusher = CheckpointFlusher(pool)
        self.leading: set[str] = set()
        self._outage = _OutageLog()
        self.batches_read_ahead = 0  # by catch_up (tests count them)

    def _wake_all(self) -> None:
        for event in self._wake.values():
            event.set()

    async def run(self, stop: asyncio.Event) -> None:
        async with self.pool.acquire() as conn:
            for p in self.projections:
                await checkpoints.ensure(conn, p.name)
        tasks = [asyncio.create_task(self._listen(stop), name="projection-listener")]
        tasks += [asyncio.create_task(self._lead(p, stop), name=f"projection:{p.name}") for p in self.projections]
        try:
            await stop.wait()
        finally:
            for t in tasks:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t
            await self.feed.close()
            await self.checkpoint_flusher.close()

    async def catch_up(self, projection: Projection) -> int:
        """Apply everything visible now (used by tests and `mm projections catch-up`)."""
        total = 0
        # Reading ahead needs a second session: a pool of one would only make it wait.
        ahead = ReadAhead(self.pool, self.store, self.batch_size) if self.pool.get_max_size() > 1 else None
        async with self.pool.acquire() as conn:
            try:
                await checkpoints.ensure(conn, projection.name)
                while n := await apply_batch(
                    conn, self.store, projection, live_tables(projection), projection.name, self.batch_size, ahead
                ):
                    total += n
            finally:
                if ahead is not None:
                    await ahead.close()
                    self.batches_read_ahead += ahead.used
        return total

    async def _lead(self, projection: Projection, stop: asyncio.Event) -> None:
        """Hold the projection's advisory lock on a session and apply every batch on that same session.

        A second copy waits here. The lock is a session lock, so it lasts exactly as long as the session:
        when the session ends (pg_terminate_backend, network loss, a server restart) the lock is free for a
        standby, and this copy cannot commit another batch, because its batches run on the dead session.
        So a deposed leader stops at the batch it was in, which rolls back.
        """
        key = lock_key(projection.name)
        while not stop.is_set():
            try:
                async with self.pool.acquire() as conn:
                    locked = await conn.fetchval("SELECT pg_try_advisory_lock($1)", key)
                    self._outage.reached()
                    if locked:
                        self.leading.add(projection.name)
                        try:
                            await self._follow(conn, projection, stop)
                        finally:
                            self.leading.discard(projection.name)
                            if not conn.is_closed():
                                await conn.execute("SELECT pg_advisory_unlock($1)", key)
            except _OUTAGE_ERRORS as exc:
                # A lost or refused session (a server restart): the batch rolled back, so retry.
                self._outage.failed(f"projection {projection.name}", exc)
            except Exception as exc:
                # Whatever else went wrong, the projection must not die silently with its task: its batch
                # rolled back, so retry. A PostgreSQL error is logged as such; anything else with its traceback.
                log.warning("projection %s: %s: %s; retrying", projection.name, type(exc).__name__, exc,
                            exc_info=not isinstance(exc, _CONNECTION_ERRORS))
            await self._sleep(stop, min(self.poll_interval, _RETRY_S))

    async def _follow(self, conn: asyncpg.Connection, projection: Projection, stop: asyncio.Event) -> None:
        """Apply batches on `conn`, the session holding the projection's advisory lock, until stopped.

        The next events come from the shared feed when this projection's checkpoint lies in its window, else
        from a read of its own (behind the window: catching up). Each batch is one transaction that writes
        the rows and moves the checkpoint from where this loop last left it (compare-and-set): if something
        else moved it meanwhile (a rebuild's swap, a `catch_up` beside the leader), the batch rolls back and
        the loop goes on from the checkpoint it finds.
        """
        wake = self._wake[projection.name]
        tables = live_tables(projection)
        at = await _checkpoint(conn, projection.name)
        woken = False
        while not stop.is_set():
            wake.clear()
            events = await self._next(conn, at, settle=woken)
            woken = False
            if events:
                at = await apply_events_from(conn, projection, tables, at, events,
                                             self.checkpoint_flusher.advance_from)
                continue
            try:
                await asyncio.wait_for(wake.wait(), self.poll_interval)
                woken = True
            except TimeoutError:
                pass

    async def _next(self, conn: asyncpg.Connection, at: LogPosition, settle: bool) -> list[RecordedEvent]:
        """The next events after checkpoint `at`: from the feed's window, else from a read of our own."""
        feed, limit = self.feed, self.batch_size
        feed.join(at)
        assert feed.head is not None
        events = feed.after(at, limit)
        if events is None and at < feed.head:
            # Behind the window (starting, rebuilt, or slower than the window is long): catch up alone.
            return await self.store.read_all(at, limit, conn=conn)
        if events:
            return events
        # At the window's head (or ahead of it): one read for every projection that has got this far.
        await feed.read(settle)
        events = feed.after(at, limit)
        if events is None:
            # Still ahead: the window trails far behind (a projection catching up started it). Follow the
            # live end instead; the one behind reads on its own until it lands in the window again.
            feed.rebase(at)
            await feed.read()
            events = feed.after(at, limit)
        return events or []

    async def _listen(self, stop: asyncio.Event) -> None:
        def on_notify(*_: object) -> None:
            self._wake_all()

        while not stop.is_set():
            try:
                async with self.pool.acquire() as conn:
                    lost = asyncio.Event()
                    conn.add_termination_listener(lambda _, lost=lost: lost.set())
                    await conn.add_listener(CHANNEL, on_notify)
                    self._outage.reached()
                    try:
                        # Until stopped, or until the session dies (a server restart): then listen anew, or
                        # the projections would fall back to polling for good.
                        await _first(stop.wait(), lost.wait())
                    finally:
                        with contextlib.suppress(*_CONNECTION_ERRORS):  # a dead session has nothing to remove
                            await conn.remove_listener(CHANNEL, on_notify)
                    if lost.is_set():
                        self._outage.failed("event listener", ConnectionError("connection lost"))
            except _OUTAGE_ERRORS as exc:
                self._outage.failed("event listener", exc)
            except Exception as exc:
                log.warning("event listener: %s: %s; reconnecting", type(exc).__name__, exc,
                            exc_info=not isinstance(exc, _CONNECTION_ERRORS))
            await self._sleep(stop, min(self.poll_interval, _RETRY_S))

    @staticmethod
    async def _sleep(stop: asyncio.Event, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), seconds)

"""Runs projections: batched catch-up, live follow on NOTIFY, one leader per projection, exactly-once."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import zlib
from collections.abc import Awaitable, Callable, Sequence

import asyncpg

from app.store.event_store import EventStore
from app.store.notifier import CHANNEL
from app.store.types import LogPosition, RecordedEvent
from projections import checkpoints
from projections.base import Projection, Tables, live_tables

log = logging.getLogger("mm.projections")

# Retries after a wake-up that found nothing yet: the writer has committed, but an older open
# transaction still holds the visibility horizon back for a few milliseconds.
_SETTLE_DELAYS = (0.002, 0.005, 0.01, 0.02, 0.05)
# Under a steady stream of commits every NOTIFY would start a transaction that finds a handful of events, and
# the per-transaction work (checkpoint lock, read, commit) would dwarf the projection's own (measured in
# ops/bench `commands`: 5x the CPU per event of catch-up). So a projection that has just applied some events
# lets the next ones accumulate for up to this long before its next batch. An idle projection answers a
# wake-up at once; a full batch (catching up) is followed at once too.
COALESCE_S = 0.025


# After a failure, try again this soon (or at the poll interval, if shorter): a restarted server is back in
# about a second, and a long poll interval must not keep a projection, or the listener, away for that long.
_RETRY_S = 0.5
# What a session lost mid-operation raises (asyncpg's InternalClientError included: "cannot switch to state").
_CONNECTION_ERRORS = (asyncpg.PostgresError, OSError, asyncpg.InterfaceError, asyncpg.exceptions.InternalClientError)


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


async def apply_batch(
    conn: asyncpg.Connection,
    store: EventStore,
    projection: Projection,
    tables: Tables,
    checkpoint_name: str,
    limit: int,
) -> int:
    """One transaction: read the checkpoint and the next events, write rows, then advance the checkpoint if
    no other writer moved it meanwhile (one compare-and-set UPDATE; else roll back and retry from there).

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
                events = await store.read_all(after, limit, conn=conn)
                if not events:
                    return 0
                await apply_events(conn, projection, tables, events)
                last = events[-1]
                if not await checkpoints.advance_from(
                    conn, checkpoint_name, after, last.log_position, len(events), last.recorded_at
                ):
                    raise _Moved  # rolls our rows back
            if (channel := getattr(projection, "notify_channel", None)) is not None:
                # After the commit, in a statement of its own: a NOTIFY inside the batch would hold the batch's
                # xid (and every log reader's horizon) while it queues for PostgreSQL's global notify lock.
                await conn.execute(f"NOTIFY {channel}")
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


async def apply_events(
    conn: asyncpg.Connection, projection: Projection, tables: Tables, events: Sequence[RecordedEvent]
) -> None:
    await projection.apply_many(conn, events, tables)


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
        self.leading: set[str] = set()

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

    async def catch_up(self, projection: Projection) -> int:
        """Apply everything visible now (used by tests and `mm projections catch-up`)."""
        total = 0
        async with self.pool.acquire() as conn:
            await checkpoints.ensure(conn, projection.name)
            while n := await apply_batch(
                conn, self.store, projection, live_tables(projection), projection.name, self.batch_size
            ):
                total += n
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
                    if await conn.fetchval("SELECT pg_try_advisory_lock($1)", key):
                        self.leading.add(projection.name)
                        try:
                            await self._follow(conn, projection, stop)
                        finally:
                            self.leading.discard(projection.name)
                            if not conn.is_closed():
                                await conn.execute("SELECT pg_advisory_unlock($1)", key)
            except Exception as exc:
                # Whatever went wrong, the projection must not die silently with its task: its batch rolled
                # back, so retry. A lost connection is routine; anything else is logged with its traceback.
                log.warning("projection %s: %s: %s; retrying", projection.name, type(exc).__name__, exc,
                            exc_info=not isinstance(exc, _CONNECTION_ERRORS))
            await self._sleep(stop, min(self.poll_interval, _RETRY_S))

    async def _follow(self, conn: asyncpg.Connection, projection: Projection, stop: asyncio.Event) -> None:
        """Apply batches on `conn`, the session holding the projection's advisory lock, until stopped."""
        wake = self._wake[projection.name]
        tables = live_tables(projection)

        async def batch() -> int:
            return await apply_batch(conn, self.store, projection, tables, projection.name, self.batch_size)

        loop = asyncio.get_running_loop()
        woken = False
        applied_at = -math.inf  # when the last batch that found some (but not a full batch of) events started
        while not stop.is_set():
            pause = applied_at + self.coalesce - loop.time()
            if pause > 0:
                await asyncio.sleep(pause)
            wake.clear()
            started = loop.time()
            if n := await batch():
                applied_at = started if n < self.batch_size else -math.inf
                continue
            applied_at = -math.inf
            if woken:
                woken = False
                if await self._settle(batch):
                    applied_at = loop.time()
                    continue
            try:
                await asyncio.wait_for(wake.wait(), self.poll_interval)
                woken = True
            except TimeoutError:
                pass

    @staticmethod
    async def _settle(batch: Callable[[], Awaitable[int]]) -> bool:
        for delay in _SETTLE_DELAYS:
            await asyncio.sleep(delay)
            if await batch():
                return True
        return False

    async def _listen(self, stop: asyncio.Event) -> None:
        def on_notify(*_: object) -> None:
            for event in self._wake.values():
                event.set()

        while not stop.is_set():
            try:
                async with self.pool.acquire() as conn:
                    lost = asyncio.Event()
                    conn.add_termination_listener(lambda _, lost=lost: lost.set())
                    await conn.add_listener(CHANNEL, on_notify)
                    try:
                        # Until stopped, or until the session dies (a server restart): then listen anew, or
                        # the projections would fall back to polling for good.
                        await _first(stop.wait(), lost.wait())
                    finally:
                        with contextlib.suppress(*_CONNECTION_ERRORS):  # a dead session has nothing to remove
                            await conn.remove_listener(CHANNEL, on_notify)
                    if lost.is_set():
                        log.warning("event listener: connection lost; reconnecting")
            except Exception as exc:
                log.warning("event listener: %s: %s; reconnecting", type(exc).__name__, exc,
                            exc_info=not isinstance(exc, _CONNECTION_ERRORS))
            await self._sleep(stop, min(self.poll_interval, _RETRY_S))

    @staticmethod
    async def _sleep(stop: asyncio.Event, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), seconds)

"""One live tail of the audit table per API process, fanned out to every SSE subscriber.

The projector NOTIFYs `CHANNEL` after each audit batch commits (not inside it: that would hold the batch's
xid, and so every log reader's horizon, on PostgreSQL's global notify lock). The tail LISTENs on a connection
of its own and on a wake-up, or every `poll_s` should a notification be lost, reads the rows after its
position from the table, in log order, and offers each to every subscriber. NOTIFY only wakes; the table is
the data path.
The projector appends rows in (tx_id, position) order and commits them batch by batch, so reading "after the
last row seen" misses nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import asyncpg

from app.store.listening import listen_forever
from projections.audit_reader import AUDIT_CHANNEL as CHANNEL
from projections.audit_reader import AuditFilter, export_batch, last_position

log = logging.getLogger("mm.audit")
_END = (2**63 - 1, 2**63 - 1)
_BATCH = 1000
Position = tuple[int, int]


class Subscriber:
    """A bounded queue of (position, rendered frame) the tail offers live rows to; past its size it is marked
    overflowed and offered nothing more, so a slow client costs at most `size` frames of memory."""

    def __init__(self, filt: AuditFilter, size: int, start: Position) -> None:
        self.filt, self.start = filt, start  # rows after `start` reach the queue
        self.queue: asyncio.Queue[tuple[Position, bytes]] = asyncio.Queue(size)
        self.overflowed = False

    def wants(self, row: asyncpg.Record) -> bool:
        return not self.overflowed and matches(self.filt, row)

    def offer(self, at: Position, frame: bytes) -> None:
        try:
            self.queue.put_nowait((at, frame))
        except asyncio.QueueFull:
            self.overflowed = True


def matches(f: AuditFilter, r: asyncpg.Record) -> bool:
    """The feed's WHERE clause (AuditFilter.where), evaluated on a row in memory."""
    return ((f.account_id is None or r["account_id"] == f.account_id)
            and (f.types is None or r["type"] in f.types)
            and (f.machine_id is None or r["machine_id"] == f.machine_id)
            and (f.subject is None or r["subject"] == f.subject)
            and (f.actor is None or r["actor"] == f.actor)
            and (f.correlation_id is None or r["correlation_id"] == f.correlation_id)
            and (f.since is None or r["occurred_at"] >= f.since)
            and (f.until is None or r["occurred_at"] < f.until))


class AuditTail:
    def __init__(self, pool: asyncpg.Pool, poll_s: float, render: Callable[[asyncpg.Record], bytes],
                 dsn: str | None = None) -> None:
        self.pool, self.poll_s, self.dsn = pool, poll_s, dsn
        self.render = render  # a row's frame, rendered once however many subscribers it goes to
        self.position: Position | None = None
        self._subs: set[Subscriber] = set()
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def subscribers(self) -> int:
        return len(self._subs)

    async def subscribe(self, filt: AuditFilter, size: int) -> Subscriber:
        """A subscriber receiving every matching row after the tail's current position."""
        await self._start()
        assert self.position is not None
        sub = Subscriber(filt, size, self.position)
        self._subs.add(sub)
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        self._subs.discard(sub)

    async def _start(self) -> None:
        """Started by the first subscriber; a database that cannot be read now fails that request (503)."""
        if self.position is None:
            found = await last_position(self.pool)
            if self.position is None:  # another subscriber may have started it meanwhile
                self.position = found or (0, 0)
        if not self._tasks:
            self._tasks.append(asyncio.create_task(self._run(), name="audit-tail"))
            if self.dsn is not None:
                self._tasks.append(asyncio.create_task(self._listen(self.dsn), name="audit-tail-listener"))

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll_s)
            self._wake.clear()
            try:
                await self._read()
            except (asyncpg.PostgresError, OSError, asyncpg.InterfaceError) as exc:
                log.warning("audit tail: %s; retrying", exc)

    async def _read(self) -> int:
        """Offers the rows after the tail's position; returns how many there were."""
        if not self._subs and self.position is not None:
            latest = await last_position(self.pool)
            if not self._subs:  # nobody subscribed meanwhile: skip the rows nobody wants (one index probe)
                moved = latest is not None and latest > self.position
                self.position = max(self.position, latest or self.position)
                return int(moved)
        read = 0
        while self.position is not None:
            rows = await export_batch(self.pool, AuditFilter(), self.position, _END, _BATCH)
            read += len(rows)
            for r in rows:
                at, frame = (r["tx_id"], r["position"]), None
                for sub in [s for s in self._subs if s.wants(r)]:
                    frame = frame or self.render(r)
                    sub.offer(at, frame)
                self.position = at
            if len(rows) < _BATCH:
                break
        return read

    async def _listen(self, dsn: str) -> None:
        # On (re)connect the tail reads at once: anything committed while not listening.
        await listen_forever(dsn, CHANNEL, lambda *_: self._wake.set(), log=log, name="audit tail listener",
                             retry_s=min(self.poll_s, 1.0), on_up=self._wake.set)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()

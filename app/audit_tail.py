"""One live tail of the audit table per API process, fanned out to every SSE subscriber.

The projector NOTIFYs `CHANNEL` after each audit batch commits (not inside it: that would hold the batch's
xid, and so every log reader's horizon, on PostgreSQL's global notify lock). The tail LISTENs on a connection
of its own and on a wake-up, or every `poll_s` should a notification be lost, reads the rows after its
position from the table, in log order. NOTIFY only wakes; the table is the data path.
The projector appends rows in (tx_id, position) order and commits them batch by batch, so reading "after the
last row seen" misses nothing.

Fan-out is what a thousand subscribers cost on a small box, so it is done per batch, not per record: each row
is encoded to its SSE frame once; subscribers with the same filter form a group, and a batch is filtered once
per group; each subscriber is handed ONE chunk (its group's frames, joined once) per batch, which its response
writes in one send. Reads are spaced by what a fan-out measurably costs on this box (`spacing`): a busy feed
with many subscribers on a slow or loaded box makes fewer, larger batches; on a fast one, smaller and sooner.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence

import asyncpg
import msgspec

from app.store.listening import listen_forever
from projections.audit_reader import AUDIT_CHANNEL as CHANNEL
from projections.audit_reader import AuditFilter, export_batch, last_position

log = logging.getLogger("mm.audit")
_END = (2**63 - 1, 2**63 - 1)
_BATCH = 1000
# Per read, every subscriber's response task wakes and sends once: about 10 us of Python and 3.5 us of kernel
# per write besides the bytes (measured for ops/bench `export`), which at a thousand subscribers is most of
# the API's CPU. What that costs depends on the box, so the tail measures it: a fan-out wakes the subscribers
# (their steps are queued on the event loop at once), then the tail yields once; its own step, queued after
# theirs, runs when every woken subscriber has written. The CPU time the loop's thread spent over that span,
# from the fan-out's start, is the read's cost; reads are spaced so that fan-outs take at most BUSY_SHARE of
# the loop (spacing = cost / BUSY_SHARE), within these bounds on the latency the spacing adds. CPU time, not
# wall-clock: on a box shared with other work the span stretches while the process waits for a core, and
# spacing by it would back off further the more the box is loaded, by more than it saves (measured: at load
# 10-14 on 2 cores a fan-out of 10 rows to 1,000 subscribers took 21-30 ms of CPU but 46-470 ms of wall time).
# A fixed rate of writes tuned on one machine (it was 10,000 a second) added 100 ms at 1,000 subscribers on
# a box three times faster, and would still let a slower one fall behind.
BUSY_SHARE = 0.5
MIN_SPACING_S, MAX_SPACING_S = 0.01, 0.5
# A dearer read counts at once; a cheaper one pulls the estimate down by this share of the difference, so
# one quick read after a slow one does not bring the next read too soon.
COST_EASE = 0.25
Position = tuple[int, int]
Frames = Sequence[tuple[Position, bytes]]


class Subscriber:
    """What one SSE response reads from: chunks of frames (with the position of each chunk's last record), at
    most `size` records queued; past that it is marked overflowed and offered nothing more, so a slow client
    costs at most `size` frames of memory (and is then told where to resume)."""

    __slots__ = ("_chunks", "_deadline", "_queued", "_timer", "_waiter", "key", "overflowed", "size", "start")

    def __init__(self, key: bytes, size: int, start: Position) -> None:
        self.key, self.size, self.start = key, size, start  # rows after `start` are offered
        self._chunks: list[tuple[Position, bytes]] = []
        self._queued = 0
        self._waiter: asyncio.Future[None] | None = None
        # The keep-alive timer outlives a take: arming and cancelling one per read cost ~5 us (measured on
        # uvloop), a third of a subscriber's per-read work; it is re-armed only when it fires early.
        self._timer: asyncio.TimerHandle | None = None
        self._deadline = 0.0
        self.overflowed = False

    def offer(self, frames: Frames, chunk: bytes) -> None:
        """`frames` (non-empty) as one `chunk`; what does not fit overflows the subscriber."""
        room = self.size - self._queued
        if len(frames) <= room:
            self._chunks.append((frames[-1][0], chunk))
            self._queued += len(frames)
        else:
            if room > 0:
                self._chunks.append((frames[room - 1][0], b"".join([f for _, f in frames[:room]])))
            self.overflowed = True
        if self._waiter is not None:
            _release(self._waiter)

    async def take(self, wait_s: float) -> list[tuple[Position, bytes]]:
        """Everything queued, waiting up to `wait_s` for something; [] if nothing came."""
        if not self._chunks and not self.overflowed:
            loop = asyncio.get_running_loop()
            self._deadline = loop.time() + wait_s
            if self._timer is None or self._timer.when() > self._deadline:
                if self._timer is not None:
                    self._timer.cancel()
                self._timer = loop.call_at(self._deadline, self._tick)
            self._waiter = waiter = loop.create_future()
            try:
                await waiter
            finally:
                self._waiter = None
        chunks, self._chunks, self._queued = self._chunks, [], 0
        return chunks

    def _tick(self) -> None:
        """The timer fired: release a take waiting past its deadline, or wait on for a later one."""
        self._timer = None
        if self._waiter is None:
            return  # not waiting: the next take arms it again
        loop = self._waiter.get_loop()
        if loop.time() >= self._deadline:
            _release(self._waiter)
        else:
            self._timer = loop.call_at(self._deadline, self._tick)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


def spacing_for(cost: float) -> float:
    """The least time between two reads whose fan-outs cost `cost` seconds each (see BUSY_SHARE)."""
    return min(MAX_SPACING_S, max(MIN_SPACING_S, cost / BUSY_SHARE))


def _release(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


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


class _Group:
    """The subscribers sharing one filter: a batch is filtered and joined once for all of them."""

    __slots__ = ("everything", "filt", "subs")

    def __init__(self, filt: AuditFilter) -> None:
        self.filt, self.subs = filt, set[Subscriber]()
        self.everything = filt == AuditFilter()

    def fan_out(self, rows: Sequence[asyncpg.Record], frame: Callable[[int], bytes], at: Sequence[Position]) -> None:
        live = [s for s in self.subs if not s.overflowed]
        if not live:
            return
        picked = range(len(rows)) if self.everything else [i for i, r in enumerate(rows) if matches(self.filt, r)]
        if not picked:
            return
        frames = [(at[i], frame(i)) for i in picked]
        chunk = b"".join([f for _, f in frames])
        for sub in live:
            sub.offer(frames, chunk)


class AuditTail:
    def __init__(self, pool: asyncpg.Pool, poll_s: float, render: Callable[[asyncpg.Record], bytes],
                 dsn: str | None = None) -> None:
        self.pool, self.poll_s, self.dsn = pool, poll_s, dsn
        self.render = render  # a row's frame, rendered once however many subscribers it goes to
        self.position: Position | None = None
        self._groups: dict[bytes, _Group] = {}
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.cost = 0.0  # seconds the loop spent on a read's fan-out (see BUSY_SHARE), eased down
        self._fanned_at: float | None = None  # the thread's CPU time when this read's (last) fan-out began, if any

    @property
    def subscribers(self) -> int:
        return sum(len(g.subs) for g in self._groups.values())

    @property
    def spacing(self) -> float:
        """The least time between the starts of two reads that offered rows."""
        return spacing_for(self.cost)

    def measured(self, cost: float) -> None:
        """A read's fan-out took `cost` seconds of the loop (see BUSY_SHARE)."""
        self.cost = cost if cost >= self.cost else self.cost + (cost - self.cost) * COST_EASE

    async def subscribe(self, filt: AuditFilter, size: int) -> Subscriber:
        """A subscriber receiving every matching row after the tail's current position."""
        await self._start()
        assert self.position is not None
        key = msgspec.json.encode(filt)
        sub = Subscriber(key, size, self.position)
        group = self._groups.get(key)
        if group is None:
            group = self._groups[key] = _Group(filt)
        group.subs.add(sub)
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        sub.close()
        group = self._groups.get(sub.key)
        if group is not None:
            group.subs.discard(sub)
            if not group.subs:
                del self._groups[sub.key]

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
        loop = asyncio.get_running_loop()
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll_s)
            self._wake.clear()
            started, self._fanned_at = loop.time(), None
            try:
                if await self._read():  # rows came: let the next ones gather for a while
                    if self._fanned_at is not None:  # (not when nobody is subscribed)
                        await asyncio.sleep(0)  # runs after every subscriber the fan-out woke (see BUSY_SHARE)
                        self.measured(time.thread_time() - self._fanned_at)
                    await asyncio.sleep(self.spacing - (loop.time() - started))
            except (asyncpg.PostgresError, OSError, asyncpg.InterfaceError) as exc:
                log.warning("audit tail: %s; retrying", exc)

    async def _read(self) -> int:
        """Offers the rows after the tail's position; returns how many there were."""
        if not self._groups and self.position is not None:
            latest = await last_position(self.pool)
            if not self._groups:  # nobody subscribed meanwhile: skip the rows nobody wants (one index probe)
                moved = latest is not None and latest > self.position
                self.position = max(self.position, latest or self.position)
                return int(moved)
        read = 0
        while self.position is not None:
            rows = await export_batch(self.pool, AuditFilter(), self.position, _END, _BATCH)
            if rows:
                self._fan_out(rows)
            read += len(rows)
            if len(rows) < _BATCH:
                break
        return read

    def _fan_out(self, rows: list[asyncpg.Record]) -> None:
        """Synchronous (no await): a subscriber either joins before the batch and gets all of it, or after."""
        self._fanned_at = time.thread_time()
        at = [(r["tx_id"], r["position"]) for r in rows]
        frames: list[bytes | None] = [None] * len(rows)

        def frame(i: int) -> bytes:
            f = frames[i]
            if f is None:
                f = frames[i] = self.render(rows[i])
            return f

        for group in self._groups.values():
            group.fan_out(rows, frame, at)
        self.position = at[-1]

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

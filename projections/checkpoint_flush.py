"""Coalesces the projections' checkpoint-only advances: one UPDATE per feed read instead of one per projection."""

from __future__ import annotations

import asyncio
import contextlib

import asyncpg

from projections import checkpoints
from projections.checkpoints import Advance
from projections.held import HeldConnection


class CheckpointFlusher:
    """Writes every checkpoint-only advance submitted in the same event-loop tick with one statement.

    A live batch from the shared feed usually holds nothing for most projections; each of them used to move
    its checkpoint with a commit of its own (measured in ops/bench commands: ~10 of the ~14 commits per live
    batch, the projector's largest statement type). Each loop now submits its advance here and awaits the
    outcome of its compare-and-set; the loops woken by one feed read submit within a few iterations of the
    event loop, and one UPDATE takes them all. No timer: an idle projector's lag does not grow, and what
    arrives while a flush is in flight goes into the next one.

    Why this is safe on a connection other than the projection's (the one holding its leader lock): an
    advance is only submitted for a range holding no event the projection reads, so moving the checkpoint
    across it writes no rows, and the compare-and-set on the old position alone decides, even if leadership
    changed meanwhile: whoever moved it first wins, and a loop whose CAS lost re-reads its checkpoint (as
    after a rebuild's swap or a `catch_up` beside the leader) instead of overwriting it.
    """

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.flushes = 0  # statements run (tests count them)
        self._pending: list[tuple[Advance, asyncio.Future[bool]]] = []
        self._task: asyncio.Task[None] | None = None
        # A spare of the pool (projections.main sizes it), held between flushes.
        self._conn = HeldConnection(pool)

    async def advance_from(self, advance: Advance) -> bool:
        """True if the checkpoint moved from `advance.expected`; False if something else moved it first.
        Raises what the flush raised (a lost connection), for the caller's usual retry path."""
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._pending.append((advance, done))
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="checkpoint-flusher")
        return await done

    async def _run(self) -> None:
        try:
            while self._pending:
                # The loops sharing one feed read resume over several iterations of the event loop (the
                # read's future wakes them through callbacks): wait until an iteration brings no newcomer.
                seen = -1
                while seen != len(self._pending):
                    seen = len(self._pending)
                    await asyncio.sleep(0)
                batch, self._pending = self._pending, []
                await self._flush(batch)
        except asyncio.CancelledError:
            for _, done in self._pending:
                done.cancel()
            self._pending = []
            raise
        finally:
            self._task = None

    async def _flush(self, batch: list[tuple[Advance, asyncio.Future[bool]]]) -> None:
        live = [(a, done) for a, done in batch if not done.done()]  # a cancelled loop waits no more
        if not live:
            return
        try:
            won = await checkpoints.advance_many(await self._conn.get(), [a for a, _ in live])
        except BaseException as exc:
            await self._conn.release()
            for _, done in live:
                if done.done():
                    continue
                if isinstance(exc, asyncio.CancelledError):
                    done.cancel()
                else:
                    done.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        self.flushes += 1
        for a, done in live:
            if not done.done():
                done.set_result(a.name in won)

    async def close(self) -> None:
        if (task := self._task) is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._conn.release()

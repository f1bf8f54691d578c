"""Waits for a task's outcome row: woken by the tasks projection's NOTIFY, with a poll as the fallback."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from typing import Any

import asyncpg

from app.store.listening import listen_forever
from projections.tasks import OUTCOMES_CHANNEL
from projections.tasks_reader import get_outcome

log = logging.getLogger("mm.tasks")
_RETRY_S = 1.0


class OutcomeWaiter:
    """One LISTEN connection per process, shared by every waiting request (keyed by task id).

    NOTIFY is only the wake-up: the row is always read from task_outcomes_view, so a lost notification costs
    at most one poll interval, never a wrong answer. Without a DSN (or while the listener is down) it polls
    faster.
    """

    def __init__(self, pool: asyncpg.Pool, dsn: str | None, *, poll_s: float = 1.0,
                 unlistened_poll_s: float = 0.1) -> None:
        self.pool, self.dsn = pool, dsn
        self.poll_s, self.unlistened_poll_s = poll_s, unlistened_poll_s
        self._waiters: dict[uuid.UUID, set[asyncio.Event]] = {}
        self._listening = False
        self._task: asyncio.Task[None] | None = None

    @property
    def listening(self) -> bool:
        return self._listening

    async def wait(self, task_id: uuid.UUID, timeout_s: float) -> dict[str, Any] | None:
        """The outcome row once there is one, or None after `timeout_s`."""
        self._ensure_listener()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        woken = asyncio.Event()
        self._waiters.setdefault(task_id, set()).add(woken)
        try:
            while True:
                woken.clear()  # before the read: a NOTIFY that lands after it still wakes the wait below
                row = await get_outcome(self.pool, task_id)
                remaining = deadline - loop.time()
                if row is not None or remaining <= 0:
                    return row
                poll = self.poll_s if self._listening else self.unlistened_poll_s
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(woken.wait(), min(remaining, poll))
        finally:
            waiting = self._waiters.get(task_id)
            if waiting is not None:
                waiting.discard(woken)
                if not waiting:
                    del self._waiters[task_id]

    def _wake(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        try:
            task_id = uuid.UUID(payload)
        except ValueError:
            return
        for event in self._waiters.get(task_id, ()):
            event.set()

    def _wake_all(self) -> None:
        for events in self._waiters.values():
            for event in events:
                event.set()

    def _ensure_listener(self) -> None:
        if self._task is None and self.dsn is not None:
            self._task = asyncio.create_task(self._listen(self.dsn), name="task-outcome-listener")

    async def _listen(self, dsn: str) -> None:
        await listen_forever(dsn, OUTCOMES_CHANNEL, self._wake, log=log, name="task outcome listener",
                             retry_s=_RETRY_S, on_up=self._up, on_down=self._down)

    def _up(self) -> None:
        self._listening = True
        self._wake_all()  # anything written while not listening is read now

    def _down(self) -> None:
        self._listening = False

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

"""The worker's actors run on uvloop's event loop (workers/event_loop.py), as the API's and the projector's do."""

from __future__ import annotations

import asyncio

import pytest
from dramatiq.asyncio import get_event_loop_thread

from workers.event_loop import FastAsyncIO

uvloop = pytest.importorskip("uvloop")


def test_the_actors_loop_thread_runs_uvloop_and_runs_coroutines() -> None:
    middleware = FastAsyncIO()
    middleware.before_worker_boot(None, None)
    try:
        thread = get_event_loop_thread()
        assert thread is not None
        assert isinstance(thread.loop, uvloop.Loop)

        async def which_loop() -> asyncio.AbstractEventLoop:
            await asyncio.sleep(0)
            return asyncio.get_running_loop()

        # What an async actor's call goes through: run on the thread's loop, the result handed back.
        assert thread.run_coroutine(which_loop()) is thread.loop
    finally:
        middleware.after_worker_shutdown(None, None)
    assert get_event_loop_thread() is None

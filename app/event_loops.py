"""uvloop's event loop where it is installed (uvicorn[standard] brings it; the API runs on it too).

The projector and the worker spend most of their CPU in asyncpg round trips and socket writes: uvloop took a
fifth off the projector's CPU per event (batches of 40 events, as a busy live feed reads them).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable


def fast_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's `new_event_loop`, or None (asyncio's own loop) where uvloop is not installed."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def new_fast_loop() -> asyncio.AbstractEventLoop:
    factory = fast_loop_factory()
    return factory() if factory is not None else asyncio.new_event_loop()

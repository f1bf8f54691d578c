"""One LISTEN session kept alive: reconnects after any loss, and says when it is up and when it went down."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import asyncpg


async def listen_forever(dsn: str, channel: str, on_notify: Callable[..., Any], *, log: logging.Logger, name: str,
                         retry_s: float, on_up: Callable[[], None] | None = None,
                         on_down: Callable[[], None] | None = None) -> None:
    """Runs until cancelled. `on_up` runs once the session listens (read what was missed while it did not);
    `on_down` once it is lost (NOTIFYs may be missed from then on), before the next attempt `retry_s` later."""
    while True:
        conn: asyncpg.Connection | None = None
        try:
            conn = await asyncpg.connect(dsn)
            closed = asyncio.Event()
            conn.add_termination_listener(lambda _c, ended=closed: ended.set())
            await conn.add_listener(channel, on_notify)
            if on_up is not None:
                on_up()
            await closed.wait()
        except (asyncpg.PostgresError, OSError, asyncpg.InterfaceError) as exc:
            log.warning("%s: %s; reconnecting", name, exc)
        finally:
            if on_down is not None:
                on_down()
            if conn is not None and not conn.is_closed():
                with contextlib.suppress(Exception):
                    await conn.close()
        await asyncio.sleep(retry_s)

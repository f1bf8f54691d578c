"""The worker process's application container, opened lazily on Dramatiq's asyncio event-loop thread."""

from __future__ import annotations

import asyncio

import dramatiq
from dramatiq.asyncio import get_event_loop_thread
from dramatiq.middleware import Middleware

from app.container import Container
from app.settings import get_settings

_container: Container | None = None
_lock: asyncio.Lock | None = None
_dsn_override: str | None = None


def use_database(dsn: str | None) -> None:
    """Point actors at a specific database (tests; `mm up` passes MM_DATABASE_URL instead)."""
    global _dsn_override, _container, _lock
    _dsn_override, _container, _lock = dsn, None, None


async def container() -> Container:
    global _container, _lock
    if _container is not None:
        return _container
    if _lock is None:
        _lock = asyncio.Lock()
    async with _lock:
        if _container is None:
            settings = get_settings()
            dsn = _dsn_override or settings.database_url
            if not dsn:
                raise RuntimeError("workers need MM_DATABASE_URL (mm up and mm worker set it)")
            # A small pool: actors are short and the worker's thread count bounds concurrency anyway.
            _container = await Container.open(settings, dsn, min_size=1, max_size=4)
    return _container


async def close() -> None:
    global _container
    if _container is not None:
        await _container.close()
        _container = None


async def caused_by(c: Container, event_id: str, correlation_id: str | None) -> str | None:
    """The correlation id an actor's commands carry: the triggering event's, which the relay puts in the message
    (a message sent before it did is looked up by the event id), so a trace follows work across hops."""
    if correlation_id:
        return correlation_id
    found: str | None = await c.pool.fetchval(
        "SELECT metadata->>'correlationId' FROM events WHERE event_id = $1::text::uuid", event_id)
    return found


class CloseContainer(Middleware):
    """Closes the container's pool on the event-loop thread before Dramatiq stops that loop."""

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        loop_thread = get_event_loop_thread()
        if loop_thread is not None and _container is not None:
            loop_thread.run_coroutine(close())

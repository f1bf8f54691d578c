"""The worker process's application container, opened lazily on Dramatiq's asyncio event-loop thread."""

from __future__ import annotations

import asyncio

import dramatiq
from dramatiq.asyncio import get_event_loop_thread
from dramatiq.middleware import Middleware

from app.container import Container
from app.outbound import OutboundClient, close_shared_client, configure_shared_client, shared_client
from app.settings import Settings, get_settings
from workers.event_loop import FastAsyncIO

_container: Container | None = None
_lock: asyncio.Lock | None = None
_dsn_override: str | None = None
_settings_override: Settings | None = None


def use_database(dsn: str | None, settings: Settings | None = None) -> None:
    """Point actors at a specific database, and optionally settings (tests; `mm up` passes the environment).
    The outbound client follows the settings' MM_ALLOW_PRIVATE_ENDPOINTS (None: the environment's)."""
    global _dsn_override, _settings_override, _container, _lock
    _dsn_override, _settings_override, _container, _lock = dsn, settings, None, None
    configure_shared_client(allow_private=settings.allow_private_endpoints if settings is not None else None)


def settings() -> Settings:
    return _settings_override or get_settings()


async def container() -> Container:
    global _container, _lock
    if _container is not None:
        return _container
    if _lock is None:
        _lock = asyncio.Lock()
    async with _lock:
        if _container is None:
            dsn = _dsn_override or settings().database_url
            if not dsn:
                raise RuntimeError("workers need MM_DATABASE_URL (mm up and mm worker set it)")
            # A small pool: actors hold a connection only per statement (a task's executor releases it while
            # the seller answers). Actors never LISTEN, lock or SET on it: released connections skip the reset.
            _container = await Container.open(settings(), dsn, stateless_sessions=True, min_size=1, max_size=8)
    return _container


def outbound() -> OutboundClient:
    """The process's outbound client for calls to sellers (app.outbound.shared)."""
    return shared_client()


async def close() -> None:
    global _container
    if _container is not None:
        await _container.close()
        _container = None
    await close_shared_client()


async def caused_by(c: Container, event_id: str, correlation_id: str | None) -> str | None:
    """The correlation id an actor's commands carry: the triggering event's, which the relay puts in the message
    (a message sent before it did is looked up by the event id), so a trace follows work across hops."""
    if correlation_id:
        return correlation_id
    found: str | None = await c.pool.fetchval(
        "SELECT metadata->>'correlationId' FROM events WHERE event_id = $1::text::uuid", event_id)
    return found


class CloseContainer(Middleware):
    """Closes the container's pool (and the outbound connections) on the event-loop thread before Dramatiq
    stops that loop."""

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        loop_thread = get_event_loop_thread()
        if loop_thread is not None:
            loop_thread.run_coroutine(close())


def add_worker_middleware(broker: dramatiq.Broker) -> None:
    """The middleware `mm worker` runs its actors with: the event-loop thread (uvloop), then the container's close
    before that loop stops. The timers bench and the worker tests bind theirs with this too, so they measure and
    test what `mm worker` runs."""
    broker.add_middleware(FastAsyncIO())
    broker.add_middleware(CloseContainer())

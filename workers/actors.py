"""Worker entry module (`mm worker` imports it, as can `dramatiq workers.actors`): the broker, then every actor."""

from __future__ import annotations

from app.settings import get_settings
from workers.broker import configure_broker
from workers.runtime import add_worker_middleware


def broker_url() -> str:
    settings = get_settings()
    url = settings.broker_url or settings.database_url
    if not url:
        raise RuntimeError("set MM_BROKER_URL or MM_DATABASE_URL (mm up sets both for its children)")
    return url


broker = configure_broker(broker_url(), get_settings())
add_worker_middleware(broker)

# Actors bind to the global broker when declared, so these imports must come after configure_broker.
from workers import machines, market, runtime_leases, tasks, tasks_auto, webhooks  # noqa: E402

__all__ = ["broker", "machines", "market", "runtime_leases", "tasks", "tasks_auto", "webhooks"]

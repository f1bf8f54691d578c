"""The one place the Dramatiq broker is chosen, by URL scheme."""

from __future__ import annotations

from urllib.parse import urlsplit

import dramatiq
from dramatiq.brokers.stub import StubBroker

from app.settings import Settings

_SCHEMES = ("postgresql", "postgres", "amqp", "amqps", "redis", "rediss", "stub")


def make_broker(url: str, settings: Settings | None = None) -> dramatiq.Broker:
    """postgresql://|postgres:// -> PostgresBroker, amqp(s):// -> RabbitMQ, redis(s):// -> Redis, stub:// -> stub.

    `settings` tunes the PostgreSQL broker's claim lease (MM_WORKER_CLAIM_LEASE_S); without them the
    settings' defaults apply, which is what a process that only enqueues (the relay) needs.

    Middleware are dramatiq's defaults (AgeLimit, TimeLimit, ShutdownNotifications, Callbacks, Pipelines,
    Retries); Prometheus is deliberately absent because it starts an HTTP server in every worker.
    """
    scheme = urlsplit(url).scheme.lower()
    # Imports are per branch so a deployment only needs the client library of the broker it uses.
    if scheme in ("postgresql", "postgres"):
        from workers.pg_broker import PostgresBroker

        return PostgresBroker(url, lease_seconds=(settings or Settings()).worker_claim_lease_s)
    if scheme in ("amqp", "amqps"):
        from dramatiq.brokers.rabbitmq import RabbitmqBroker

        return RabbitmqBroker(url=url)
    if scheme in ("redis", "rediss"):
        from dramatiq.brokers.redis import RedisBroker

        return RedisBroker(url=url)
    if scheme == "stub":
        return StubBroker()
    shown = url.split("@")[-1] if "@" in url else url  # never echo credentials into logs
    raise ValueError(f"unsupported broker URL scheme {scheme!r} in {shown!r}; expected one of {', '.join(_SCHEMES)}")


def configure_broker(url: str, settings: Settings | None = None) -> dramatiq.Broker:
    """Build the broker for `url` and make it dramatiq's global broker (actors declared later bind to it)."""
    broker = make_broker(url, settings)
    dramatiq.set_broker(broker)
    return broker

"""The one place the Dramatiq broker is chosen, by URL scheme."""

from __future__ import annotations

from urllib.parse import urlsplit

import dramatiq
from dramatiq.brokers.stub import StubBroker

_SCHEMES = ("postgresql", "postgres", "amqp", "amqps", "redis", "rediss", "stub")


def make_broker(url: str) -> dramatiq.Broker:
    """postgresql://|postgres:// -> PostgresBroker, amqp(s):// -> RabbitMQ, redis(s):// -> Redis, stub:// -> stub.

    Middleware are dramatiq's defaults (AgeLimit, TimeLimit, ShutdownNotifications, Callbacks, Pipelines,
    Retries); Prometheus is deliberately absent because it starts an HTTP server in every worker.
    """
    scheme = urlsplit(url).scheme.lower()
    # Imports are per branch so a deployment only needs the client library of the broker it uses.
    if scheme in ("postgresql", "postgres"):
        from workers.pg_broker import PostgresBroker

        return PostgresBroker(url)
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


def configure_broker(url: str) -> dramatiq.Broker:
    """Build the broker for `url` and make it dramatiq's global broker (actors declared later bind to it)."""
    broker = make_broker(url)
    dramatiq.set_broker(broker)
    return broker

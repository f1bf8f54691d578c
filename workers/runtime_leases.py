"""Runtime actors: expire an agent-reported endpoint whose lease ran out (delayed, idempotent)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import dramatiq

from domain.runtime.commands import AGENT
from domain.runtime.endpoint import ACTIVE
from domain.shared.context import CommandContext
from workers import runtime
from workers.runtime import caused_by


async def expire_lease_job(endpoint_id: str, version: int, event_id: str, correlation_id: str | None = None) -> None:
    """Sent by the relay for each agent upsert, due when its lease ends. Redelivery changes nothing twice:
    only a live agent lease that has run out expires, and event ids derive from `event_id`."""
    c = await runtime.container()
    if await c.store.stream_version(uuid.UUID(endpoint_id)) != version:
        # Nearly every timer finds its lease renewed by a later heartbeat (which brought its own timer):
        # one index lookup settles that, without loading the endpoint.
        return
    now = datetime.now(UTC)
    ctx = CommandContext(at=now, actor="worker:expire_runtime_endpoint_lease", causation_id=event_id,
                         correlation_id=await caused_by(c, event_id, correlation_id), is_admin=True)
    endpoint = await c.runtime.expire(ctx, uuid.UUID(endpoint_id))
    if endpoint is None or endpoint.version != version or endpoint.status != ACTIVE or endpoint.source != AGENT:
        return  # expired now or before, renewed by a later upsert (which has its own timer), manual, or deleted
    lease = endpoint.lease_expires_at
    if lease is not None and lease > now:
        # Delivered early (clock skew between relay and worker): come back when it is due.
        expire_runtime_endpoint_lease.send_with_options(
            kwargs={"endpoint_id": endpoint_id, "version": version, "event_id": event_id,
                    "correlation_id": ctx.correlation_id},
            delay=int((lease - now).total_seconds() * 1000) + 1,
        )


expire_runtime_endpoint_lease = dramatiq.actor(
    actor_name="expire_runtime_endpoint_lease",
    queue_name="runtime",
    max_retries=10,
    time_limit=30_000,
    min_backoff=500,
    max_backoff=60_000,
)(expire_lease_job)

"""Machine actors: expire identity challenges whose time is up (delayed, idempotent)."""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime

import dramatiq

from domain.shared.context import CommandContext
from domain.shared.errors import NotFound
from workers import runtime
from workers.runtime import caused_by

log = logging.getLogger("mm.workers")


async def expire_challenge_job(machine_id: str, challenge_id: str, event_id: str,
                               correlation_id: str | None = None) -> None:
    """Sent by the relay for each issued challenge, due at its expiry. Redelivery changes nothing twice:
    the machine only expires an open challenge with this id, and event ids derive from `event_id`."""
    c = await runtime.container()
    now = datetime.now(UTC)
    ctx = CommandContext(at=now, actor="worker:expire_identity_challenge", causation_id=event_id,
                         correlation_id=await caused_by(c, event_id, correlation_id), is_admin=True)
    try:
        machine = await c.machines.get(ctx, uuid.UUID(machine_id))
    except NotFound:
        log.warning("expire_identity_challenge: machine %s is gone; nothing to do", machine_id)
        return
    challenge = machine.challenge
    if challenge is None or str(challenge["id"]) != challenge_id:
        return  # already verified, failed, expired, or replaced
    if challenge["expires_at"] > now:
        # Delivered early (clock skew between relay and worker): come back when it is due.
        delay = int((challenge["expires_at"] - now).total_seconds() * 1000) + 1
        expire_identity_challenge.send_with_options(
            kwargs={"machine_id": machine_id, "challenge_id": challenge_id, "event_id": event_id,
                    "correlation_id": ctx.correlation_id}, delay=delay
        )
        return
    await c.machines.expire_challenge(ctx, uuid.UUID(machine_id), uuid.UUID(challenge_id))


expire_identity_challenge = dramatiq.actor(
    actor_name="expire_identity_challenge",
    queue_name="machines",
    max_retries=10,
    time_limit=30_000,
    min_backoff=500,
    max_backoff=60_000,
)(expire_challenge_job)

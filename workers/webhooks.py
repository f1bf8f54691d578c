"""Webhook delivery actor (queue `webhooks`): drains one endpoint's pending deliveries in log order.

Each wake-up (from the fan-out projection, a retry timer, or a client's retry) takes the endpoint's lease, so
one drainer at a time sends that endpoint's deliveries, oldest first; a failure stops the drain (later ones
wait: order per endpoint) and schedules the next wake-up after exponential backoff with jitter. Delivered rows
are never sent again, so a redelivered wake-up doubles nothing; the Idempotency-Key (the delivery id) lets a
receiver drop the one repeat a crash between its answer and our record can cause.
"""

from __future__ import annotations

import logging
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import dramatiq

from app.audit_cloudevents import CONTENT_TYPE
from app.outbound import OutboundError
from app.services import webhook_deliveries as store
from app.store.types import LogPosition
from domain.shared.context import CommandContext
from domain.webhooks.backoff import next_delay_s
from domain.webhooks.signing import HEADER, signature_header
from projections import checkpoints
from projections.webhook_fanout import WebhookFanoutProjection
from workers import runtime

log = logging.getLogger("mm.workers")
FANOUT = WebhookFanoutProjection.name
LEASE_S = 60.0
AUDIT_LAG_RETRY_MS = 500
FANOUT_LAG_RETRY_MS = 100
LEASE_BUSY_RETRY_MS = 1000
# Deliveries per message: a long backlog is drained by a chain of messages, each well inside time_limit.
MAX_PER_RUN = 100


def _wake(endpoint_id: str, delay_ms: int, fanned_out_to: list[int] | None = None) -> None:
    kwargs: dict[str, Any] = {"endpoint_id": endpoint_id}
    if fanned_out_to is not None:
        kwargs["fanned_out_to"] = fanned_out_to
    drain_webhook_endpoint.send_with_options(kwargs=kwargs, delay=delay_ms)


async def _fanned_out(pool: Any, to: list[int]) -> bool:
    """Has the fan-out committed the batch ending at `to` (so its deliveries are visible)?"""
    async with pool.acquire() as conn:
        at = await checkpoints.position(conn, FANOUT)
    return at is None or at >= LogPosition(to[0], to[1])


async def drain_job(endpoint_id: str, retry_delivery_id: str | None = None,
                    fanned_out_to: list[int] | None = None, **_: Any) -> None:
    """`retry_delivery_id` (a client's retry, via the relay) makes that delivery due now before draining;
    `fanned_out_to` (the fan-out's wake-up, sent before its batch commits) is the position whose deliveries it
    announces: finding nothing pending before that batch is visible, it comes back instead of ending."""
    c, s = await runtime.container(), runtime.settings()
    eid, holder = uuid.UUID(endpoint_id), uuid.uuid4()
    if retry_delivery_id is not None:
        await store.retry_now(c.pool, eid, uuid.UUID(retry_delivery_id))
    if fanned_out_to is not None and not await _fanned_out(c.pool, fanned_out_to):
        # Sent before the fan-out's batch committed: its deliveries are not visible yet, so come back. Asked
        # before the work list is read, never after an empty read: a batch committing between the two would
        # pass this check with its deliveries unseen, left pending with no wake-up to come.
        _wake(endpoint_id, FANOUT_LAG_RETRY_MS, fanned_out_to)
        return
    if not await store.take_lease(c.pool, eid, holder, LEASE_S):
        # Another drainer holds it. It may be past its last look at the work list (about to release), so this
        # wake-up is not dropped: it comes back shortly and drains whatever that one left.
        _wake(endpoint_id, LEASE_BUSY_RETRY_MS, fanned_out_to)
        return
    try:
        for _run in range(MAX_PER_RUN):
            d = await store.next_pending(c.pool, eid)
            if d is None:
                return
            now = datetime.now(UTC)
            if d["next_attempt_at"] > now:
                _wake(endpoint_id, store.due_in_ms(d["next_attempt_at"], now))
                return
            endpoint = await c.webhooks.load(eid)
            if endpoint is None or endpoint.deleted or not endpoint.enabled:
                return  # left pending: re-enabling and a retry wake-up send them, in order
            body = await store.cloudevent_body(c.pool, d["event_id"])
            if body is None:  # the audit projection has not written the record yet
                _wake(endpoint_id, AUDIT_LAG_RETRY_MS)
                return
            if not await _attempt(c, s, d, endpoint, body, endpoint_id):
                return
            await store.take_lease(c.pool, eid, holder, LEASE_S)  # renew between deliveries
        else:
            _wake(endpoint_id, 0)  # more may be pending: the next message goes on after this one releases
    finally:
        await store.release_lease(c.pool, eid, holder)


async def _attempt(c: Any, s: Any, d: Any, endpoint: Any, body: bytes, endpoint_id: str) -> bool:
    """One POST; True when delivered (the drain goes on), False when it failed (a retry is scheduled)."""
    at = datetime.now(UTC)
    header = signature_header(c.webhooks.signing_secrets(endpoint, at), int(at.timestamp()), body)
    started = time.perf_counter()
    status, error_class, error = None, None, None
    try:
        answer = await runtime.outbound().request(
            endpoint.url, idempotency_key=str(d["id"]), content=body, content_type=CONTENT_TYPE,
            headers={HEADER: header}, timeout_s=s.webhook_timeout_s, max_body_bytes=64 * 1024)
        status = answer.status
        if not 200 <= status < 300:
            error_class = "http-status"
    except OutboundError as exc:
        error_class, error = exc.error_class, str(exc)
    duration = int((time.perf_counter() - started) * 1000)
    ok = error_class is None
    first_failed = d["first_failed_at"] or at
    give_up = not ok and at - first_failed > timedelta(seconds=s.webhook_retry_span_s)
    retry_at = None if ok or give_up else at + timedelta(
        seconds=next_delay_s(d["attempts"] + 1, s.webhook_backoff_base_s, s.webhook_backoff_max_s))
    await store.record_attempt(c.pool, d["id"], at, ok=ok, status_code=status, error_class=error_class,
                               error=error, duration_ms=duration, next_attempt_at=retry_at, give_up=give_up)
    if give_up:
        ctx = CommandContext(at=at, actor="worker:drain_webhook_endpoint", is_admin=True)
        reason = f"deliveries failed for longer than {s.webhook_retry_span_s:.0f} s (since {first_failed.isoformat()})"
        await c.webhooks.disable_for_failures(ctx, endpoint.id, reason)
        log.warning("webhook endpoint %s disabled: %s", endpoint.id, reason)
    elif retry_at is not None:
        _wake(endpoint_id, store.due_in_ms(retry_at, datetime.now(UTC)))
    return ok


drain_webhook_endpoint = dramatiq.actor(
    actor_name="drain_webhook_endpoint",
    queue_name="webhooks",
    max_retries=20,
    time_limit=300_000,
    min_backoff=1000,
    max_backoff=300_000,
)(drain_job)

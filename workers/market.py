"""Market order actors: settle a payment (hold escrow, execute the task, record the execution), and the timers
(auto-confirm after the buyer's window, intent expiry). Each re-reads the order's stream and acts only if it
still applies, so redelivery and early timers change nothing twice.

One message carries an order from its proof to its execution: the hold and the task's ExecutionRequested are
one append, and the task runs here through the tasks pipeline's own executor (workers.tasks.run_task), so a
redelivery after a crash resumes the open run (same run id, same Idempotency-Key) and then records the outcome.
"""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime

import dramatiq

from app.services.order_settlement import OrderSettlement
from domain.market.order_states import AWAITING_PAYMENT, EXECUTED, EXECUTING
from domain.shared.errors import NotFound
from projections.relay import MARKET_ACTOR
from workers import runtime
from workers.tasks import TIME_LIMIT_MS, cause_of, context, run_task
from workers.tasks_calls import call_seller

log = logging.getLogger("mm.workers.market")


async def settlement() -> OrderSettlement:
    return (await runtime.container()).order_settlement


async def settle_payment_job(order_id: str, event_id: str, correlation_id: str | None = None) -> None:
    cause, settle, oid = await cause_of(event_id, correlation_id), await settlement(), uuid.UUID(order_id)
    try:
        held = await settle.hold(context(MARKET_ACTOR, cause, f"hold:{order_id}"), oid)
    except NotFound:
        log.warning("%s: order %s is gone; nothing to do", MARKET_ACTOR, order_id)
        return
    if held.order.status != EXECUTING:
        return  # payment failed, or a redelivery after the execution was recorded
    task, run = held.first if held.first is not None else (None, None)
    if task is not None and run is not None:
        # The usual way: the run this hold started, called now; its result and the order's execution are one
        # append (same run id and Idempotency-Key as run_task would use, so a redelivery resumes it there).
        c = await runtime.container()
        result = await call_seller(c, runtime.outbound(), task, run)
        if await settle.finish_first_run(context(MARKET_ACTOR, cause, f"finish:{run['run_id']}"), held,
                                         result) is not None:
            return
        # Not settled here; that attempt may have changed the task and order in memory: the general way
        # below reloads both.
        held.first, reuse = None, None
    else:
        reuse = held.order
    await run_task(held.order.task_id, cause, MARKET_ACTOR, first=held.first)
    outcome = await settle.record_execution(context(MARKET_ACTOR, cause, f"executed:{order_id}"), oid,
                                            held=reuse)
    if outcome is None:
        # The route is used up only when the task settles; run_task returns earlier only if another worker
        # holds the open run. Retry later (dramatiq backoff) rather than wait here.
        raise RuntimeError(f"order {order_id}: its task has not finished yet")


async def auto_confirm_job(order_id: str, event_id: str, correlation_id: str | None = None) -> None:
    cause, settle = await cause_of(event_id, correlation_id), await settlement()
    oid = uuid.UUID(order_id)
    order = await settle.orders.load(oid)
    if order.status != EXECUTED or order.confirm_by is None:
        return  # the buyer confirmed or disputed first
    early_ms = int((order.confirm_by - datetime.now(UTC)).total_seconds() * 1000)
    if early_ms > 0:  # a broker that delivered early (clock skew): look again when it is due
        auto_confirm_order.send_with_options(kwargs={"order_id": order_id, "event_id": event_id,
                                                     "correlation_id": correlation_id}, delay=early_ms + 50)
        return
    await settle.auto_confirm(context(CONFIRM_ACTOR, cause, f"auto-confirm:{order_id}"), oid)


async def expire_intent_job(order_id: str, event_id: str, correlation_id: str | None = None) -> None:
    cause, settle = await cause_of(event_id, correlation_id), await settlement()
    oid = uuid.UUID(order_id)
    order = await settle.orders.load(oid)
    if order.status != AWAITING_PAYMENT:
        return
    expires = order.intent["expires_at"]
    early_ms = int((expires - datetime.now(UTC)).total_seconds() * 1000)
    if early_ms > 0:
        expire_payment_intent.send_with_options(kwargs={"order_id": order_id, "event_id": event_id,
                                                        "correlation_id": correlation_id}, delay=early_ms + 50)
        return
    await settle.orders.cancel(context(EXPIRE_ACTOR, cause, f"expire:{order_id}"), oid,
                               "the payment intent expired", expired=True)


CONFIRM_ACTOR, EXPIRE_ACTOR = "auto_confirm_order", "expire_payment_intent"

settle_order_payment = dramatiq.actor(
    actor_name=MARKET_ACTOR, queue_name="market", max_retries=20, time_limit=TIME_LIMIT_MS, min_backoff=500,
    max_backoff=60_000,
)(settle_payment_job)
auto_confirm_order = dramatiq.actor(
    actor_name=CONFIRM_ACTOR, queue_name="market", max_retries=20, time_limit=60_000, min_backoff=500,
    max_backoff=60_000,
)(auto_confirm_job)
expire_payment_intent = dramatiq.actor(
    actor_name=EXPIRE_ACTOR, queue_name="market", max_retries=20, time_limit=60_000, min_backoff=500,
    max_backoff=60_000,
)(expire_intent_job)

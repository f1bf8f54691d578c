"""The relay: turns recorded events into Dramatiq messages (ids only), keyed by event id for dedupe."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

import asyncpg
import dramatiq
import msgspec

from app.store.types import RecordedEvent
from domain.shared.ids import derived_id
from projections.base import Tables
from projections.one_statement import OneStatementBatch


class Route(Protocol):
    def __call__(self, event: RecordedEvent) -> list[tuple[str, str, dict[str, Any], datetime | None]]: ...


def _machine_routes(event: RecordedEvent) -> list[tuple[str, str, dict[str, Any], datetime | None]]:
    """(queue, actor, kwargs, not-before) for each job an event asks for."""
    if event.type == "machines:Machine.IdentityChallengeIssued":
        expires = datetime.fromisoformat(event.data["expires_at"])
        kwargs = {"machine_id": str(event.stream_id), "challenge_id": event.data["challenge_id"]}
        return [("machines", "expire_identity_challenge", kwargs, expires)]
    return []


def _runtime_routes(event: RecordedEvent) -> list[tuple[str, str, dict[str, Any], datetime | None]]:
    """Each agent lease gets a timer at its expiry; a later heartbeat's upsert brings its own and supersedes
    the earlier one (see SUPERSEDING), and the actor ignores a timer whose lease was renewed, replaced by a
    manual upsert, or deleted."""
    if event.type in _LEASED and event.data.get("lease_expires_at"):
        expires = datetime.fromisoformat(event.data["lease_expires_at"])
        kwargs = {"endpoint_id": str(event.stream_id), "version": event.version}
        return [("runtime", "expire_runtime_endpoint_lease", kwargs, expires)]
    return []


_LEASED = ("runtime:RuntimeEndpoint.Opened", "runtime:RuntimeEndpoint.Upserted")


def _task_routes(event: RecordedEvent) -> list[tuple[str, str, dict[str, Any], datetime | None]]:
    """An auto task is driven from its submission to its outcome by one message (see workers/tasks_auto.py),
    which executes what it requested itself; any other execution request gets one message."""
    kwargs = {"task_id": str(event.stream_id)}
    if event.type == "tasks:Task.Submitted" and event.data.get("auto"):
        # The buyer machine too: the actor reads it with the task, in one statement.
        return [("tasks", AUTO_ACTOR, {**kwargs, "machine_id": str(event.data["machine_id"])}, None)]
    if event.type == "tasks:Task.ExecutionRequested" and event.metadata.get("actor") not in _SELF_EXECUTING:
        return [("tasks", "execute_task", kwargs, None)]
    return []


AUTO_ACTOR = "advance_auto_task"
MARKET_ACTOR = "settle_order_payment"
# Actors that execute the tasks they request themselves (the relay sends nothing for those).
_SELF_EXECUTING = (f"worker:{AUTO_ACTOR}", f"worker:{MARKET_ACTOR}")


def _market_routes(event: RecordedEvent) -> list[tuple[str, str, dict[str, Any], datetime | None]]:
    """A recorded proof of payment -> the settlement actor (hold, execute, record the outcome); the timers: the
    intent's expiry, and the buyer's confirm window after a successful execution (auto-confirm)."""
    kwargs = {"order_id": str(event.stream_id)}
    if event.type == "market:Order.ProofRecorded":
        return [("market", MARKET_ACTOR, kwargs, None)]
    if event.type == "market:Order.PaymentIntentCreated":
        return [("market", "expire_payment_intent", kwargs, datetime.fromisoformat(event.data["expires_at"]))]
    if event.type == "market:Order.Executed" and event.data.get("confirm_by"):
        return [("market", "auto_confirm_order", kwargs, datetime.fromisoformat(event.data["confirm_by"]))]
    return []


def _webhook_routes(event: RecordedEvent) -> list[tuple[str, str, dict[str, Any], datetime | None]]:
    """A client's retry, and an endpoint enabled again, wake its drainer (new deliveries are woken by the
    fan-out projection, projections/webhook_fanout.py)."""
    kwargs: dict[str, Any] = {"endpoint_id": str(event.stream_id)}
    if event.type == "webhooks:WebhookEndpoint.DeliveryRetryRequested":
        return [("webhooks", "drain_webhook_endpoint", {**kwargs, "retry_delivery_id": str(event.data["delivery_id"])},
                 None)]
    if event.type == "webhooks:WebhookEndpoint.Revised" and event.data["enabled"] and "enabled" in event.data[
            "changed"]:
        return [("webhooks", "drain_webhook_endpoint", kwargs, None)]
    return []


ROUTES: list[Route] = [_machine_routes, _runtime_routes, _task_routes, _webhook_routes, _market_routes]

# Timers of which only the one planned for a stream's latest version can still do anything: each is named by
# (actor, stream, version), and the next version's names the one it supersedes. The lease timer of version v
# is a no-op once version v+1 exists (its actor checks the stream's version first), so deleting it before it
# is claimed changes nothing but the work: an agent beating every 30 s on a 60 s lease used to leave one
# timer per beat to fire later and find its lease renewed. The PostgreSQL broker deletes a superseded timer
# still queued (not one already claimed); any other broker delivers it, and the actor ignores it as before.
SUPERSEDING = frozenset({"expire_runtime_endpoint_lease"})


# Every event type some route above may answer with a message (the runner skips the relay's transaction for
# a batch of none of these): keep it in step with ROUTES (tests/unit/test_relay_prefixes.py checks it).
PREFIXES = ("machines:Machine.IdentityChallengeIssued", *_LEASED, "tasks:Task.Submitted",
            "tasks:Task.ExecutionRequested", "webhooks:WebhookEndpoint.DeliveryRetryRequested",
            "webhooks:WebhookEndpoint.Revised", "market:Order.ProofRecorded", "market:Order.PaymentIntentCreated",
            "market:Order.Executed")


class RelayProjection:
    """At-least-once hand-off: a crash between enqueue and checkpoint re-sends the same message id,
    which the broker (PostgreSQL) or the idempotent actor (any broker) absorbs."""

    name = "relay"
    prefixes = PREFIXES
    tables: tuple[str, ...] = ()

    def __init__(self, broker: dramatiq.Broker, now: Callable[[], datetime] = lambda: datetime.now(UTC), *,
                 same_database: bool = False) -> None:
        """`same_database`: the broker is the PostgreSQL one, its table in the database this projection's session
        is on; the hand-off then goes on that session (see apply_many)."""
        self.broker = broker
        self.now = now
        self._on_session = getattr(broker, "enqueue_many_on", None) if same_database else None

    async def apply_many(self, conn: asyncpg.Connection, events: Sequence[RecordedEvent], t: Tables) -> None:
        planned = [p for event in events for p in planned_messages(event)]
        if not planned:
            return
        outgoing, superseded = self._outgoing(planned)
        if self._on_session is not None and conn is not None:
            # On the projection's own session, ahead of the batch's compare-and-set (inside a catch-up batch's
            # transaction): no thread hop and no psycopg client, whose Python-side work per message was most of
            # the relay's CPU. Measured under heartbeat load, the thread path made the relay the slowest
            # projection of a live round (one batch took 182 ms). The projector's sessions commit without waiting
            # for the WAL flush; the messages are still never lost: WAL is flushed in order, so the checkpoint that
            # follows them is durable only if they are, and a lost checkpoint sends them again, under the same ids.
            session = conn.unbatched() if isinstance(conn, OneStatementBatch) else conn
            await self._on_session(session, outgoing, cancel=superseded)
            return
        # One hop to a thread per batch (the brokers' clients block), not one per message.
        await asyncio.to_thread(self._enqueue_all, outgoing, superseded)

    def _outgoing(self, planned: list[Planned]) -> tuple[list[tuple[dramatiq.Message[Any], int | None]], list[str]]:
        """The batch's messages, less those a later one of the same batch supersedes, and the ids of the
        timers they supersede that earlier batches sent."""
        superseded = {p.supersedes for p in planned if p.supersedes is not None}
        out = []
        for p in planned:
            if p.message_id in superseded:
                continue  # never sent: the stream's next version, in this same batch, plans the live timer
            message: dramatiq.Message[Any] = dramatiq.Message(
                queue_name=p.queue, actor_name=p.actor, args=(), kwargs=p.kwargs, options={}, message_id=p.message_id,
            )
            delay = None
            if p.not_before is not None:
                delay = max(0, int((p.not_before - self.now()).total_seconds() * 1000))
            out.append((message, delay))
        sent = {p.message_id for p in planned}
        return out, sorted(superseded - sent)

    def _enqueue_all(self, outgoing: list[tuple[dramatiq.Message[Any], int | None]], superseded: list[str]) -> None:
        many = getattr(self.broker, "enqueue_many", None)
        if many is not None:  # the PostgreSQL broker: the whole batch in one statement, one commit
            many(outgoing, cancel=superseded)
            return
        for message, delay in outgoing:  # a superseded timer is delivered, and its actor ignores it
            self.broker.enqueue(message, delay=delay)


class Planned(msgspec.Struct, frozen=True, kw_only=True):
    """A message the relay sends for an event: a pure function of the event, so a causation trace can show
    it without asking the broker (which, RabbitMQ or Redis, keeps no history)."""

    queue: str
    actor: str
    kwargs: dict[str, Any]
    not_before: datetime | None
    message_id: str
    supersedes: str | None = None  # the message id of the stream's previous timer of this actor (SUPERSEDING)


def planned_messages(event: RecordedEvent) -> list[Planned]:
    if not event.type.startswith(PREFIXES):
        return []  # most events of a batch: no route to ask, no envelope to build
    routed = [(index, job) for route in ROUTES for index, job in enumerate(route(event))]
    if not routed:
        return []
    # The actor's commands take the triggering event as their causation and its correlation id as theirs, so
    # everything one request set off, however many hops later, shares that request's correlation id.
    envelope = {"event_id": str(event.event_id)}
    if event.metadata.get("correlationId"):
        envelope["correlation_id"] = str(event.metadata["correlationId"])
    out = []
    for index, (queue, actor, kwargs, not_before) in routed:
        message_id, supersedes = _names(event, actor, index)
        out.append(Planned(queue=queue, actor=actor, kwargs={**kwargs, **envelope}, not_before=not_before,
                           message_id=message_id, supersedes=supersedes))
    return out


def _names(event: RecordedEvent, actor: str, index: int) -> tuple[str, str | None]:
    """A message's id, derived from the event, and the id of the message it supersedes: for a SUPERSEDING
    actor's timer, both are named by the stream's version (this one's, and the one before)."""
    if actor not in SUPERSEDING:
        return str(derived_id("relay", event.event_id, actor, index)), None
    previous = timer_id(actor, event.stream_id, event.version - 1) if event.version > 1 else None
    return timer_id(actor, event.stream_id, event.version), previous


# Each heartbeat's timer names the one it supersedes, which the stream's previous heartbeat named as its own: kept
# here, that id is not derived again (a SHA-1 and a UUID, about a quarter of the relay's Python work per heartbeat
# before). Room for that many streams beating at once; a miss only derives it again.
@functools.lru_cache(maxsize=1 << 16)
def timer_id(actor: str, stream_id: Any, version: int) -> str:
    """The message id of a SUPERSEDING actor's timer for one version of a stream (one per version at most)."""
    return str(derived_id("relay-timer", actor, stream_id, version))

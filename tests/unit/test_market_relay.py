"""The relay's market routes: which message each order event asks for, and when (pure: no broker)."""

from __future__ import annotations

import uuid
from datetime import timedelta

from app.store.types import RecordedEvent
from projections.relay import planned_messages
from tests.factories import FIXED_AT


def recorded(kind: str, data: dict[str, object], actor: str = "api") -> RecordedEvent:
    return RecordedEvent(position=1, tx_id=1, event_id=uuid.uuid4(), stream_id=uuid.uuid4(), stream_type="x",
                         version=2, type=kind, data={"timestamp": FIXED_AT.isoformat(), **data},
                         metadata={"actor": actor, "correlationId": "corr"}, recorded_at=FIXED_AT)


def test_a_recorded_proof_sends_the_settlement_actor_at_once() -> None:
    e = recorded("market:Order.ProofRecorded", {})
    [m] = planned_messages(e)
    assert (m.queue, m.actor, m.not_before) == ("market", "settle_order_payment", None)
    assert m.kwargs == {"order_id": str(e.stream_id), "event_id": str(e.event_id), "correlation_id": "corr"}
    assert planned_messages(e)[0].message_id == m.message_id  # the same event: the same message id (dedupe)


def test_timers_are_delayed_to_the_intent_expiry_and_the_confirm_deadline() -> None:
    expires = FIXED_AT + timedelta(minutes=15)
    [m] = planned_messages(recorded("market:Order.PaymentIntentCreated", {"expires_at": expires.isoformat()}))
    assert (m.actor, m.not_before) == ("expire_payment_intent", expires)
    due = FIXED_AT + timedelta(days=1)
    [m] = planned_messages(recorded("market:Order.Executed", {"confirm_by": due.isoformat()}))
    assert (m.actor, m.not_before) == ("auto_confirm_order", due)
    assert planned_messages(recorded("market:Order.Executed", {"confirm_by": None})) == []  # failed: refunded


def test_the_settlement_actor_executes_its_own_task_requests() -> None:
    mine = recorded("tasks:Task.ExecutionRequested", {}, actor="worker:settle_order_payment")
    assert planned_messages(mine) == []
    [m] = planned_messages(recorded("tasks:Task.ExecutionRequested", {}, actor="api"))
    assert m.actor == "execute_task"

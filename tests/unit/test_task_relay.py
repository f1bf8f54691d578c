"""The relay's task routes: one message per auto submission, naming the task and its buyer machine (pure)."""

from __future__ import annotations

import uuid

from app.store.types import RecordedEvent
from projections.relay import planned_messages
from tests.factories import FIXED_AT


def submitted(auto: bool, machine_id: uuid.UUID) -> RecordedEvent:
    return RecordedEvent(position=1, tx_id=1, event_id=uuid.uuid4(), stream_id=uuid.uuid4(), stream_type="x",
                         version=1, type="tasks:Task.Submitted",
                         data={"timestamp": FIXED_AT.isoformat(), "auto": auto, "machine_id": str(machine_id)},
                         metadata={"actor": "api", "correlationId": "corr"}, recorded_at=FIXED_AT)


def test_an_auto_submission_sends_one_message_naming_the_task_and_its_buyer() -> None:
    buyer = uuid.uuid4()
    e = submitted(True, buyer)
    [m] = planned_messages(e)
    assert (m.queue, m.actor, m.not_before) == ("tasks", "advance_auto_task", None)
    assert m.kwargs == {"task_id": str(e.stream_id), "machine_id": str(buyer), "event_id": str(e.event_id),
                        "correlation_id": "corr"}
    assert planned_messages(submitted(False, buyer)) == []  # a client drives a manual task

"""Rate windows and policy decisions in task events, given/when/then: exact counts, stored form, old events."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import msgspec

from app.store.mapper import event_type, rebuild, to_data
from app.store.types import RecordedEvent
from domain.policies.decision import PolicyDecision
from domain.policies.rate_window import RateWindow, bucket_of, window_id
from domain.policies.values import Action, Decision, RuleResult
from domain.tasks.aggregate import Task
from domain.tasks.commands import Constraints, CreateTask, PolicyCheck, PolicyRef
from domain.tasks.scoring import rank
from tests.factories import FIXED_AT
from tests.unit.test_task_aggregate import candidate

T0 = FIXED_AT
POLICY, ACCOUNT = uuid.uuid4(), uuid.uuid4()


def stored(aggregate: Any, stream_type: str, strip: tuple[str, ...] = ()) -> Any:
    """The aggregate's events through JSON storage (optionally without fields, as an older writer stored them)."""
    events = aggregate.collect_events()
    rows = []
    for i, e in enumerate(events, start=1):
        data = msgspec.json.decode(msgspec.json.encode(to_data(e)))
        rows.append(RecordedEvent(position=i, tx_id=1, event_id=uuid.uuid4(), stream_id=aggregate.id,
                                  stream_type=stream_type, version=e.originator_version, type=event_type(e),
                                  data={k: v for k, v in data.items() if k not in strip}, metadata={},
                                  recorded_at=T0))
    return rebuild(rows)


def test_a_window_counts_the_trailing_period_and_each_task_once() -> None:
    bucket = bucket_of(T0, 60)
    window = RateWindow.open(POLICY, ACCOUNT, 60, bucket, T0)
    assert window.id == window_id(POLICY, ACCOUNT, 60, bucket)
    a, b, c = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    window.count(a, T0 - timedelta(seconds=59))
    window.count(b, T0)
    window.count(b, T0)  # a retried command: recorded once
    assert [type(e).__name__ for e in window.collect_events()] == ["Opened", "Counted", "Counted"]
    assert window.recent(T0, None) == 2
    assert window.recent(T0, b) == 1  # a task's own earlier count is not held against it
    assert window.recent(T0 + timedelta(seconds=1), c) == 1  # `a` has left the trailing minute
    window.count(c, T0 + timedelta(seconds=2))
    assert window.recent(T0, None) == 3  # a creation a moment "later" (another server's clock) happened too


def test_a_window_replays_from_its_stored_form() -> None:
    window = RateWindow.open(POLICY, ACCOUNT, 60, 7, T0)
    window.count(uuid.uuid4(), T0)
    again = stored(window, "policies:RateWindow")
    assert isinstance(again, RateWindow) and again.created == window.created and again.per_seconds == 60


def test_the_decisions_travel_in_the_task_events_and_older_events_decode_without_them() -> None:
    check = PolicyCheck(decision_id=uuid.uuid4(), action="create-task", effect="would-deny",
                        policies=(PolicyRef(policy_id=POLICY, version=3, mode="shadow"),))
    cmd = CreateTask(task_id=uuid.uuid4(), account_id=ACCOUNT, machine_id=uuid.uuid4(), capability="translate",
                     input={"text": "hi"}, constraints=Constraints(), decision=check)
    task = Task.submit(cmd, T0)
    cands = [candidate(5)]
    task.discover(cands, [], T0)
    resolved_by = PolicyCheck(decision_id=uuid.uuid4(), action="resolve", effect="allow")
    task.resolve(uuid.uuid4(), rank(cands, {}, "cheapest"), T0, resolved_by)
    task.request_execution(T0)
    again = stored(task, "tasks:Task")
    assert isinstance(again, Task) and again.decisions == [check, resolved_by] == task.decisions

    old = Task.submit(msgspec.structs.replace(cmd, decision=None), T0)
    old.discover(cands, [], T0)
    old.resolve(uuid.uuid4(), rank(cands, {}, "cheapest"), T0)
    legacy = stored(old, "tasks:Task", strip=("decision",))
    assert isinstance(legacy, Task) and legacy.decisions == [] and legacy.status == "resolved"


def test_a_recorded_denial_keeps_the_command_and_older_ones_decode_without_it() -> None:
    result = RuleResult(policy_id=POLICY, policy_version=2, policy_name="p", mode="enforce", rule_index=0,
                        rule_type="capabilities", outcome="deny", reason="capability 'x' is on the deny list")
    decision = Decision(decision_id=uuid.uuid4(), action="create-task", effect="deny", denied_by=result,
                        results=[result])
    action = Action(kind="create-task", at=T0, account_id=ACCOUNT, machine_id=uuid.uuid4(), capability="x")
    record = PolicyDecision.record(decision, ACCOUNT, action.machine_id, None, T0, action)
    assert record is not None and record.id == decision.decision_id
    again = stored(record, "policies:PolicyDecision")
    assert isinstance(again, PolicyDecision) and again.command == action and again.denied_by == result
    old = PolicyDecision.record(decision, ACCOUNT, action.machine_id, None, T0)
    legacy = stored(old, "policies:PolicyDecision", strip=("command",))
    assert isinstance(legacy, PolicyDecision) and legacy.command is None and legacy.denials == [result]


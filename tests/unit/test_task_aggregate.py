"""Task aggregate, given/when/then on events: the lifecycle, route steps, runs, fallbacks and outcomes."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest

from app.store.mapper import event_type, rebuild, to_data
from app.store.types import RecordedEvent
from domain.shared.errors import InvalidTransition, ValidationFailed
from domain.shared.money import Money
from domain.tasks import rules
from domain.tasks.aggregate import CANCELLED, EXECUTING, FAILED, RESOLVED, SUCCEEDED, Task
from domain.tasks.commands import Candidate, Constraints, CreateTask, RunResult, SellerRecord, StartRun
from domain.tasks.errors import NoRoute, RouteRequired, TaskNotCancellable
from domain.tasks.scoring import rank
from tests.factories import FIXED_AT

T0 = FIXED_AT
ACCOUNT, BUYER = uuid.uuid4(), uuid.uuid4()


def candidate(amount: int, seller: uuid.UUID | None = None) -> Candidate:
    return Candidate(listing_id=uuid.uuid4(), node_id=uuid.uuid4(), seller_machine_id=seller or uuid.uuid4(),
                     seller_account_id=uuid.uuid4(), seller_name="s", capability="translate", provider_key="p",
                     price=Money(amount, "USD"))


def new_task(fallbacks: int = 2, **constraints: Any) -> Task:
    cmd = CreateTask(task_id=uuid.uuid4(), account_id=ACCOUNT, machine_id=BUYER, capability=" translate ",
                     input={"text": "hi"}, constraints=Constraints(fallbacks=fallbacks, **constraints))
    return Task.submit(cmd, T0)


def names(task: Task) -> list[str]:
    return [type(e).__name__ for e in task.collect_events()]


def resolved(cands: list[Candidate], fallbacks: int = 2, strategy: str = "cheapest") -> Task:
    task = new_task(fallbacks=fallbacks, strategy=strategy)
    task.discover(cands, [], T0)
    task.resolve(uuid.uuid4(), rank(cands, {}, strategy), T0)
    return task


def executing(cands: list[Candidate], fallbacks: int = 2) -> Task:
    task = resolved(cands, fallbacks)
    assert task.request_execution(T0) is True
    return task


def result(run_id: uuid.UUID, status: int | None, error: str | None = None) -> RunResult:
    return RunResult(run_id=run_id, http_status=status, latency_ms=12, error_class=error,
                     response_digest=None, body={"ok": status})


def test_submit_normalises_and_validates() -> None:
    task = new_task(provider_keys=("OpenAI", "openai"))
    assert task.capability == "translate" and task.constraints.provider_keys == ("openai",)
    assert names(task) == ["Submitted"] and task.status == "queued"
    with pytest.raises(ValidationFailed):
        new_task(fallbacks=6)
    with pytest.raises(ValidationFailed):
        new_task(timeout_ms=99)
    with pytest.raises(ValidationFailed):
        new_task(strategy="random")


def test_resolve_needs_discovery_and_a_candidate() -> None:
    task = new_task()
    with pytest.raises(InvalidTransition):
        task.resolve(uuid.uuid4(), rank([], {}, "balanced"), T0)
    task.discover([], [], T0)
    with pytest.raises(NoRoute):
        task.resolve(uuid.uuid4(), rank([], {}, "balanced"), T0)
    assert names(task) == ["Submitted", "Discovered"]


def test_route_is_the_best_then_the_requested_number_of_fallbacks() -> None:
    cands = [candidate(300), candidate(100), candidate(200), candidate(400)]
    task = resolved(cands, fallbacks=2)
    assert task.status == RESOLVED and task.route is not None
    assert [s.price.amount for s in task.route["steps"]] == [100, 200, 300]
    assert [s.rank for s in task.route["ranked"]] == [1, 2, 3, 4]  # every candidate explained, not only the route


def test_execute_without_a_route_is_refused_and_a_second_request_records_nothing() -> None:
    task = new_task()
    with pytest.raises(RouteRequired):
        task.request_execution(T0)
    task = executing([candidate(1)])
    assert task.status == EXECUTING and task.request_execution(T0) is False


def test_success_records_the_run_and_the_outcome() -> None:
    task = executing([candidate(1)])
    task.collect_events()
    run = task.next_run(StartRun(run_id=uuid.uuid4(), endpoint_id=None), T0)
    assert run is not None
    assert task.finish_run(result(run["run_id"], 200), T0) is True
    assert names(task) == ["RunStarted", "RunFinished", "Succeeded"] and task.status == SUCCEEDED
    assert task.finish_run(result(run["run_id"], 200), T0) is False  # a finished run is never recorded twice
    assert task.next_run(StartRun(run_id=uuid.uuid4(), endpoint_id=None), T0) is None


def test_an_open_run_is_handed_out_again_under_the_same_id() -> None:
    task = executing([candidate(1)])
    first = task.next_run(StartRun(run_id=uuid.uuid4(), endpoint_id=None), T0)
    again = task.next_run(StartRun(run_id=uuid.uuid4(), endpoint_id=None), T0)
    assert first is not None and again is not None and again["run_id"] == first["run_id"]


@pytest.mark.parametrize(("status", "error", "code"), [
    (500, "http-5xx", rules.UPSTREAM_FAILED), (429, "http-4xx", rules.UPSTREAM_FAILED),
    (None, "connect", rules.UPSTREAM_FAILED), (None, "timeout", rules.UPSTREAM_TIMEOUT),
])
def test_retryable_failures_fall_back_then_fail_with_the_last_code(status: int | None, error: str,
                                                                 code: str) -> None:
    task = executing([candidate(1), candidate(2)], fallbacks=1)
    for _ in range(2):
        run = task.next_run(StartRun(run_id=uuid.uuid4(), endpoint_id=None), T0)
        assert run is not None
        task.finish_run(result(run["run_id"], status, error), T0)
    assert task.status == FAILED and task.outcome is not None and task.outcome["code"] == code
    assert [r["attempt"] for r in task.runs] == [1, 2]


def test_a_fallback_that_succeeds_settles_the_task() -> None:
    task = executing([candidate(1), candidate(2)], fallbacks=1)
    run = task.next_run(StartRun(run_id=uuid.uuid4(), endpoint_id=None), T0)
    assert run is not None
    task.finish_run(result(run["run_id"], 503, "http-5xx"), T0)
    assert task.status == EXECUTING
    run = task.next_run(StartRun(run_id=uuid.uuid4(), endpoint_id=None), T0)
    assert run is not None and run["attempt"] == 2
    task.finish_run(result(run["run_id"], 200), T0)
    assert task.status == SUCCEEDED


@pytest.mark.parametrize(("status", "code"), [(400, rules.UPSTREAM_REJECTED), (422, rules.UPSTREAM_REJECTED),
                                              (401, rules.UPSTREAM_AUTH_FAILED), (403, rules.UPSTREAM_AUTH_FAILED)])
def test_a_seller_refusal_is_final_without_trying_fallbacks(status: int, code: str) -> None:
    task = executing([candidate(1), candidate(2)])
    run = task.next_run(StartRun(run_id=uuid.uuid4(), endpoint_id=None), T0)
    assert run is not None
    task.finish_run(result(run["run_id"], status, "http-4xx"), T0)
    assert task.status == FAILED and task.outcome is not None and task.outcome["code"] == code
    assert len(task.runs) == 1


def test_cancel_before_execution_only() -> None:
    task = resolved([candidate(1)])
    task.collect_events()
    task.cancel("changed my mind", T0)
    assert task.status == CANCELLED and names(task) == ["Cancelled"]
    task.cancel(None, T0 + timedelta(seconds=1))  # again: nothing more
    assert names(task) == []
    with pytest.raises(TaskNotCancellable):
        executing([candidate(1)]).cancel(None, T0)


def test_events_round_trip_through_the_stored_form() -> None:
    """Candidates, scores and runs survive JSON storage: a replay rebuilds the same task."""
    task = executing([candidate(5), candidate(7)])
    run = task.next_run(StartRun(run_id=uuid.uuid4(), endpoint_id=uuid.uuid4()), T0)
    assert run is not None
    task.finish_run(result(run["run_id"], 200), T0)
    stored = [RecordedEvent(position=i, tx_id=1, event_id=uuid.uuid4(), stream_id=task.id, stream_type="task",
                            version=e.originator_version, type=event_type(e), data=to_data(e), metadata={},
                            recorded_at=T0)
              for i, e in enumerate(task.collect_events(), start=1)]
    again = rebuild(stored)
    assert isinstance(again, Task) and again.status == SUCCEEDED
    assert again.route is not None and again.route["steps"] == task.route["steps"]  # type: ignore[index]
    assert again.route["ranked"] == task.route["ranked"]  # type: ignore[index]
    assert again.runs == task.runs and again.constraints == task.constraints


def test_cooling_down_sellers_are_excluded_with_a_reason() -> None:
    hot, cold = candidate(1), candidate(2)
    ranking = rank([hot, cold], {hot.seller_machine_id: SellerRecord(runs=5, success_rate=0.0, cooling_down=True)},
                   "balanced")
    assert [s.candidate for s in ranking.ranked] == [cold]
    assert ranking.excluded[0].listing_id == hot.listing_id and "cooling down" in ranking.excluded[0].reason

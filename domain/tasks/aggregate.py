"""The Task aggregate: a buyer machine's request for a capability, from discovery to its outcome."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from eventsourcing.domain import Aggregate

from domain.shared.errors import InvalidTransition
from domain.tasks import rules
from domain.tasks.commands import Candidate, Constraints, CreateTask, Dropped, PolicyCheck, RunResult, StartRun
from domain.tasks.errors import NoRoute, RouteRequired, TaskNotCancellable
from domain.tasks.scoring import Ranking, Scored

QUEUED, DISCOVERED, RESOLVED, EXECUTING = "queued", "discovered", "resolved", "executing"
SUCCEEDED, FAILED, CANCELLED = "succeeded", "failed", "cancelled"
FINISHED = frozenset({SUCCEEDED, FAILED, CANCELLED})
NO_ROUTE = "NO_ROUTE"


class Task(Aggregate):
    TOPIC = "tasks:Task"

    class Created(Aggregate.Created):
        TOPIC = "tasks:Task.Created"  # required by eventsourcing once TOPIC is set; never triggered

    class Event(Aggregate.Event):
        TOPIC = "tasks:Task.Event"

    class Submitted(Aggregate.Created):
        """Public name task.created."""

        TOPIC = "tasks:Task.Submitted"
        account_id: uuid.UUID
        machine_id: uuid.UUID
        capability: str
        input: Any
        constraints: Constraints
        auto: bool
        decision: PolicyCheck | None = None  # added later: older events decode without one

    class Discovered(Aggregate.Event):
        TOPIC = "tasks:Task.Discovered"
        candidates: list[Candidate]
        dropped: list[Dropped]

        def apply(self, aggregate: Any) -> None:
            aggregate.candidates, aggregate.dropped = list(self.candidates), list(self.dropped)
            aggregate.status = DISCOVERED

    class Resolved(Aggregate.Event):
        """The route (steps: the chosen candidate, then the fallbacks in order) and why every candidate placed
        where it did: a replay reproduces the decision without the read models it was made from."""

        TOPIC = "tasks:Task.Resolved"
        route_id: uuid.UUID
        strategy: str
        steps: list[Candidate]
        ranked: list[Scored]
        excluded: list[Dropped]
        decision: PolicyCheck | None = None  # the policy decision that allowed this route

        def apply(self, aggregate: Any) -> None:
            if self.decision is not None:
                aggregate.decisions.append(self.decision)
            aggregate.route = {"route_id": self.route_id, "strategy": self.strategy, "steps": list(self.steps),
                               "ranked": list(self.ranked), "excluded": list(self.excluded),
                               "resolved_at": self.timestamp}
            aggregate.status = RESOLVED

    class ExecutionRequested(Aggregate.Event):
        TOPIC = "tasks:Task.ExecutionRequested"
        decision: PolicyCheck | None = None  # the policy decision that allowed execution (re-judged)

        def apply(self, aggregate: Any) -> None:
            if self.decision is not None:
                aggregate.decisions.append(self.decision)
            aggregate.status = EXECUTING

    class RunStarted(Aggregate.Event):
        TOPIC = "tasks:Task.RunStarted"
        run_id: uuid.UUID
        attempt: int
        listing_id: uuid.UUID
        seller_machine_id: uuid.UUID
        seller_account_id: uuid.UUID
        capability: str
        provider_key: str
        endpoint_id: uuid.UUID | None

        def apply(self, aggregate: Any) -> None:
            aggregate.runs.append({"run_id": self.run_id, "attempt": self.attempt, "listing_id": self.listing_id,
                                   "seller_machine_id": self.seller_machine_id, "status": "started",
                                   "started_at": self.timestamp})

    class RunFinished(Aggregate.Event):
        TOPIC = "tasks:Task.RunFinished"
        run_id: uuid.UUID
        attempt: int
        listing_id: uuid.UUID
        seller_machine_id: uuid.UUID
        seller_account_id: uuid.UUID
        capability: str
        provider_key: str
        succeeded: bool
        http_status: int | None
        latency_ms: int
        error_class: str | None
        retryable: bool
        response_digest: str | None
        body: Any
        receipt: str | None = None  # absent from runs recorded before receipts were kept

        def apply(self, aggregate: Any) -> None:
            run = aggregate.runs[-1]
            run.update(status="succeeded" if self.succeeded else "failed", http_status=self.http_status,
                       error_class=self.error_class, body=self.body, finished_at=self.timestamp,
                       response_digest=self.response_digest, receipt=self.receipt)

    class Succeeded(Aggregate.Event):
        """The output is the finishing run's body (recorded once, in RunFinished)."""

        TOPIC = "tasks:Task.Succeeded"
        run_id: uuid.UUID
        http_status: int

        def apply(self, aggregate: Any) -> None:
            aggregate.status = SUCCEEDED
            aggregate.outcome = {"status": SUCCEEDED, "run_id": self.run_id, "http_status": self.http_status,
                                 "code": None, "detail": None, "finished_at": self.timestamp}

    class Failed(Aggregate.Event):
        TOPIC = "tasks:Task.Failed"
        run_id: uuid.UUID | None
        code: str
        http_status: int | None
        detail: str

        def apply(self, aggregate: Any) -> None:
            aggregate.status = FAILED
            aggregate.outcome = {"status": FAILED, "run_id": self.run_id, "http_status": self.http_status,
                                 "code": self.code, "detail": self.detail, "finished_at": self.timestamp}

    class Cancelled(Aggregate.Event):
        TOPIC = "tasks:Task.Cancelled"
        reason: str | None

        def apply(self, aggregate: Any) -> None:
            aggregate.status = CANCELLED

    def __init__(self, account_id: uuid.UUID, machine_id: uuid.UUID, capability: str, input: Any,
                 constraints: Constraints, auto: bool, decision: PolicyCheck | None = None) -> None:
        self.account_id, self.machine_id, self.capability = account_id, machine_id, capability
        self.input, self.constraints, self.auto = input, constraints, auto
        self.status = QUEUED
        self.candidates: list[Candidate] = []
        self.dropped: list[Dropped] = []
        self.route: dict[str, Any] | None = None
        self.runs: list[dict[str, Any]] = []
        self.outcome: dict[str, Any] | None = None
        # The policy decisions that let its commands through, in order (allow or would-deny, with their ids).
        self.decisions: list[PolicyCheck] = [decision] if decision is not None else []

    # --- decisions -------------------------------------------------------------------------------

    @classmethod
    def submit(cls, cmd: CreateTask, at: datetime) -> Task:
        capability = rules.check_capability(cmd.capability)
        rules.check_input(cmd.input)
        constraints = rules.check_constraints(cmd.constraints)
        return cls._create(cls.Submitted, id=cmd.task_id, timestamp=at, account_id=cmd.account_id,
                           machine_id=cmd.machine_id, capability=capability, input=cmd.input,
                           constraints=constraints, auto=cmd.auto, decision=cmd.decision)

    def discover(self, candidates: list[Candidate], dropped: list[Dropped], at: datetime) -> None:
        """Discovery may run again until a route is resolved (a seller may have appeared since)."""
        self._from({QUEUED, DISCOVERED}, "discover")
        self.trigger_event(self.Discovered, timestamp=at, candidates=candidates, dropped=dropped)

    def plan_route(self, ranking: Ranking) -> list[Candidate]:
        """The steps a route would take (dry runs use this too); NO_ROUTE when nothing is left to try."""
        if self.status == QUEUED:
            raise InvalidTransition("discover this task before resolving it", status=self.status, action="resolve")
        self._from({DISCOVERED, RESOLVED}, "resolve")
        if not ranking.ranked:
            why = "; ".join(f"{d.listing_id}: {d.reason}" for d in [*self.dropped, *ranking.excluded])
            raise NoRoute("no candidate is left to route to" + (f" ({why})" if why else
                                                                  ": discovery found no listing"))
        return [s.candidate for s in ranking.ranked[: 1 + self.constraints.fallbacks]]

    def resolve(self, route_id: uuid.UUID, ranking: Ranking, at: datetime,
                decision: PolicyCheck | None = None) -> None:
        steps = self.plan_route(ranking)
        self.trigger_event(self.Resolved, timestamp=at, route_id=route_id, strategy=self.constraints.strategy,
                           steps=steps, ranked=list(ranking.ranked), excluded=list(ranking.excluded),
                           decision=decision)

    def request_execution(self, at: datetime, decision: PolicyCheck | None = None) -> bool:
        """False (nothing recorded) when execution was already requested: the caller waits on the same outcome."""
        if self.status in {EXECUTING, SUCCEEDED, FAILED}:
            return False
        if self.status in {QUEUED, DISCOVERED}:
            raise RouteRequired("resolve a route for this task before executing it", status=self.status)
        self._from({RESOLVED}, "execute")
        self.trigger_event(self.ExecutionRequested, timestamp=at, decision=decision)
        return True

    def next_run(self, cmd: StartRun, at: datetime) -> dict[str, Any] | None:
        """The run to call now: the open one again (a redelivery re-sends under the same id), else a new one on
        the next step of the route; None when the task is no longer executing."""
        if self.status != EXECUTING:
            return None
        if self.runs and self.runs[-1]["status"] == "started":
            return self.runs[-1]
        assert self.route is not None
        step: Candidate = self.route["steps"][len(self.runs)]
        self.trigger_event(self.RunStarted, timestamp=at, run_id=cmd.run_id, attempt=len(self.runs) + 1,
                           listing_id=step.listing_id, seller_machine_id=step.seller_machine_id,
                           seller_account_id=step.seller_account_id, capability=step.capability,
                           provider_key=step.provider_key, endpoint_id=cmd.endpoint_id)
        return self.runs[-1]

    def finish_run(self, result: RunResult, at: datetime) -> bool:
        """Records the run's result and, when it settles the task, the outcome. False if already recorded."""
        if not self.runs or self.runs[-1]["run_id"] != result.run_id or self.runs[-1]["status"] != "started":
            return False
        assert self.route is not None
        step: Candidate = self.route["steps"][len(self.runs) - 1]
        verdict = rules.classify(result.http_status, result.error_class)
        self.trigger_event(self.RunFinished, timestamp=at, run_id=result.run_id, attempt=len(self.runs),
                           listing_id=step.listing_id, seller_machine_id=step.seller_machine_id,
                           seller_account_id=step.seller_account_id, capability=step.capability,
                           provider_key=step.provider_key, succeeded=verdict.succeeded,
                           http_status=result.http_status, latency_ms=result.latency_ms,
                           error_class=result.error_class, retryable=verdict.retryable,
                           response_digest=result.response_digest, body=result.body, receipt=result.receipt)
        if verdict.succeeded:
            assert result.http_status is not None
            self.trigger_event(self.Succeeded, timestamp=at, run_id=result.run_id, http_status=result.http_status)
        elif not verdict.retryable or len(self.runs) >= len(self.route["steps"]):
            assert verdict.code is not None
            self.trigger_event(self.Failed, timestamp=at, run_id=result.run_id, code=verdict.code,
                               http_status=result.http_status, detail=_failure_detail(verdict.code, result,
                                                                                      len(self.runs)))
        return True

    def give_up(self, code: str, detail: str, at: datetime) -> bool:
        """An auto task that cannot go on (e.g. NO_ROUTE) fails on the record instead of waiting forever."""
        if self.status not in {QUEUED, DISCOVERED, RESOLVED}:
            return False
        self.trigger_event(self.Failed, timestamp=at, run_id=None, code=code, http_status=None, detail=detail)
        return True

    def cancel(self, reason: str | None, at: datetime) -> None:
        if self.status == CANCELLED:
            return
        if self.status not in {QUEUED, DISCOVERED, RESOLVED}:
            raise TaskNotCancellable(f"a task that is {self.status} can no longer be cancelled", status=self.status)
        self.trigger_event(self.Cancelled, timestamp=at, reason=reason)

    def _from(self, allowed: set[str], action: str) -> None:
        if self.status not in allowed:
            raise InvalidTransition(f"cannot {action} a task that is {self.status}", status=self.status,
                                    action=action)


def _failure_detail(code: str, result: RunResult, attempts: int) -> str:
    tried = f"after {attempts} attempt{'s' if attempts != 1 else ''}"
    if code == rules.UPSTREAM_REJECTED:
        return f"the seller refused the input with HTTP {result.http_status}"
    if code == rules.UPSTREAM_AUTH_FAILED:
        return f"the seller refused the platform's credentials with HTTP {result.http_status}"
    if code == rules.UPSTREAM_TIMEOUT:
        return f"the last seller did not answer in time ({tried})"
    last = f"HTTP {result.http_status}" if result.http_status is not None else result.error_class
    return f"every seller on the route failed ({tried}; last: {last})"

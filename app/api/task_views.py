"""Task views from either source: the aggregate (command responses) or a read-model row (GETs), same shape."""

from __future__ import annotations

from typing import Any

import msgspec

from app.api.policy_views import decision_view
from app.api.schemas_tasks import (
    CandidateView,
    ConstraintsView,
    DroppedView,
    Explanation,
    OutcomeView,
    RouteView,
    RunView,
    ScoredView,
    Strategy,
    TaskStatus,
    TaskView,
)
from app.services.tasks import RoutePreview
from domain.tasks.aggregate import Task
from domain.tasks.commands import Candidate, Constraints, Dropped
from domain.tasks.scoring import Scored


def _candidates(value: Any) -> list[CandidateView]:
    return [CandidateView.of(c) for c in msgspec.convert(value, list[Candidate])]


def _dropped(value: Any) -> list[DroppedView]:
    return [DroppedView.of(d) for d in msgspec.convert(value, list[Dropped])]


def _ranked(value: Any) -> list[ScoredView]:
    return [ScoredView.of(s) for s in msgspec.convert(value, list[Scored])]


def task_of(task: Task) -> TaskView:
    return TaskView(
        id=task.id, machine_id=task.machine_id, account_id=task.account_id, capability=task.capability,
        input=task.input, constraints=ConstraintsView.of(task.constraints), auto=task.auto,
        status=TaskStatus(task.status), candidates_count=len(task.candidates),
        candidates=[CandidateView.of(c) for c in task.candidates], dropped=[DroppedView.of(d) for d in task.dropped],
        route_id=task.route["route_id"] if task.route else None, runs_count=len(task.runs),
        outcome_code=task.outcome["code"] if task.outcome else None, version=task.version,
        created_at=task.created_on, updated_at=task.modified_on)


def task_row(r: dict[str, Any]) -> TaskView:
    return TaskView(
        id=r["id"], machine_id=r["machine_id"], account_id=r["account_id"], capability=r["capability"],
        input=r["input"], constraints=ConstraintsView.of(msgspec.convert(r["constraints"], Constraints)),
        auto=r["auto"], status=TaskStatus(r["status"]), candidates_count=r["candidates_count"],
        candidates=_candidates(r["candidates"]), dropped=_dropped(r["dropped"]), route_id=r["route_id"],
        runs_count=r["runs_count"], outcome_code=r["outcome_code"], version=r["version"],
        created_at=r["created_at"], updated_at=r["updated_at"])


def route_of(task: Task) -> RouteView:
    """The route the task has recorded (after resolve)."""
    route = task.route
    assert route is not None
    steps = [CandidateView.of(c) for c in route["steps"]]
    return RouteView(
        id=route["route_id"], task_id=task.id, machine_id=task.machine_id, capability=task.capability,
        strategy=Strategy(route["strategy"]), dry_run=False, chosen=steps[0], steps=steps,
        explanation=Explanation(ranked=[ScoredView.of(s) for s in route["ranked"]],
                                excluded=[DroppedView.of(d) for d in route["excluded"]],
                                dropped=[DroppedView.of(d) for d in task.dropped]),
        created_at=route["resolved_at"])


def route_preview(p: RoutePreview) -> RouteView:
    steps = [CandidateView.of(c) for c in p.steps]
    return RouteView(
        id=None, task_id=p.task.id, machine_id=p.task.machine_id, capability=p.task.capability,
        strategy=Strategy(p.task.constraints.strategy), dry_run=True, chosen=steps[0], steps=steps,
        explanation=Explanation(ranked=[ScoredView.of(s) for s in p.ranking.ranked],
                                excluded=[DroppedView.of(d) for d in p.ranking.excluded],
                                dropped=[DroppedView.of(d) for d in p.task.dropped]),
        created_at=None, policy=decision_view(p.decision, p.evaluated_at) if p.decision and p.evaluated_at else None)


def route_row(r: dict[str, Any]) -> RouteView:
    steps = _candidates(r["steps"])
    return RouteView(
        id=r["id"], task_id=r["task_id"], machine_id=r["machine_id"], capability=r["capability"],
        strategy=Strategy(r["strategy"]), dry_run=False, chosen=steps[0], steps=steps,
        explanation=Explanation(ranked=_ranked(r["ranked"]), excluded=_dropped(r["excluded"]),
                                dropped=_dropped(r["dropped"])),
        created_at=r["created_at"])


def run_row(r: dict[str, Any]) -> RunView:
    return RunView(**r)


def outcome_row(r: dict[str, Any]) -> OutcomeView:
    return OutcomeView(task_id=r["task_id"], machine_id=r["machine_id"], capability=r["capability"],
                       status=r["status"], code=r["code"], detail=r["detail"], run_id=r["run_id"],
                       http_status=r["http_status"], output=r["output"], finished_at=r["finished_at"])

"""Policies on the task pipeline: the action each task command is, and discovery's policy screen."""

from __future__ import annotations

import uuid
from datetime import datetime

from domain.policies.evaluation import evaluate, in_scope
from domain.policies.rules import ENFORCE
from domain.policies.values import DENY, Action, ActionKind, Decision, PolicyVersion, Reputation, Seller, Usage
from domain.shared.ids import NAMESPACE
from domain.tasks.aggregate import Task
from domain.tasks.commands import Candidate, Dropped, PolicyCheck, PolicyRef, SellerRecord


def task_action(kind: ActionKind, task: Task, labels: dict[str, str], at: datetime, step: Candidate | None = None,
                record: SellerRecord | None = None) -> Action:
    """What a policy judges about one command on `task`: the buyer, the capability and, once a seller is
    chosen (`step`), the seller, its price snapshot, provider key and observed reputation."""
    return Action(
        kind=kind, at=at, account_id=task.account_id, machine_id=task.machine_id, labels=labels,
        capability=task.capability,
        seller=Seller(machine_id=step.seller_machine_id, account_id=step.seller_account_id) if step else None,
        price=step.price if step else None, provider_key=step.provider_key if step else None,
        reputation=(Reputation(runs=record.runs, success_rate=record.success_rate) if record else Reputation())
        if step else None,
    )


def policy_screen(task: Task, labels: dict[str, str], candidates: list[Candidate],
                  records: dict[uuid.UUID, SellerRecord], governing: list[PolicyVersion],
                  at: datetime) -> tuple[list[Candidate], list[Dropped]]:
    """Candidates an enforced policy forbids leave, each with the policy, rule and reason in the record.

    Judged per candidate without usage counters (cumulative spend is judged when a route commits to a price);
    shadow objections do not drop a candidate.
    """
    kept, dropped = [], []
    for c in candidates:
        action = task_action("resolve", task, labels, at, c, records.get(c.seller_machine_id))
        decision = evaluate(NAMESPACE, action, governing, Usage())
        first = next((x for x in decision.results if x.outcome == DENY and x.mode == ENFORCE), None)
        if first is None:
            kept.append(c)
        else:
            dropped.append(Dropped(listing_id=c.listing_id, seller_machine_id=c.seller_machine_id,
                                   reason=f"policy '{first.policy_name}' ({first.policy_id}) v{first.policy_version}"
                                          f" rule {first.rule_index} {first.rule_type}: {first.reason}"))
    return kept, dropped


def policy_check(decision: Decision, action: Action, governing: list[PolicyVersion]) -> PolicyCheck:
    """The decision as a task event carries it: its id, its effect and the policy versions that judged."""
    judged = [p for p in governing if in_scope(p, action.account_id, action.machine_id, action.labels)]
    return PolicyCheck(decision_id=decision.decision_id, action=decision.action, effect=decision.effect,
                       policies=tuple(PolicyRef(policy_id=p.policy_id, version=p.version, mode=p.mode)
                                      for p in judged))

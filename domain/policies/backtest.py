"""Backtest: replay recorded task and order actions, in log order, against one policy; count what it would deny.

The policy is judged as if enforced. Counters are simulated from the replayed history itself (the prices the
policy would have let through in each calendar period, the task creations in each trailing window), so the
answer does not depend on the budgets that the real history kept under other policies. As enforcement keeps
them, counters are per account and count only the actions the policy governs (its scope, at that moment).
"""

from __future__ import annotations

import uuid
from collections import deque

import msgspec

from domain.policies import rules as r
from domain.policies.evaluation import evaluate, in_scope, period_start
from domain.policies.rules import ENFORCE
from domain.policies.values import DENY, Action, PolicyVersion, Usage, rate_key, spend_key
from domain.shared.ids import NAMESPACE

MAX_SAMPLES = 20


class Replayed(msgspec.Struct, frozen=True, kw_only=True):
    """One recorded action: the task (and order, for an `order` action) it belongs to and what a policy would
    have judged."""

    task_id: uuid.UUID
    action: Action
    order_id: uuid.UUID | None = None


class Sample(msgspec.Struct, frozen=True, kw_only=True):
    task_id: uuid.UUID
    order_id: uuid.UUID | None
    action: str
    rule_index: int
    rule_type: str
    reason: str
    at: str


class Report(msgspec.Struct, kw_only=True):
    evaluated: dict[str, int] = msgspec.field(default_factory=dict)  # action -> how many were replayed
    denied: dict[str, int] = msgspec.field(default_factory=dict)  # action -> how many would have been denied
    denied_by_rule: dict[str, int] = msgspec.field(default_factory=dict)  # rule type -> denials
    denied_amounts: dict[str, int] = msgspec.field(default_factory=dict)  # currency -> minor units refused
    # action -> currency -> minor units refused (what orders alone would not have paid, say)
    denied_amounts_by_action: dict[str, dict[str, int]] = msgspec.field(default_factory=dict)
    samples: list[Sample] = msgspec.field(default_factory=list)


def backtest(policy: PolicyVersion, history: list[Replayed]) -> Report:
    enforced = msgspec.structs.replace(policy, mode=ENFORCE)
    report = Report()
    spent_of: dict[uuid.UUID, dict[tuple[str, str, str], int]] = {}  # account -> (period, currency, start) -> spent
    created_of: dict[uuid.UUID, dict[int, deque[float]]] = {}  # account -> per-seconds window -> creation times
    for item in history:
        a = item.action
        spent, created = spent_of.setdefault(a.account_id, {}), created_of.setdefault(a.account_id, {})
        usage = Usage(spent=_spent(enforced, a, spent), tasks=_recent(enforced, a, created))
        decision = evaluate(NAMESPACE, a, [enforced], usage)
        report.evaluated[a.kind] = report.evaluated.get(a.kind, 0) + 1
        first = decision.denied_by if decision.effect == DENY else None
        if first is None:
            if in_scope(enforced, a.account_id, a.machine_id, a.labels):
                _count(enforced, a, spent, created)
            continue
        report.denied[a.kind] = report.denied.get(a.kind, 0) + 1
        report.denied_by_rule[first.rule_type] = report.denied_by_rule.get(first.rule_type, 0) + 1
        if a.price is not None:
            report.denied_amounts[a.price.currency] = report.denied_amounts.get(a.price.currency, 0) + a.price.amount
            by = report.denied_amounts_by_action.setdefault(a.kind, {})
            by[a.price.currency] = by.get(a.price.currency, 0) + a.price.amount
        if len(report.samples) < MAX_SAMPLES:
            report.samples.append(Sample(task_id=item.task_id, order_id=item.order_id, action=a.kind,
                                         rule_index=first.rule_index, rule_type=first.rule_type, reason=first.reason,
                                         at=a.at.isoformat()))
    return report


def _spend_rules(p: PolicyVersion) -> list[r.SpendLimit]:
    return [x for x in p.rules if isinstance(x, r.SpendLimit) and x.period != "order"]


def _key(x: r.SpendLimit, a: Action) -> tuple[str, str, str]:
    return x.period, x.amount.currency, period_start(x.period, a.at).isoformat()


def _spent(p: PolicyVersion, a: Action, spent: dict[tuple[str, str, str], int]) -> dict[str, int]:
    return {spend_key(p.policy_id, x.period): spent.get(_key(x, a), 0) for x in _spend_rules(p)}


def _recent(p: PolicyVersion, a: Action, created: dict[int, deque[float]]) -> dict[str, int]:
    out = {}
    now = a.at.timestamp()
    for x in p.rules:
        if isinstance(x, r.RateLimit):
            window = created.setdefault(x.per_seconds, deque())
            while window and window[0] <= now - x.per_seconds:
                window.popleft()
            out[rate_key(p.policy_id, x.per_seconds)] = len(window)
    return out


def _count(p: PolicyVersion, a: Action, spent: dict[tuple[str, str, str], int],
           created: dict[int, deque[float]]) -> None:
    """What an allowed action adds to the simulated counters."""
    if a.kind in ("resolve", "order") and a.price is not None:
        for x in _spend_rules(p):
            if x.amount.currency == a.price.currency:
                spent[_key(x, a)] = spent.get(_key(x, a), 0) + a.price.amount
    if a.kind in ("create-task", "order"):
        for window in created.values():
            window.append(a.at.timestamp())

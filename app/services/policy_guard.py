"""Enforcement: one `authorize` the task service calls before a command, and releasing spend on failure.

Decisions use the same pure functions as POST /policies/evaluate; a refusal is recorded (policy.denied) and
raised as POLICY_DENIED, a shadow objection (policy.would-deny) is saved with the command that goes ahead.
Spend limits read exact budgets (their own streams) and a committing command reserves its price on them in
the same append, so concurrent commits cannot overshoot a cap: the loser of a race re-judges on fresh state.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Protocol, runtime_checkable

from eventsourcing.domain import Aggregate

from app.services.policies import PolicySource
from app.store.repository import Repository
from domain.policies import rules as r
from domain.policies.budget import SpendBudget, budget_id
from domain.policies.decision import PolicyDecision
from domain.policies.errors import PolicyDenied
from domain.policies.evaluation import evaluate, period_start
from domain.policies.values import DENY, Action, Decision, PolicyVersion, Usage, rate_key, spend_key
from domain.shared.context import CommandContext
from domain.shared.errors import NotFound
from domain.shared.ids import derived_id, new_id

# The commands that commit to a price: their reservations are saved with them.
COMMITTING = frozenset({"resolve", "order"})


@runtime_checkable
class UsageSource(Protocol):
    async def tasks_created_since(self, account_id: uuid.UUID, since: datetime) -> int:
        """From the tasks read model: a projection lag behind, so rate limits are approximate."""

    async def budgets_reserved_by(self, task_id: uuid.UUID) -> list[uuid.UUID]: ...


class Authorization:
    """An allowed (or only shadow-objected) decision, and what to save with the command."""

    def __init__(self, decision: Decision, extras: list[Aggregate]) -> None:
        self.decision, self.extras = decision, extras


class PolicyGuard:
    def __init__(self, repo: Repository, policies: PolicySource, usage: UsageSource) -> None:
        self.repo, self.policies, self.counts = repo, policies, usage

    async def governing(self, action: Action) -> list[PolicyVersion]:
        return await self.policies.governing(action.account_id, action.machine_id, action.labels)

    async def authorize(self, ctx: CommandContext, action: Action, subject_id: uuid.UUID | None) -> Authorization:
        """Raises POLICY_DENIED (after recording policy.denied) when an enforced policy refuses the action."""
        governing = await self.governing(action)
        usage, budgets = await self.counters(action, governing, subject_id)
        # A retried request (same idempotency key) derives the same decision id, so it records one decision.
        decision_id = (derived_id("decision", ctx.account_id, ctx.idempotency_key, action.kind, subject_id)
                       if ctx.idempotency_key else new_id())
        decision = evaluate(decision_id, action, governing, usage)
        record = PolicyDecision.record(decision, action.account_id, action.machine_id, subject_id, ctx.at)
        if decision.effect == DENY:
            assert record is not None and decision.denied_by is not None
            await self.repo.save(record, ctx)
            first = decision.denied_by
            raise PolicyDenied(f"policy {first.policy_name} ({first.policy_id}) refuses this {action.kind}: "
                               f"{first.reason}", policy_id=str(first.policy_id), rule=first.rule_type,
                               rule_index=first.rule_index, policy_version=first.policy_version,
                               reason=first.reason, decision_id=str(decision.decision_id))
        extras: list[Aggregate] = [record] if record else []
        if action.kind in COMMITTING and action.price is not None and subject_id is not None:
            for budget in {id(b): b for b in budgets.values()}.values():
                budget.reserve(subject_id, action.price, ctx.at)
                extras.append(budget)
        return Authorization(decision, extras)

    async def counters(self, action: Action, governing: list[PolicyVersion],
                       subject_id: uuid.UUID | None = None) -> tuple[Usage, dict[str, SpendBudget]]:
        """The usage the governing rules need (budgets exact, task counts from the read model), and the budgets."""
        budgets = await self._budgets(action, governing)
        usage = Usage(spent={k: b.spent_besides(subject_id) for k, b in budgets.items()},
                      tasks=await self._recent_tasks(action, governing))
        return usage, budgets

    async def usage(self, action: Action, governing: list[PolicyVersion]) -> Usage:
        return (await self.counters(action, governing))[0]

    async def release(self, ctx: CommandContext, task_id: uuid.UUID) -> list[Aggregate]:
        """The budgets a failed or cancelled task had reserved, each with the release recorded."""
        released: list[Aggregate] = []
        for bid in await self.counts.budgets_reserved_by(task_id):
            budget = await self.repo.get(SpendBudget, bid, what="budget")
            if budget.release(task_id, ctx.at):
                released.append(budget)
        return released

    async def _budgets(self, action: Action, governing: list[PolicyVersion]) -> dict[str, SpendBudget]:
        """The budget of each calendar-period spend limit this action's price falls under (opened if new)."""
        out: dict[str, SpendBudget] = {}
        by_id: dict[uuid.UUID, SpendBudget] = {}
        if action.price is None:
            return out
        for p in governing:
            for rule in p.rules:
                if not isinstance(rule, r.SpendLimit) or rule.period == "order":
                    continue
                if rule.amount.currency != action.price.currency:
                    continue  # judged (and refused) by the rule itself; nothing to count
                start = period_start(rule.period, action.at)
                bid = budget_id(p.policy_id, action.account_id, rule.period, rule.amount.currency, start)
                if bid not in by_id:
                    try:
                        by_id[bid] = await self.repo.get(SpendBudget, bid, what="budget")
                    except NotFound:
                        by_id[bid] = SpendBudget.open(p.policy_id, action.account_id, rule.period,
                                                      rule.amount.currency, start, action.at)
                out[spend_key(p.policy_id, rule.period)] = by_id[bid]
        return out

    async def _recent_tasks(self, action: Action, governing: list[PolicyVersion]) -> dict[str, int]:
        """One count per distinct window, however many rate limits share it."""
        tasks: dict[str, int] = {}
        if action.kind not in ("create-task", "order"):
            return tasks
        counts: dict[int, int] = {}
        for p in governing:
            for rule in p.rules:
                if isinstance(rule, r.RateLimit):
                    if rule.per_seconds not in counts:
                        since = action.at - timedelta(seconds=rule.per_seconds)
                        counts[rule.per_seconds] = await self.counts.tasks_created_since(action.account_id, since)
                    tasks[rate_key(p.policy_id, rule.per_seconds)] = counts[rule.per_seconds]
        return tasks

"""Enforcement: one `authorize` the task service calls before a command, and releasing spend on failure.

Decisions use the same pure functions as POST /policies/evaluate; a refusal is recorded (policy.denied) and
raised as POLICY_DENIED, a shadow objection (policy.would-deny) is saved with the command that goes ahead.
Spend limits read exact budgets (their own streams) and a committing command reserves its price on them in
the same append, so concurrent commits cannot overshoot a cap: the loser of a race re-judges on fresh state.
Rate limits work the same way on rate windows (domain.policies.rate_window): a creating command is counted
in the append that records it, per (policy, account), so only the commands a policy governs count.
"""

from __future__ import annotations

import uuid
from typing import Protocol, runtime_checkable

from eventsourcing.domain import Aggregate

from app.services.policies import PolicySource
from app.store.repository import Repository
from domain.policies import rules as r
from domain.policies.budget import SpendBudget, budget_id
from domain.policies.decision import PolicyDecision
from domain.policies.errors import PolicyDenied
from domain.policies.evaluation import evaluate, period_start
from domain.policies.rate_window import RateWindow, bucket_of, window_id
from domain.policies.values import DENY, Action, Decision, PolicyVersion, Usage, rate_key, spend_key
from domain.shared.context import CommandContext
from domain.shared.errors import NotFound
from domain.shared.ids import derived_id, new_id

# The commands that commit to a price: their reservations are saved with them.
COMMITTING = frozenset({"resolve", "order"})
# The commands that create a task: rate limits count them, in the same append.
CREATING = frozenset({"create-task", "order"})


@runtime_checkable
class UsageSource(Protocol):
    async def budgets_reserved_by(self, task_id: uuid.UUID) -> list[uuid.UUID]: ...


class Authorization:
    """An allowed (or only shadow-objected) decision, and what to save with the command."""

    def __init__(self, decision: Decision, extras: list[Aggregate], governing: list[PolicyVersion] | None = None
                 ) -> None:
        self.decision, self.extras = decision, extras
        self.governing = governing or []  # the policy versions judged (a command's event names them)


class Counters:
    """What the governing rules count, read from their own streams: spend budgets and rate windows."""

    def __init__(self, usage: Usage, budgets: dict[str, SpendBudget], windows: list[tuple[RateWindow, RateWindow]]
                 ) -> None:
        self.usage, self.budgets, self.windows = usage, budgets, windows


class PolicyGuard:
    def __init__(self, repo: Repository, policies: PolicySource, usage: UsageSource) -> None:
        self.repo, self.policies, self.counts = repo, policies, usage

    async def governing(self, action: Action) -> list[PolicyVersion]:
        return await self.policies.governing(action.account_id, action.machine_id, action.labels)

    async def check(self, ctx: CommandContext, action: Action, subject_id: uuid.UUID | None
                    ) -> tuple[Decision, list[PolicyVersion]]:
        """The decision `authorize` would take now, with the policy versions judged; records nothing (dry runs)."""
        governing = await self.governing(action)
        counters = await self._counters(action, governing, subject_id)
        return evaluate(self._decision_id(ctx, action, subject_id), action, governing, counters.usage), governing

    async def authorize(self, ctx: CommandContext, action: Action, subject_id: uuid.UUID | None) -> Authorization:
        """Raises POLICY_DENIED (after recording policy.denied) when an enforced policy refuses the action."""
        governing = await self.governing(action)
        counters = await self._counters(action, governing, subject_id)
        decision = evaluate(self._decision_id(ctx, action, subject_id), action, governing, counters.usage)
        record = PolicyDecision.record(decision, action.account_id, action.machine_id, subject_id, ctx.at, action)
        if decision.effect == DENY:
            assert record is not None and decision.denied_by is not None
            await self.repo.save(record, ctx)
            raise refusal(decision)
        extras: list[Aggregate] = [record] if record else []
        if action.kind in COMMITTING and action.price is not None and subject_id is not None:
            for budget in {id(b): b for b in counters.budgets.values()}.values():
                budget.reserve(subject_id, action.price, ctx.at)
                extras.append(budget)
        if action.kind in CREATING and subject_id is not None:
            for current, following in counters.windows:
                current.count(subject_id, action.at)
                following.count(subject_id, action.at)
                extras += [current, following]
        return Authorization(decision, extras, governing)

    @staticmethod
    def _decision_id(ctx: CommandContext, action: Action, subject_id: uuid.UUID | None) -> uuid.UUID:
        # A retried request (same idempotency key) derives the same decision id, so it records one decision.
        return (derived_id("decision", ctx.account_id, ctx.idempotency_key, action.kind, subject_id)
                if ctx.idempotency_key else new_id())

    async def counters(self, action: Action, governing: list[PolicyVersion],
                       subject_id: uuid.UUID | None = None) -> tuple[Usage, dict[str, SpendBudget]]:
        """The usage the governing rules need (exact: budgets and rate windows), and the budgets."""
        counters = await self._counters(action, governing, subject_id)
        return counters.usage, counters.budgets

    async def _counters(self, action: Action, governing: list[PolicyVersion],
                        subject_id: uuid.UUID | None) -> Counters:
        budgets = await self._budgets(action, governing)
        tasks, windows = await self._windows(action, governing, subject_id)
        usage = Usage(spent={k: b.spent_besides(subject_id) for k, b in budgets.items()}, tasks=tasks)
        return Counters(usage, budgets, windows)

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

    async def _windows(self, action: Action, governing: list[PolicyVersion], subject_id: uuid.UUID | None
                       ) -> tuple[dict[str, int], list[tuple[RateWindow, RateWindow]]]:
        """Per rate-limit of a creating action: the tasks in its trailing window (exact: the window's stream),
        and the window's current and following bucket (where this action would be counted)."""
        tasks: dict[str, int] = {}
        windows: dict[uuid.UUID, tuple[RateWindow, RateWindow]] = {}
        if action.kind not in CREATING:
            return tasks, []
        for p in governing:
            for rule in p.rules:
                if not isinstance(rule, r.RateLimit):
                    continue
                bucket = bucket_of(action.at, rule.per_seconds)
                wid = window_id(p.policy_id, action.account_id, rule.per_seconds, bucket)
                if wid not in windows:
                    windows[wid] = (await self._window(p.policy_id, action, rule.per_seconds, bucket),
                                    await self._window(p.policy_id, action, rule.per_seconds, bucket + 1))
                tasks[rate_key(p.policy_id, rule.per_seconds)] = windows[wid][0].recent(action.at, subject_id)
        return tasks, list(windows.values())

    async def _window(self, policy_id: uuid.UUID, action: Action, per_seconds: int, bucket: int) -> RateWindow:
        try:
            return await self.repo.get(RateWindow, window_id(policy_id, action.account_id, per_seconds, bucket),
                                       what="rate window")
        except NotFound:
            return RateWindow.open(policy_id, action.account_id, per_seconds, bucket, action.at)


def refusal(decision: Decision, dry_run: bool = False) -> PolicyDenied:
    """POLICY_DENIED naming the first enforced deny. A dry run's decision is not recorded, so it has no id."""
    first = decision.denied_by
    assert first is not None
    prefix = "dry run, nothing recorded: " if dry_run else ""
    return PolicyDenied(f"{prefix}policy {first.policy_name} ({first.policy_id}) refuses this {decision.action}: "
                        f"{first.reason}", policy_id=str(first.policy_id), rule=first.rule_type,
                        rule_index=first.rule_index, policy_version=first.policy_version, reason=first.reason,
                        decision_id=None if dry_run else str(decision.decision_id))

"""Enforcement: one `authorize` the task service calls before a command, and discovery's policy screen.

Decisions use the same pure functions as POST /policies/evaluate; a refusal is recorded (policy.denied) and
raised as POLICY_DENIED, a shadow objection (policy.would-deny) is saved with the command that goes ahead.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Protocol, runtime_checkable

from app.services.policies import PolicySource
from app.store.repository import Repository
from domain.policies import rules as r
from domain.policies.decision import PolicyDecision
from domain.policies.errors import PolicyDenied
from domain.policies.evaluation import evaluate, period_start
from domain.policies.values import DENY, Action, Decision, PolicyVersion, Usage, rate_key, spend_key
from domain.shared.context import CommandContext
from domain.shared.ids import derived_id, new_id


@runtime_checkable
class UsageSource(Protocol):
    """The acting account's counters (read models: a projection lag behind, and not reserved atomically)."""

    async def tasks_created_since(self, account_id: uuid.UUID, since: datetime) -> int: ...

    async def spent_since(self, account_id: uuid.UUID, currency: str, since: datetime,
                          excluding_task: uuid.UUID | None) -> int: ...


class Authorization:
    """An allowed (or only shadow-objected) decision, and what to save with the command (None: nothing)."""

    def __init__(self, decision: Decision, record: PolicyDecision | None) -> None:
        self.decision, self.record = decision, record


class PolicyGuard:
    def __init__(self, repo: Repository, policies: PolicySource, usage: UsageSource) -> None:
        self.repo, self.policies, self.usage = repo, policies, usage

    async def governing(self, action: Action) -> list[PolicyVersion]:
        return await self.policies.governing(action.account_id, action.machine_id, action.labels)

    async def authorize(self, ctx: CommandContext, action: Action, subject_id: uuid.UUID | None) -> Authorization:
        """Raises POLICY_DENIED (after recording policy.denied) when an enforced policy refuses the action."""
        governing = await self.governing(action)
        usage = await self._usage(action, governing, subject_id)
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
        return Authorization(decision, record)

    async def _usage(self, action: Action, governing: Sequence[PolicyVersion],
                     subject_id: uuid.UUID | None) -> Usage:
        """Only the counters the governing rules need, each read once."""
        spent: dict[str, int] = {}
        tasks: dict[str, int] = {}
        for p in governing:
            for rule in p.rules:
                if isinstance(rule, r.SpendLimit) and rule.period != "order" and action.price is not None:
                    since = period_start(rule.period, action.at)
                    spent[spend_key(p.policy_id, rule.period)] = await self.usage.spent_since(
                        action.account_id, rule.amount.currency, since, subject_id)
                elif isinstance(rule, r.RateLimit) and action.kind in ("create-task", "order"):
                    since = action.at - timedelta(seconds=rule.per_seconds)
                    tasks[rate_key(p.policy_id, rule.per_seconds)] = await self.usage.tasks_created_since(
                        action.account_id, since)
        return Usage(spent=spent, tasks=tasks)

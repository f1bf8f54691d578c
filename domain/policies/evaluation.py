"""Pure policy evaluation: which policies govern a machine, and what their rules say about one action."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from domain.policies import rules as r
from domain.policies.values import (
    ALLOW,
    CREATE_TASK,
    DENY,
    NOT_APPLICABLE,
    ORDER,
    PASS,
    WOULD_DENY,
    Action,
    Decision,
    PolicyVersion,
    RuleResult,
    Usage,
    rate_key,
    spend_key,
)
from domain.shared.money import Money

# Rules counting tasks judge the commands that create one.
_CREATING = frozenset({CREATE_TASK, ORDER})


def in_scope(policy: PolicyVersion, account_id: uuid.UUID, machine_id: uuid.UUID, labels: dict[str, str]) -> bool:
    """Disabled policies govern nothing; account policies govern only their own account's machines."""
    if policy.mode == r.DISABLED or (not policy.platform and policy.account_id != account_id):
        return False
    scope = policy.scope
    if isinstance(scope, r.MachinesScope):
        return machine_id in scope.machine_ids
    if isinstance(scope, r.LabelsScope):
        return all(labels.get(k) == v for k, v in scope.labels.items())
    return True


def period_start(period: str, at: datetime) -> datetime:
    """The start of the UTC calendar period holding `at` (weeks start on Monday, ISO 8601)."""
    day = at.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "week":
        return day - timedelta(days=day.weekday())
    if period == "month":
        return day.replace(day=1)
    return day


def evaluate(decision_id: uuid.UUID, action: Action, policies: Sequence[PolicyVersion], usage: Usage) -> Decision:
    """Every rule of every policy in scope, judged; denies win over allows, shadow only ever would-deny.

    Platform policies come first, then the caller's order, so "the first deny" is stable.
    """
    governing = [p for p in policies if in_scope(p, action.account_id, action.machine_id, action.labels)]
    governing.sort(key=lambda p: not p.platform)
    results = [_judge(p, i, rule, action, usage) for p in governing for i, rule in enumerate(p.rules)]
    enforced = next((x for x in results if x.outcome == DENY and x.mode == r.ENFORCE), None)
    shadowed = next((x for x in results if x.outcome == DENY and x.mode == r.SHADOW), None)
    effect = DENY if enforced else WOULD_DENY if shadowed else ALLOW
    return Decision(decision_id=decision_id, action=action.kind, effect=effect, denied_by=enforced or shadowed,
                    results=results)


def _judge(p: PolicyVersion, i: int, rule: r.Rule, action: Action, usage: Usage) -> RuleResult:
    outcome, reason = _verdict(p.policy_id, rule, action, usage)
    tag = type(rule).__struct_config__.tag
    return RuleResult(policy_id=p.policy_id, policy_version=p.version, policy_name=p.name, mode=p.mode,
                      rule_index=i, rule_type=str(tag), outcome=outcome, reason=reason)


def _verdict(policy_id: uuid.UUID, rule: r.Rule, a: Action, usage: Usage) -> tuple[str, str]:
    if isinstance(rule, r.Capabilities):
        return _listed(rule.allow, rule.deny, a.capability, "capability")
    if isinstance(rule, r.ProviderKeys):
        key = a.provider_key.lower() if a.provider_key is not None else None
        return _listed(rule.allow, rule.deny, key, "provider key")
    if isinstance(rule, r.Sellers):
        return _sellers(rule, a)
    if isinstance(rule, r.PriceCeiling):
        return _ceiling(rule, a)
    if isinstance(rule, r.SpendLimit):
        return _spend(policy_id, rule, a, usage)
    if isinstance(rule, r.MinSellerReputation):
        return _reputation(rule, a)
    return _rate(policy_id, rule, a, usage)


def _listed(allow: tuple[str, ...] | None, deny: tuple[str, ...] | None, value: str | None,
            what: str) -> tuple[str, str]:
    if value is None:
        return NOT_APPLICABLE, f"this action names no {what} yet"
    if deny is not None:
        return (DENY, f"{what} '{value}' is on the deny list") if value in deny else (
            PASS, f"{what} '{value}' is not on the deny list")
    assert allow is not None
    return (PASS, f"{what} '{value}' is on the allow list") if value in allow else (
        DENY, f"{what} '{value}' is not on the allow list")


def _sellers(rule: r.Sellers, a: Action) -> tuple[str, str]:
    if a.seller is None:
        return NOT_APPLICABLE, "this action names no seller yet"
    listed = set(rule.deny if rule.deny is not None else rule.allow or ())
    # Named by machine only: the seller's account id is not the buyer's to see.
    by_machine, by_account = a.seller.machine_id in listed, a.seller.account_id in listed
    hit = by_machine or by_account
    who = f"seller machine {a.seller.machine_id}" + ("'s account" if by_account and not by_machine else "")
    if rule.deny is not None:
        return (DENY, f"{who} is on the deny list") if hit else (PASS, f"{who} is not on the deny list")
    return (PASS, f"{who} is on the allow list") if hit else (DENY, f"{who} is not on the allow list")


def _money(m: Money) -> str:
    return f"{m.amount} {m.currency}"


def _ceiling(rule: r.PriceCeiling, a: Action) -> tuple[str, str]:
    if rule.capability is not None and a.capability is not None and a.capability != rule.capability:
        return NOT_APPLICABLE, f"the ceiling is for capability '{rule.capability}'"
    if a.price is None:
        return NOT_APPLICABLE, "this action has no price yet"
    if a.price.currency != rule.max.currency:
        # Prices in another currency cannot be compared: an enforced ceiling fails closed.
        return DENY, f"price {_money(a.price)} is not in the ceiling's currency {rule.max.currency}"
    if a.price.amount > rule.max.amount:
        return DENY, f"price {_money(a.price)} is above the ceiling of {_money(rule.max)}"
    return PASS, f"price {_money(a.price)} is within the ceiling of {_money(rule.max)}"


def _spend(policy_id: uuid.UUID, rule: r.SpendLimit, a: Action, usage: Usage) -> tuple[str, str]:
    if a.price is None:
        return NOT_APPLICABLE, "this action has no price yet"
    if a.price.currency != rule.amount.currency:
        return DENY, f"price {_money(a.price)} is not in the limit's currency {rule.amount.currency}"
    if rule.period == "order":
        spent, window = 0, "per order"
    else:
        spent = usage.spent.get(spend_key(policy_id, rule.period), 0)
        window = f"this {rule.period} (since {period_start(rule.period, a.at).isoformat()})"
    total = spent + a.price.amount
    summary = f"{spent} spent + {a.price.amount} = {total} of {_money(rule.amount)} {window}"
    return (DENY, f"over the spend limit: {summary}") if total > rule.amount.amount else (PASS, summary)


def _reputation(rule: r.MinSellerReputation, a: Action) -> tuple[str, str]:
    if a.seller is None:
        return NOT_APPLICABLE, "this action names no seller yet"
    runs = a.reputation.runs if a.reputation else 0
    rate = a.reputation.success_rate if a.reputation else None
    if runs < rule.min_runs:
        return DENY, f"the seller has {runs} runs, fewer than the {rule.min_runs} required"
    if rate is not None and rate < rule.success_rate:
        return DENY, f"the seller's success rate {rate:.3f} is below {rule.success_rate:.3f}"
    # No runs and none required: nothing to judge the seller by, and the policy asked for no evidence.
    shown = f"{rate:.3f}" if rate is not None else "n/a"
    return PASS, f"the seller has {runs} runs at success rate {shown}"


def _rate(policy_id: uuid.UUID, rule: r.RateLimit, a: Action, usage: Usage) -> tuple[str, str]:
    if a.kind not in _CREATING:
        return NOT_APPLICABLE, "rate limits count task creations"
    recent = usage.tasks.get(rate_key(policy_id, rule.per_seconds), 0)
    summary = f"{recent} tasks in the last {rule.per_seconds} s + this one, limit {rule.tasks}"
    return (DENY, f"over the rate limit: {summary}") if recent + 1 > rule.tasks else (PASS, summary)

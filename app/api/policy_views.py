"""Policies between the wire and the domain: request bodies to domain rules, aggregates and rows to views."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec

from app.api.schemas_decisions import DecisionView, RuleResultView
from app.api.schemas_policies import (
    PolicyVersionView,
    PolicyView,
    RuleBody,
    ScopeBody,
    rules_view,
    scope_view,
)
from domain.policies.aggregate import Policy
from domain.policies.rules import Rule, Scope
from domain.policies.values import Decision, RuleResult


def to_rules(body: list[RuleBody]) -> list[Rule]:
    # Both sides spell rules the same way (camelCase, tagged on `type`), so the builtins form converts across.
    return msgspec.convert(msgspec.to_builtins(body), list[Rule])


def to_scope(body: ScopeBody) -> Scope:
    return msgspec.convert(msgspec.to_builtins(body), Scope)


def policy_view(p: Policy) -> PolicyView:
    return PolicyView(id=p.id, account_id=p.account_id, platform=p.platform, name=p.name,
                      description=p.description, scope=scope_view(p.scope), mode=p.mode,  # type: ignore[arg-type]
                      rules=rules_view(p.rules), version=p.version, created_at=p.created_on,
                      updated_at=p.modified_on)


def row_view(r: dict[str, Any]) -> PolicyView:
    return PolicyView(id=r["id"], account_id=r["account_id"], platform=r["platform"], name=r["name"],
                      description=r["description"], scope=scope_view(r["scope"]), mode=r["mode"],
                      rules=rules_view(r["rules"]), version=r["version"], created_at=r["created_at"],
                      updated_at=r["updated_at"])


def version_view(r: dict[str, Any], hide_actor: bool = False) -> PolicyVersionView:
    """`hide_actor`: a platform policy read by another account does not name the admin who changed it."""
    return PolicyVersionView(policy_id=r["policy_id"], version=r["version"], name=r["name"],
                             description=r["description"], scope=scope_view(r["scope"]), mode=r["mode"],
                             rules=rules_view(r["rules"]), changed=list(r["changed"]),
                             actor=None if hide_actor else r["actor"],
                             recorded_at=r["recorded_at"])


def _result(x: RuleResult) -> RuleResultView:
    return RuleResultView(policy_id=x.policy_id, policy_version=x.policy_version, policy_name=x.policy_name,
                          mode=x.mode, rule_index=x.rule_index, rule_type=x.rule_type,  # type: ignore[arg-type]
                          outcome=x.outcome, reason=x.reason)  # type: ignore[arg-type]


def decision_view(d: Decision, at: datetime) -> DecisionView:
    return DecisionView(decision_id=d.decision_id, action=d.action, effect=d.effect,  # type: ignore[arg-type]
                        denied_by=_result(d.denied_by) if d.denied_by else None,
                        results=[_result(x) for x in d.results], evaluated_at=at)

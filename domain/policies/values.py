"""What a policy decision is made from and what it answers: the action, usage counters, policy versions."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

import msgspec

from domain.policies.rules import Rule, Scope
from domain.shared.money import Money

CREATE_TASK, RESOLVE, EXECUTE, ORDER = "create-task", "resolve", "execute", "order"
ActionKind = Literal["create-task", "resolve", "execute", "order"]
ACTIONS: tuple[str, ...] = (CREATE_TASK, RESOLVE, EXECUTE, ORDER)

ALLOW, DENY, WOULD_DENY = "allow", "deny", "would-deny"
PASS, NOT_APPLICABLE = "pass", "not-applicable"


class Seller(msgspec.Struct, frozen=True, kw_only=True):
    machine_id: uuid.UUID
    account_id: uuid.UUID


class Reputation(msgspec.Struct, frozen=True, kw_only=True):
    runs: int = 0
    success_rate: float | None = None


class Action(msgspec.Struct, frozen=True, kw_only=True):
    """One command a buyer machine is about to run; what a command does not know yet stays None."""

    kind: ActionKind
    at: datetime
    account_id: uuid.UUID
    machine_id: uuid.UUID
    labels: dict[str, str] = msgspec.field(default_factory=dict)
    capability: str | None = None
    seller: Seller | None = None
    price: Money | None = None
    provider_key: str | None = None
    reputation: Reputation | None = None


class PolicyVersion(msgspec.Struct, frozen=True, kw_only=True):
    """One version of a policy, as evaluation (and the versions list) sees it."""

    policy_id: uuid.UUID
    version: int
    account_id: uuid.UUID
    platform: bool
    name: str
    description: str
    scope: Scope
    mode: str
    rules: list[Rule]
    at: datetime


def spend_key(policy_id: uuid.UUID, period: str) -> str:
    return f"{policy_id}:{period}"


def rate_key(policy_id: uuid.UUID, per_seconds: int) -> str:
    return f"{policy_id}:{per_seconds}s"


class Usage(msgspec.Struct, frozen=True, kw_only=True):
    """Counters of the acting account under each policy: minor units spent in the current period of a
    spend-limit (`spend_key`), and tasks created in the trailing window of a rate-limit (`rate_key`)."""

    spent: dict[str, int] = msgspec.field(default_factory=dict)
    tasks: dict[str, int] = msgspec.field(default_factory=dict)


class RuleResult(msgspec.Struct, frozen=True, kw_only=True):
    policy_id: uuid.UUID
    policy_version: int
    policy_name: str
    mode: str
    rule_index: int
    rule_type: str
    outcome: str  # pass | deny | not-applicable
    reason: str


class Decision(msgspec.Struct, frozen=True, kw_only=True):
    decision_id: uuid.UUID
    action: str
    effect: str  # allow | deny | would-deny
    denied_by: RuleResult | None  # the first enforced deny; for would-deny, the first shadow deny
    results: list[RuleResult]  # every rule of every policy in scope, in evaluation order

    @property
    def denies(self) -> bool:
        return self.effect == DENY

"""Request and response bodies of the policy endpoints: rules and scopes as tagged unions on `type`."""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

import msgspec

from app.api.schema_types import NOT_BLANK, UtcTime
from app.api.schemas_decisions import ActionKind, Mode
from app.api.schemas_runtime import ProviderKey
from app.api.schemas_tasks import MoneyBody  # one Money on the wire, whatever the context
from domain.graph.rules import MAX_NAME
from domain.policies.rules import MAX_LABELS, MAX_LIST, MAX_PER_SECONDS, MAX_RATE_TASKS, MAX_RULES

Capability = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_NAME, pattern=NOT_BLANK)]
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=200, pattern=NOT_BLANK)]
Description = Annotated[str, msgspec.Meta(max_length=2000)]
LabelKey = Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9]([a-z0-9._/-]{0,61}[a-z0-9])?$", max_length=63)]
LabelValue = Annotated[str, msgspec.Meta(max_length=256)]


class _Body(msgspec.Struct, rename="camel", forbid_unknown_fields=True, frozen=True, kw_only=True,
            tag_field="type", omit_defaults=True):
    pass


class SpendLimitRule(_Body, frozen=True, tag="spend-limit"):
    """At most `amount` per order, or per UTC calendar day, week (from Monday) or month, per account."""

    amount: MoneyBody
    period: Literal["order", "day", "week", "month"]


class PriceCeilingRule(_Body, frozen=True, tag="price-ceiling"):
    """No seller's price above `max` (for `capability` only, when given)."""

    max: MoneyBody
    capability: Capability | None = None


class ProviderKeysRule(_Body, frozen=True, tag="provider-keys"):
    """Exactly one of allow or deny."""

    allow: Annotated[list[ProviderKey], msgspec.Meta(max_length=MAX_LIST)] | None = None
    deny: Annotated[list[ProviderKey], msgspec.Meta(max_length=MAX_LIST)] | None = None


class SellersRule(_Body, frozen=True, tag="sellers"):
    """Exactly one of allow or deny; each id is a seller's machine id or account id."""

    allow: Annotated[list[uuid.UUID], msgspec.Meta(max_length=MAX_LIST)] | None = None
    deny: Annotated[list[uuid.UUID], msgspec.Meta(max_length=MAX_LIST)] | None = None


class CapabilitiesRule(_Body, frozen=True, tag="capabilities"):
    """Exactly one of allow or deny."""

    allow: Annotated[list[Capability], msgspec.Meta(max_length=MAX_LIST)] | None = None
    deny: Annotated[list[Capability], msgspec.Meta(max_length=MAX_LIST)] | None = None


class MinSellerReputationRule(_Body, frozen=True, tag="min-seller-reputation"):
    """Sellers need at least `minRuns` finished runs and a success rate of at least `successRate`."""

    success_rate: Annotated[float, msgspec.Meta(ge=0, le=1)]
    min_runs: Annotated[int, msgspec.Meta(ge=0, le=MAX_RATE_TASKS)]


class RateLimitRule(_Body, frozen=True, tag="rate-limit"):
    """At most `tasks` task creations per trailing `perSeconds`, per account, counting only the creations this
    policy governs (its scope); exact, even under concurrent creates."""

    tasks: Annotated[int, msgspec.Meta(ge=1, le=MAX_RATE_TASKS)]
    per_seconds: Annotated[int, msgspec.Meta(ge=1, le=MAX_PER_SECONDS)]


RuleBody = (SpendLimitRule | PriceCeilingRule | ProviderKeysRule | SellersRule | CapabilitiesRule
            | MinSellerReputationRule | RateLimitRule)
Rules = Annotated[list[RuleBody], msgspec.Meta(max_length=MAX_RULES)]


class AccountScopeBody(_Body, frozen=True, tag="account"):
    """Every machine of the owning account (of every account, for a platform policy)."""


class MachinesScopeBody(_Body, frozen=True, tag="machines"):
    machine_ids: Annotated[list[uuid.UUID], msgspec.Meta(min_length=1, max_length=MAX_LIST)]


class LabelsScopeBody(_Body, frozen=True, tag="labels"):
    """Machines carrying every one of these labels with these values."""

    labels: Annotated[dict[LabelKey, LabelValue], msgspec.Meta(min_length=1, max_length=MAX_LABELS)]


ScopeBody = AccountScopeBody | MachinesScopeBody | LabelsScopeBody


class CreatePolicyRequest(msgspec.Struct, rename="camel", forbid_unknown_fields=True, frozen=True, kw_only=True):
    name: Name
    rules: Rules
    description: Description = ""
    scope: ScopeBody = msgspec.field(default_factory=AccountScopeBody)
    mode: Mode = "enforce"
    platform: Annotated[bool, msgspec.Meta(description="admins only: governs every account")] = False


class RevisePolicyRequest(msgspec.Struct, rename="camel", forbid_unknown_fields=True, frozen=True, kw_only=True):
    """Fields left out stay as they are; `rules` replaces the whole list."""

    name: Name | None = None
    description: Description | None = None
    scope: ScopeBody | None = None
    mode: Mode | None = None
    rules: Rules | None = None


class PolicyView(msgspec.Struct, rename="camel", frozen=True, kw_only=True):
    id: uuid.UUID
    account_id: uuid.UUID
    platform: bool
    name: str
    description: str
    scope: ScopeBody
    mode: Mode
    rules: list[RuleBody]
    version: int
    created_at: UtcTime
    updated_at: UtcTime


class PolicyPage(msgspec.Struct, rename="camel", frozen=True):
    """One page of a list; nextCursor fetches the next (null on the last page)."""

    data: list[PolicyView]
    next_cursor: str | None = None


class PolicyVersionView(msgspec.Struct, rename="camel", frozen=True, kw_only=True):
    policy_id: uuid.UUID
    version: int
    name: str
    description: str
    scope: ScopeBody
    mode: Mode
    rules: list[RuleBody]
    changed: Annotated[list[str], msgspec.Meta(description="the fields this version set")]
    actor: str | None
    recorded_at: UtcTime


class PolicyVersionPage(msgspec.Struct, rename="camel", frozen=True):
    data: list[PolicyVersionView]
    next_cursor: str | None = None


class EvaluateRequest(msgspec.Struct, rename="camel", forbid_unknown_fields=True, frozen=True, kw_only=True):
    """One hypothetical action of one of your machines; what the action would not know yet, leave out."""

    action: ActionKind
    machine_id: uuid.UUID
    capability: Capability | None = None
    seller_machine_id: uuid.UUID | None = None
    price: MoneyBody | None = None
    provider_key: ProviderKey | None = None


def rules_view(rules: object) -> list[RuleBody]:
    """Domain rules (or their stored builtins) as the wire schema: the same camelCase tagged form."""
    return msgspec.convert(msgspec.to_builtins(rules), list[RuleBody])


def scope_view(scope: object) -> ScopeBody:
    return msgspec.convert(msgspec.to_builtins(scope), ScopeBody)


MAX_BACKTEST_ROWS = 50_000


class BacktestRequest(msgspec.Struct, rename="camel", forbid_unknown_fields=True, frozen=True, kw_only=True):
    """The window [since, until) of recorded history (at most 31 days), and optionally a draft: `rules` and/or
    `scope` in place of the saved policy's (required when backtesting a policy that is not saved)."""

    since: UtcTime
    until: UtcTime
    limit: Annotated[int, msgspec.Meta(ge=1, le=MAX_BACKTEST_ROWS, description="recorded actions replayed at most")] = (
        10_000)
    rules: Rules | None = None
    scope: ScopeBody | None = None


class BacktestSampleView(msgspec.Struct, rename="camel", frozen=True, kw_only=True):
    task_id: uuid.UUID
    order_id: Annotated[uuid.UUID | None, msgspec.Meta(description="the order, for an `order` action")]
    action: ActionKind
    rule_index: int
    rule_type: str
    reason: str
    at: str


class BacktestView(msgspec.Struct, rename="camel", frozen=True, kw_only=True):
    policy_id: uuid.UUID | None
    policy_version: int | None
    since: UtcTime
    until: UtcTime
    replayed: Annotated[int, msgspec.Meta(description="recorded actions replayed (task creations, resolutions,"
                                                      " orders placed)")]
    truncated: Annotated[bool, msgspec.Meta(description="the window held more than `limit` actions")]
    evaluated: Annotated[dict[str, int], msgspec.Meta(description="replayed actions per action kind")]
    denied: Annotated[dict[str, int], msgspec.Meta(description="actions the policy would have denied, per kind")]
    denied_by_rule: dict[str, int]
    denied_amounts: Annotated[dict[str, int], msgspec.Meta(description="refused prices, minor units per currency")]
    denied_amounts_by_action: Annotated[dict[str, dict[str, int]], msgspec.Meta(
        description="refused prices per action kind (`order`: what the refused orders would have paid), minor"
                    " units per currency")]
    samples: list[BacktestSampleView]

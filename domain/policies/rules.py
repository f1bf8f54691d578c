"""Typed policy rules (a tagged union on `type`) and scopes, as data; checked once when a policy is defined."""

from __future__ import annotations

import uuid
from typing import Literal

import msgspec

from domain.graph.rules import MAX_AMOUNT
from domain.runtime.rules import PROVIDER_KEY
from domain.shared.errors import ValidationFailed
from domain.shared.money import Money

MAX_RULES = 32
MAX_LIST = 100
MAX_RATE_TASKS = 1_000_000
MAX_PER_SECONDS = 31 * 24 * 3600
MAX_LABELS = 32

Period = Literal["order", "day", "week", "month"]
PERIODS: tuple[str, ...] = ("order", "day", "week", "month")


# rename="camel": a rule's builtins form is its wire form, so events, read rows and responses hold one spelling.
class _Rule(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", rename="camel", omit_defaults=True):
    pass


class SpendLimit(_Rule, frozen=True, tag="spend-limit"):
    amount: Money
    period: Period


class PriceCeiling(_Rule, frozen=True, tag="price-ceiling"):
    max: Money
    capability: str | None = None


class ProviderKeys(_Rule, frozen=True, tag="provider-keys"):
    allow: tuple[str, ...] | None = None
    deny: tuple[str, ...] | None = None


class Sellers(_Rule, frozen=True, tag="sellers"):
    """Machine or account ids: a seller matches by either."""

    allow: tuple[uuid.UUID, ...] | None = None
    deny: tuple[uuid.UUID, ...] | None = None


class Capabilities(_Rule, frozen=True, tag="capabilities"):
    allow: tuple[str, ...] | None = None
    deny: tuple[str, ...] | None = None


class MinSellerReputation(_Rule, frozen=True, tag="min-seller-reputation"):
    success_rate: float
    min_runs: int


class RateLimit(_Rule, frozen=True, tag="rate-limit"):
    tasks: int
    per_seconds: int


Rule = SpendLimit | PriceCeiling | ProviderKeys | Sellers | Capabilities | MinSellerReputation | RateLimit


class _Scope(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", rename="camel", omit_defaults=True):
    pass


class AccountScope(_Scope, frozen=True, tag="account"):
    """Every machine of the owning account (of every account, for a platform policy)."""


class MachinesScope(_Scope, frozen=True, tag="machines"):
    machine_ids: tuple[uuid.UUID, ...]


class LabelsScope(_Scope, frozen=True, tag="labels"):
    """Machines carrying every one of these labels with these values."""

    labels: dict[str, str]


Scope = AccountScope | MachinesScope | LabelsScope

ENFORCE, SHADOW, DISABLED = "enforce", "shadow", "disabled"
MODES: tuple[str, ...] = (ENFORCE, SHADOW, DISABLED)


def _field(i: int, name: str) -> str:
    return f"rules[{i}].{name}"


def _money(value: Money, field: str) -> None:
    if not 0 <= value.amount <= MAX_AMOUNT:
        raise ValidationFailed(f"{field}.amount must be between 0 and {MAX_AMOUNT}", field=field)


def _lists(i: int, allow: tuple[object, ...] | None, deny: tuple[object, ...] | None) -> None:
    if (allow is None) == (deny is None):
        raise ValidationFailed(f"rules[{i}] needs exactly one of allow or deny", field=f"rules[{i}]")
    for name, items in (("allow", allow), ("deny", deny)):
        if items is not None and len(items) > MAX_LIST:
            raise ValidationFailed(f"{_field(i, name)} holds at most {MAX_LIST} items", field=_field(i, name))


def _keys(keys: tuple[str, ...] | None, field: str) -> tuple[str, ...] | None:
    if keys is None:
        return None
    out = tuple(dict.fromkeys(k.strip().lower() for k in keys))
    if any(not PROVIDER_KEY.match(k) for k in out):
        raise ValidationFailed(f"{field} must hold provider keys matching {PROVIDER_KEY.pattern}", field=field)
    return out


def _names(names: tuple[str, ...] | None, field: str) -> tuple[str, ...] | None:
    if names is None:
        return None
    out = tuple(dict.fromkeys(n.strip() for n in names))
    if any(not n for n in out):
        raise ValidationFailed(f"{field} must not hold blank capability names", field=field)
    return out


def check_rule(i: int, rule: Rule) -> Rule:
    """The rule validated and normalised (provider keys lower-cased, lists de-duplicated in order)."""
    if isinstance(rule, SpendLimit):
        _money(rule.amount, _field(i, "amount"))
    elif isinstance(rule, PriceCeiling):
        _money(rule.max, _field(i, "max"))
        if rule.capability is not None and not rule.capability.strip():
            raise ValidationFailed(f"{_field(i, 'capability')} must not be blank", field=_field(i, "capability"))
    elif isinstance(rule, ProviderKeys):
        _lists(i, rule.allow, rule.deny)
        return msgspec.structs.replace(rule, allow=_keys(rule.allow, _field(i, "allow")),
                                       deny=_keys(rule.deny, _field(i, "deny")))
    elif isinstance(rule, Sellers):
        _lists(i, rule.allow, rule.deny)
        return msgspec.structs.replace(rule, allow=tuple(dict.fromkeys(rule.allow)) if rule.allow is not None
                                       else None, deny=tuple(dict.fromkeys(rule.deny)) if rule.deny is not None
                                       else None)
    elif isinstance(rule, Capabilities):
        _lists(i, rule.allow, rule.deny)
        return msgspec.structs.replace(rule, allow=_names(rule.allow, _field(i, "allow")),
                                       deny=_names(rule.deny, _field(i, "deny")))
    elif isinstance(rule, MinSellerReputation):
        if not 0.0 <= rule.success_rate <= 1.0:
            raise ValidationFailed(f"{_field(i, 'successRate')} must be between 0 and 1",
                                   field=_field(i, "successRate"))
        if not 0 <= rule.min_runs <= MAX_RATE_TASKS:
            raise ValidationFailed(f"{_field(i, 'minRuns')} must be between 0 and {MAX_RATE_TASKS}",
                                   field=_field(i, "minRuns"))
    elif isinstance(rule, RateLimit):
        if not 1 <= rule.tasks <= MAX_RATE_TASKS or not 1 <= rule.per_seconds <= MAX_PER_SECONDS:
            raise ValidationFailed(f"rules[{i}] needs tasks in 1..{MAX_RATE_TASKS} and perSeconds in "
                                   f"1..{MAX_PER_SECONDS}", field=f"rules[{i}]")
    return rule


def check_rules(rules: list[Rule]) -> list[Rule]:
    if len(rules) > MAX_RULES:
        raise ValidationFailed(f"a policy holds at most {MAX_RULES} rules", field="rules")
    return [check_rule(i, r) for i, r in enumerate(rules)]


def check_scope(scope: Scope) -> Scope:
    if isinstance(scope, MachinesScope):
        if not 1 <= len(scope.machine_ids) <= MAX_LIST:
            raise ValidationFailed(f"scope.machineIds must list 1 to {MAX_LIST} machine ids",
                                   field="scope.machineIds")
        return MachinesScope(machine_ids=tuple(dict.fromkeys(scope.machine_ids)))
    if isinstance(scope, LabelsScope) and not 1 <= len(scope.labels) <= MAX_LABELS:
        raise ValidationFailed(f"scope.labels must hold 1 to {MAX_LABELS} labels", field="scope.labels")
    return scope


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise ValidationFailed(f"mode must be one of {', '.join(MODES)}", field="mode")
    return mode


def check_name(name: str) -> str:
    name = name.strip()
    if not name or len(name) > 200:
        raise ValidationFailed("name must be a non-blank string of at most 200 characters", field="name")
    return name

"""Policy evaluation, given policies and usage, when an action is judged, then this decision: every rule kind,
and their combination (deny wins, the first deny names itself, shadow never blocks, disabled ignored)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from domain.policies import rules as r
from domain.policies.evaluation import evaluate, in_scope, period_start
from domain.policies.values import (
    ALLOW,
    DENY,
    NOT_APPLICABLE,
    PASS,
    WOULD_DENY,
    Action,
    PolicyVersion,
    Reputation,
    Seller,
    Usage,
    rate_key,
    spend_key,
)
from domain.shared.money import Money
from tests.factories import FIXED_AT

ACCOUNT, BUYER, OTHER_ACCOUNT = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
SELLER = Seller(machine_id=uuid.uuid4(), account_id=uuid.uuid4())
DECISION = uuid.uuid4()


def policy(*rules: r.Rule, mode: str = r.ENFORCE, scope: r.Scope | None = None, platform: bool = False,
           account_id: uuid.UUID = ACCOUNT, name: str = "p") -> PolicyVersion:
    return PolicyVersion(policy_id=uuid.uuid4(), version=1, account_id=account_id, platform=platform, name=name,
                         description="", scope=scope or r.AccountScope(), mode=mode, rules=list(rules), at=FIXED_AT)


def action(kind: str = "resolve", **fields: Any) -> Action:
    base: dict[str, Any] = {"kind": kind, "at": FIXED_AT, "account_id": ACCOUNT, "machine_id": BUYER,
                            "labels": {"team": "a"}, "capability": "translate", "seller": SELLER,
                            "price": Money(500, "USD"), "provider_key": "openai",
                            "reputation": Reputation(runs=50, success_rate=0.95)}
    if kind == "create-task":
        base.update(seller=None, price=None, provider_key=None, reputation=None)
    return Action(**{**base, **fields})


def decide(a: Action, *policies: PolicyVersion, usage: Usage | None = None) -> Any:
    return evaluate(DECISION, a, list(policies), usage or Usage())


def only(decision: Any) -> tuple[str, str]:
    (result,) = decision.results
    return result.outcome, result.reason


# --- each rule kind ------------------------------------------------------------------------------


@pytest.mark.parametrize(("rule", "outcome"), [
    (r.Capabilities(deny=("translate",)), DENY),
    (r.Capabilities(deny=("summarise",)), PASS),
    (r.Capabilities(allow=("translate",)), PASS),
    (r.Capabilities(allow=("summarise",)), DENY),
    (r.ProviderKeys(deny=("openai",)), DENY),
    (r.ProviderKeys(allow=("anthropic",)), DENY),
    (r.ProviderKeys(allow=("openai",)), PASS),
    (r.Sellers(deny=(SELLER.machine_id,)), DENY),
    (r.Sellers(deny=(SELLER.account_id,)), DENY),  # by the seller's account too
    (r.Sellers(allow=(uuid.uuid4(),)), DENY),
    (r.Sellers(allow=(SELLER.account_id,)), PASS),
    (r.PriceCeiling(max=Money(499, "USD")), DENY),
    (r.PriceCeiling(max=Money(500, "USD")), PASS),
    (r.PriceCeiling(max=Money(1, "USD"), capability="summarise"), NOT_APPLICABLE),
    (r.PriceCeiling(max=Money(1, "USD"), capability="translate"), DENY),
    (r.PriceCeiling(max=Money(10_000, "EUR")), DENY),  # another currency cannot be compared: fail closed
    (r.SpendLimit(amount=Money(499, "USD"), period="order"), DENY),
    (r.SpendLimit(amount=Money(500, "USD"), period="order"), PASS),
    (r.MinSellerReputation(success_rate=0.9, min_runs=10), PASS),
    (r.MinSellerReputation(success_rate=0.96, min_runs=10), DENY),
    (r.MinSellerReputation(success_rate=0.5, min_runs=51), DENY),
    (r.RateLimit(tasks=1, per_seconds=60), NOT_APPLICABLE),  # counts task creations, not resolves
])
def test_each_rule_kind_judges_a_resolve(rule: r.Rule, outcome: str) -> None:
    d = decide(action(), policy(rule))
    assert d.results[0].outcome == outcome, d.results[0].reason
    assert d.effect == (DENY if outcome == DENY else ALLOW)
    assert d.results[0].rule_type == rule.__struct_config__.tag


def test_rules_needing_a_seller_or_price_do_not_apply_to_task_creation() -> None:
    rules_: list[r.Rule] = [r.ProviderKeys(allow=("x",)), r.Sellers(allow=(uuid.uuid4(),)),
                            r.PriceCeiling(max=Money(0, "USD")), r.SpendLimit(amount=Money(0, "USD"), period="day"),
                            r.MinSellerReputation(success_rate=1, min_runs=9)]
    d = decide(action("create-task"), policy(*rules_))
    assert d.effect == ALLOW
    assert {x.outcome for x in d.results} == {NOT_APPLICABLE}


def test_a_seller_without_runs_passes_only_when_no_runs_are_required() -> None:
    fresh = action(reputation=None)
    assert only(decide(fresh, policy(r.MinSellerReputation(success_rate=0.9, min_runs=0))))[0] == PASS
    assert only(decide(fresh, policy(r.MinSellerReputation(success_rate=0.9, min_runs=1))))[0] == DENY


def test_spend_limit_adds_the_period_usage_to_the_price() -> None:
    p = policy(r.SpendLimit(amount=Money(1000, "USD"), period="day"))
    under = decide(action(), p, usage=Usage(spent={spend_key(p.policy_id, "day"): 500}))
    over = decide(action(), p, usage=Usage(spent={spend_key(p.policy_id, "day"): 501}))
    assert under.effect == ALLOW and "500 spent + 500 = 1000 of 1000 USD" in under.results[0].reason
    assert over.effect == DENY and over.denied_by is not None and "over the spend limit" in over.denied_by.reason
    # Another period's counter is another budget.
    assert decide(action(), p, usage=Usage(spent={spend_key(p.policy_id, "month"): 10_000})).effect == ALLOW


def test_rate_limit_counts_recent_creations_plus_this_one() -> None:
    p = policy(r.RateLimit(tasks=3, per_seconds=60))
    key = rate_key(p.policy_id, 60)
    assert decide(action("create-task"), p, usage=Usage(tasks={key: 2})).effect == ALLOW
    denied = decide(action("create-task"), p, usage=Usage(tasks={key: 3}))
    assert denied.effect == DENY and "over the rate limit" in denied.results[0].reason
    assert decide(action("order"), p, usage=Usage(tasks={key: 3})).effect == DENY


@pytest.mark.parametrize(("period", "at", "start"), [
    ("day", datetime(2025, 3, 5, 23, 59, tzinfo=UTC), datetime(2025, 3, 5, tzinfo=UTC)),
    ("week", datetime(2025, 3, 5, 12, tzinfo=UTC), datetime(2025, 3, 3, tzinfo=UTC)),  # Wednesday -> Monday
    ("week", datetime(2025, 3, 3, 0, 0, tzinfo=UTC), datetime(2025, 3, 3, tzinfo=UTC)),
    ("month", datetime(2025, 3, 31, 23, tzinfo=UTC), datetime(2025, 3, 1, tzinfo=UTC)),
    # A time given in another zone is placed in its UTC period.
    ("day", datetime(2025, 3, 6, 1, tzinfo=UTC).astimezone(__import__("datetime").timezone(timedelta(hours=-5))),
     datetime(2025, 3, 6, tzinfo=UTC)),
])
def test_periods_are_utc_calendar_periods(period: str, at: datetime, start: datetime) -> None:
    assert period_start(period, at) == start


# --- scope ---------------------------------------------------------------------------------------


def test_scope_account_machines_and_labels() -> None:
    assert in_scope(policy(), ACCOUNT, BUYER, {})
    assert not in_scope(policy(), OTHER_ACCOUNT, BUYER, {})  # another account's policy never governs you
    assert in_scope(policy(platform=True, account_id=OTHER_ACCOUNT), ACCOUNT, BUYER, {})  # platform: everyone
    listed = policy(scope=r.MachinesScope(machine_ids=(BUYER,)))
    assert in_scope(listed, ACCOUNT, BUYER, {}) and not in_scope(listed, ACCOUNT, uuid.uuid4(), {})
    labelled = policy(scope=r.LabelsScope(labels={"team": "a", "tier": "gold"}))
    assert in_scope(labelled, ACCOUNT, BUYER, {"team": "a", "tier": "gold", "x": "y"})
    assert not in_scope(labelled, ACCOUNT, BUYER, {"team": "a"})
    assert not in_scope(labelled, ACCOUNT, BUYER, {"team": "b", "tier": "gold"})


def test_policies_out_of_scope_are_not_judged() -> None:
    d = decide(action(), policy(r.Capabilities(deny=("translate",)), scope=r.LabelsScope(labels={"team": "b"})))
    assert d.effect == ALLOW and d.results == []


# --- combinations --------------------------------------------------------------------------------


def test_deny_wins_over_allow_and_the_first_deny_names_itself() -> None:
    allowing = policy(r.Capabilities(allow=("translate",)), name="allow")
    first = policy(r.ProviderKeys(allow=("openai",)), r.PriceCeiling(max=Money(100, "USD")), name="first")
    second = policy(r.Sellers(deny=(SELLER.machine_id,)), name="second")
    d = decide(action(), allowing, first, second)
    assert d.effect == DENY and d.decision_id == DECISION
    assert d.denied_by is not None
    assert (d.denied_by.policy_id, d.denied_by.rule_index, d.denied_by.rule_type) == (
        first.policy_id, 1, "price-ceiling")
    # Every rule of every policy is in the explanation, passes and denies alike.
    assert [(x.policy_name, x.outcome) for x in d.results] == [
        ("allow", PASS), ("first", PASS), ("first", DENY), ("second", DENY)]


def test_platform_policies_are_judged_first() -> None:
    mine = policy(r.Capabilities(deny=("translate",)), name="mine")
    platform = policy(r.Capabilities(deny=("translate",)), platform=True, account_id=OTHER_ACCOUNT, name="platform")
    d = decide(action(), mine, platform)
    assert d.denied_by is not None and d.denied_by.policy_name == "platform"


def test_shadow_never_blocks() -> None:
    shadow = policy(r.Capabilities(deny=("translate",)), mode=r.SHADOW)
    d = decide(action(), shadow)
    assert d.effect == WOULD_DENY and not d.denies
    assert d.denied_by is not None and d.denied_by.mode == r.SHADOW


def test_an_enforced_deny_outranks_an_earlier_shadow_deny() -> None:
    shadow = policy(r.Capabilities(deny=("translate",)), mode=r.SHADOW)
    enforced = policy(r.ProviderKeys(deny=("openai",)))
    d = decide(action(), shadow, enforced)
    assert d.effect == DENY and d.denied_by is not None and d.denied_by.policy_id == enforced.policy_id
    assert [x.outcome for x in d.results] == [DENY, DENY]  # the shadow deny is still reported


def test_disabled_policies_are_ignored() -> None:
    d = decide(action(), policy(r.Capabilities(deny=("translate",)), mode=r.DISABLED))
    assert d.effect == ALLOW and d.results == []


def test_no_policies_allow() -> None:
    d = decide(action())
    assert d.effect == ALLOW and d.denied_by is None and d.results == []

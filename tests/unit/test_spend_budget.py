"""SpendBudget, given/when/then on events: reservations per task (replaced, not added, on a re-resolve), releases."""

from __future__ import annotations

import uuid
from datetime import timedelta

from domain.policies.budget import SpendBudget, budget_id
from domain.shared.money import Money
from tests.factories import FIXED_AT

POLICY, ACCOUNT, T1, T2 = uuid.uuid4(), uuid.uuid4(), uuid.uuid4(), uuid.uuid4()


def budget() -> SpendBudget:
    b = SpendBudget.open(POLICY, ACCOUNT, "day", "USD", FIXED_AT, FIXED_AT)
    b.collect_events()
    return b


def names(b: SpendBudget) -> list[str]:
    return [type(e).__name__ for e in b.collect_events()]


def test_one_budget_per_policy_account_period_and_currency() -> None:
    assert budget().id == budget_id(POLICY, ACCOUNT, "day", "USD", FIXED_AT)
    assert budget_id(POLICY, ACCOUNT, "day", "USD", FIXED_AT + timedelta(days=1)) != budget().id
    assert budget_id(POLICY, uuid.uuid4(), "day", "USD", FIXED_AT) != budget().id


def test_reservations_add_up_and_a_task_replaces_its_own() -> None:
    b = budget()
    b.reserve(T1, Money(100, "USD"), FIXED_AT)
    b.reserve(T2, Money(250, "USD"), FIXED_AT)
    assert names(b) == ["Reserved", "Reserved"]
    assert b.spent_besides(None) == 350 and b.spent_besides(T1) == 250
    b.reserve(T1, Money(100, "USD"), FIXED_AT)  # the same again records nothing
    assert names(b) == []
    b.reserve(T1, Money(40, "USD"), FIXED_AT)
    assert b.spent_besides(None) == 290
    b.reserve(T1, Money(40, "EUR"), FIXED_AT)  # another currency is another budget
    assert names(b) == ["Reserved"] and b.spent_besides(None) == 290


def test_release_frees_a_reservation_once() -> None:
    b = budget()
    b.reserve(T1, Money(100, "USD"), FIXED_AT)
    b.collect_events()
    assert b.release(T1, FIXED_AT) and names(b) == ["Released"] and b.spent_besides(None) == 0
    assert not b.release(T1, FIXED_AT) and names(b) == []

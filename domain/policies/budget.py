"""A spend budget: what one account has committed under one spend-limit in one UTC period, reserved per task.

Reservations append to the budget's own stream with the command that commits to a price, so optimistic
concurrency on this stream is what keeps concurrent commits from overshooting the cap.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from eventsourcing.domain import Aggregate

from domain.shared.ids import derived_id
from domain.shared.money import Money


def budget_id(policy_id: uuid.UUID, account_id: uuid.UUID, period: str, currency: str, start: datetime) -> uuid.UUID:
    return derived_id("spend-budget", policy_id, account_id, period, currency, start.isoformat())


class SpendBudget(Aggregate):
    TOPIC = "policies:SpendBudget"

    class Created(Aggregate.Created):
        TOPIC = "policies:SpendBudget.Created"  # required by eventsourcing once TOPIC is set; never triggered

    class Event(Aggregate.Event):
        TOPIC = "policies:SpendBudget.Event"

    class Opened(Aggregate.Created):
        TOPIC = "policies:SpendBudget.Opened"
        policy_id: uuid.UUID
        account_id: uuid.UUID
        period: str
        currency: str
        period_start: datetime

    class Reserved(Aggregate.Event):
        """Public name policy.budget-reserved. A task reserving again replaces its earlier reservation."""

        TOPIC = "policies:SpendBudget.Reserved"
        task_id: uuid.UUID
        amount: int

        def apply(self, aggregate: Any) -> None:
            aggregate.reservations[self.task_id] = self.amount

    class Released(Aggregate.Event):
        """Public name policy.budget-released: the task failed or was cancelled, so nothing was spent."""

        TOPIC = "policies:SpendBudget.Released"
        task_id: uuid.UUID
        amount: int

        def apply(self, aggregate: Any) -> None:
            aggregate.reservations.pop(self.task_id, None)

    def __init__(self, policy_id: uuid.UUID, account_id: uuid.UUID, period: str, currency: str,
                 period_start: datetime) -> None:
        self.policy_id, self.account_id, self.period = policy_id, account_id, period
        self.currency, self.period_start = currency, period_start
        self.reservations: dict[uuid.UUID, int] = {}

    @classmethod
    def open(cls, policy_id: uuid.UUID, account_id: uuid.UUID, period: str, currency: str, start: datetime,
             at: datetime) -> SpendBudget:
        return cls._create(cls.Opened, id=budget_id(policy_id, account_id, period, currency, start), timestamp=at,
                           policy_id=policy_id, account_id=account_id, period=period, currency=currency,
                           period_start=start)

    def spent_besides(self, task_id: uuid.UUID | None) -> int:
        """Reserved by every other task (a task's own earlier reservation is what it would replace)."""
        return sum(amount for task, amount in self.reservations.items() if task != task_id)

    def reserve(self, task_id: uuid.UUID, price: Money, at: datetime) -> None:
        """The caller has judged the cap (with `spent_besides`); this records the commitment."""
        if price.currency != self.currency or self.reservations.get(task_id) == price.amount:
            return
        self.trigger_event(self.Reserved, timestamp=at, task_id=task_id, amount=price.amount)

    def release(self, task_id: uuid.UUID, at: datetime) -> bool:
        if task_id not in self.reservations:
            return False
        self.trigger_event(self.Released, timestamp=at, task_id=task_id, amount=self.reservations[task_id])
        return True

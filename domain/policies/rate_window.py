"""A rate window: the tasks one account created under one rate-limit, counted exactly with the command.

Time is cut into buckets of `per_seconds`; bucket b's stream holds the creations of buckets b-1 and b (each
creation is recorded in its own bucket and the next one). So the trailing window (at - per_seconds, at] of any
moment in bucket b is read from that one stream, and two creations whose windows overlap always write a stream
in common: optimistic concurrency on it is what keeps concurrent creates from passing the limit.
A bucket's stream grows with the creations of two buckets, so loads start from a snapshot (every 100 events).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from eventsourcing.domain import Aggregate

from domain.shared.ids import derived_id


def bucket_of(at: datetime, per_seconds: int) -> int:
    return int(at.timestamp() // per_seconds)


def window_id(policy_id: uuid.UUID, account_id: uuid.UUID, per_seconds: int, bucket: int) -> uuid.UUID:
    return derived_id("rate-window", policy_id, account_id, per_seconds, bucket)


class RateWindow(Aggregate):
    TOPIC = "policies:RateWindow"
    SNAPSHOT_EVERY = 100

    class Created(Aggregate.Created):
        TOPIC = "policies:RateWindow.Created"  # required by eventsourcing once TOPIC is set; never triggered

    class Event(Aggregate.Event):
        TOPIC = "policies:RateWindow.Event"

    class Opened(Aggregate.Created):
        TOPIC = "policies:RateWindow.Opened"
        policy_id: uuid.UUID
        account_id: uuid.UUID
        per_seconds: int
        bucket: int

    class Counted(Aggregate.Event):
        """Public name policy.rate-counted: a task (or order) created under the limit, at `at`."""

        TOPIC = "policies:RateWindow.Counted"
        task_id: uuid.UUID
        at: datetime

        def apply(self, aggregate: Any) -> None:
            aggregate.created[str(self.task_id)] = self.at

    def __init__(self, policy_id: uuid.UUID, account_id: uuid.UUID, per_seconds: int, bucket: int) -> None:
        self.policy_id, self.account_id, self.per_seconds, self.bucket = policy_id, account_id, per_seconds, bucket
        self.created: dict[str, datetime] = {}  # task id (a string: snapshots are JSON) -> when it was created

    @classmethod
    def open(cls, policy_id: uuid.UUID, account_id: uuid.UUID, per_seconds: int, bucket: int,
             at: datetime) -> RateWindow:
        return cls._create(cls.Opened, id=window_id(policy_id, account_id, per_seconds, bucket), timestamp=at,
                           policy_id=policy_id, account_id=account_id, per_seconds=per_seconds, bucket=bucket)

    def recent(self, at: datetime, besides: uuid.UUID | None) -> int:
        """Creations since at - per_seconds (exclusive), other than `besides` (a retried command). One recorded
        a moment later than `at` (another server's clock) counts too: it happened."""
        since = at.timestamp() - self.per_seconds
        skip = str(besides) if besides is not None else None
        return sum(1 for task, t in self.created.items() if task != skip and t.timestamp() > since)

    def count(self, task_id: uuid.UUID, at: datetime) -> None:
        if str(task_id) not in self.created:
            self.trigger_event(self.Counted, timestamp=at, task_id=task_id, at=at)

"""Backtest a policy (saved or draft) over the recorded tasks and orders of a time window, from the event log.

A label selector is judged on the labels each machine had when each replayed action happened: the machines'
own streams, folded by the Machine aggregate (time travel), not the machines read model as it is now.
"""

from __future__ import annotations

import uuid
from bisect import bisect_right
from datetime import datetime
from typing import Any

import asyncpg
import msgspec

from app.store.event_store import COLUMNS, row_to_event
from app.store.mapper import to_domain_event
from app.store.repository import stream_type_of
from domain.machines.aggregate import Machine
from domain.policies.backtest import Replayed, Report, backtest
from domain.policies.values import Action, PolicyVersion, Reputation, Seller
from domain.shared.money import Money
from projections.policies_reader import task_history


class BacktestResult:
    def __init__(self, report: Report, rows: int, truncated: bool) -> None:
        self.report, self.rows, self.truncated = report, rows, truncated


async def run_backtest(pool: asyncpg.Pool, policy: PolicyVersion, since: datetime, until: datetime,
                       limit: int) -> BacktestResult:
    rows = await task_history(pool, None if policy.platform else policy.account_id, since, until, limit + 1)
    truncated, rows = len(rows) > limit, rows[:limit]
    machines = list({uuid.UUID(r["machine_id"]) for r in rows if r["machine_id"]})
    labels = await label_history(pool, machines, until)
    history: list[Replayed] = []
    orders: dict[uuid.UUID, int] = {}  # an order's task -> where the order's action sits in `history`
    for row in rows:
        d: dict[str, Any] = msgspec.json.decode(row["data"])
        stream_id, machine_id = row["stream_id"], uuid.UUID(row["machine_id"])
        at = datetime.fromisoformat(d["timestamp"])
        base = Action(kind="create-task", at=at, account_id=uuid.UUID(row["account_id"]), machine_id=machine_id,
                      labels=labels.at(machine_id, at))
        if row["type"] == "market:Order.Placed":
            # Judged as enforcement judges an order: one `order` action with the seller and the fixed price.
            task_id = uuid.UUID(d["task_id"])
            orders[task_id] = len(history)
            history.append(Replayed(task_id=task_id, order_id=stream_id, action=msgspec.structs.replace(
                base, kind="order", capability=d["capability"], provider_key=d["provider_key"],
                seller=Seller(machine_id=uuid.UUID(d["seller_machine_id"]),
                              account_id=uuid.UUID(d["seller_account_id"])),
                price=Money(d["price"]["amount"], d["price"]["currency"]), reputation=Reputation())))
            continue
        if row["type"].endswith(".Submitted"):
            if stream_id not in orders:  # an order's task is not a task creation of its own
                history.append(Replayed(task_id=stream_id, action=msgspec.structs.replace(
                    base, capability=d["capability"])))
            continue
        step, record = d["steps"][0], (d["ranked"][0]["record"] if d["ranked"] else {})
        reputation = Reputation(runs=record.get("runs", 0), success_rate=record.get("success_rate"))
        if stream_id in orders:  # the reputation the order's decision saw is the one its route was ranked on
            i = orders[stream_id]
            history[i] = msgspec.structs.replace(history[i], action=msgspec.structs.replace(
                history[i].action, reputation=reputation))
            continue
        history.append(Replayed(task_id=stream_id, action=msgspec.structs.replace(
            base, kind="resolve", capability=step["capability"], provider_key=step["provider_key"],
            seller=Seller(machine_id=uuid.UUID(step["seller_machine_id"]),
                          account_id=uuid.UUID(step["seller_account_id"])),
            price=Money(step["price"]["amount"], step["price"]["currency"]), reputation=reputation)))
    return BacktestResult(backtest(policy, history), len(history), truncated)


class LabelHistory:
    """Each machine's labels from each change on: (times, labels) per machine, in time order."""

    def __init__(self, changes: dict[uuid.UUID, tuple[list[datetime], list[dict[str, str]]]]) -> None:
        self.changes = changes

    def at(self, machine_id: uuid.UUID, at: datetime) -> dict[str, str]:
        times, labels = self.changes.get(machine_id, ([], []))
        i = bisect_right(times, at) - 1
        return labels[max(i, 0)] if labels else {}


async def label_history(pool: asyncpg.Pool, machine_ids: list[uuid.UUID], until: datetime) -> LabelHistory:
    """The machines' streams up to `until`, folded event by event by the aggregate, noting each label change."""
    changes: dict[uuid.UUID, tuple[list[datetime], list[dict[str, str]]]] = {}
    if not machine_ids:
        return LabelHistory(changes)
    rows = await pool.fetch(f"SELECT {COLUMNS} FROM events WHERE stream_id = ANY($1::uuid[]) AND stream_type = $2"
                            " AND recorded_at < $3 ORDER BY stream_id, version",
                            machine_ids, stream_type_of(Machine), until)
    machine: Any = None
    for row in rows:
        event = row_to_event(row)
        if machine is None or machine.id != event.stream_id:
            machine = None
        machine = to_domain_event(event).mutate(machine)
        times, labels = changes.setdefault(event.stream_id, ([], []))
        if not labels or labels[-1] != machine.labels:
            times.append(machine.modified_on)
            labels.append(dict(machine.labels))
    return LabelHistory(changes)

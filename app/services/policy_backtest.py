"""Backtest a policy (saved or draft) over the recorded task history of a time window, from the event log."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import asyncpg
import msgspec

from domain.policies.backtest import Replayed, Report, backtest
from domain.policies.values import Action, PolicyVersion, Reputation, Seller
from domain.shared.money import Money
from projections.policies_reader import machine_labels, task_history


class BacktestResult:
    def __init__(self, report: Report, rows: int, truncated: bool) -> None:
        self.report, self.rows, self.truncated = report, rows, truncated


async def run_backtest(pool: asyncpg.Pool, policy: PolicyVersion, since: datetime, until: datetime,
                       limit: int) -> BacktestResult:
    """Machines are judged with their current labels (label history is not replayed)."""
    rows = await task_history(pool, None if policy.platform else policy.account_id, since, until, limit + 1)
    truncated, rows = len(rows) > limit, rows[:limit]
    machines = list({uuid.UUID(r["machine_id"]) for r in rows if r["machine_id"]})
    labels = await machine_labels(pool, machines) if machines else {}
    history = []
    for row in rows:
        d: dict[str, Any] = msgspec.json.decode(row["data"])
        task_id, machine_id = row["stream_id"], uuid.UUID(row["machine_id"])
        at = datetime.fromisoformat(d["timestamp"])
        base = Action(kind="create-task", at=at, account_id=uuid.UUID(row["account_id"]), machine_id=machine_id,
                      labels=labels.get(machine_id, {}))
        if row["type"].endswith(".Submitted"):
            history.append(Replayed(task_id=task_id, action=msgspec.structs.replace(base,
                                                                                    capability=d["capability"])))
            continue
        step, record = d["steps"][0], (d["ranked"][0]["record"] if d["ranked"] else {})
        history.append(Replayed(task_id=task_id, action=msgspec.structs.replace(
            base, kind="resolve", capability=step["capability"], provider_key=step["provider_key"],
            seller=Seller(machine_id=uuid.UUID(step["seller_machine_id"]),
                          account_id=uuid.UUID(step["seller_account_id"])),
            price=Money(step["price"]["amount"], step["price"]["currency"]),
            reputation=Reputation(runs=record.get("runs", 0), success_rate=record.get("success_rate")))))
    return BacktestResult(backtest(policy, history), len(rows), truncated)

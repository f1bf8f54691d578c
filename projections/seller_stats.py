"""Seller reputation read model: runs, success rate, p50 latency and cooldown per seller machine, from task runs."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from app.settings import get_settings
from app.store.types import RecordedEvent
from projections.base import Tables

RUN_FINISHED = "tasks:Task.RunFinished"
# A seller's 4xx refuses the buyer's request (bad input, say), not the seller's health: counting it would let any
# buyer cool a seller down by sending bad input. 401/403/407 refuse our credentials (the seller's set-up), and
# 408/429 mean overloaded or slow: those count.
_BUYERS_FAULT = frozenset(range(400, 500)) - {401, 403, 407, 408, 429}


@dataclass(frozen=True)
class CooldownPolicy:
    failures: int = 3
    cooldown_s: float = 60.0
    window: int = 100


@dataclass
class Stats:
    """One seller's fold state; `fold` applies one finished run, using only the run's own time."""

    account_id: uuid.UUID
    runs: int = 0
    successes: int = 0
    consecutive_failures: int = 0
    cooling_down_until: datetime | None = None
    recent_latencies_ms: list[int] = field(default_factory=list)
    last_run_at: datetime | None = None

    def fold(self, d: dict[str, Any], at: datetime, policy: CooldownPolicy) -> None:
        self.runs += 1
        self.last_run_at = at
        self.recent_latencies_ms = [*self.recent_latencies_ms, max(0, int(d["latency_ms"]))][-policy.window:]
        if d["succeeded"]:
            self.successes += 1
            self.consecutive_failures, self.cooling_down_until = 0, None
        elif counts_against_seller(d):
            self.consecutive_failures += 1
            # The failure that reaches the threshold starts the cooldown; each further one (the seller failed
            # again once it was tried after the cooldown) starts it afresh.
            if self.consecutive_failures >= policy.failures:
                self.cooling_down_until = at + timedelta(seconds=policy.cooldown_s)

    @property
    def p50_latency_ms(self) -> int | None:
        """The lower median of the window: a value that was observed, the same on every rebuild."""
        window = sorted(self.recent_latencies_ms)
        return window[(len(window) - 1) // 2] if window else None


def counts_against_seller(d: dict[str, Any]) -> bool:
    """Whether a failed run extends the seller's failure streak (a buyer-caused 4xx neither extends nor resets it)."""
    return d.get("http_status") not in _BUYERS_FAULT


class SellerStatsProjection:
    name = "seller_stats"
    prefixes = (RUN_FINISHED,)
    tables: tuple[str, ...] = ("seller_stats",)

    def __init__(self, policy: CooldownPolicy | None = None) -> None:
        if policy is None:
            s = get_settings()
            policy = CooldownPolicy(s.seller_cooldown_failures, s.seller_cooldown_s, s.seller_latency_window)
        self.policy = policy

    async def apply_many(self, conn: asyncpg.Connection, events: Sequence[RecordedEvent], t: Tables) -> None:
        runs = [e for e in events if e.type == RUN_FINISHED]
        if not runs:
            return
        table = t["seller_stats"]
        sellers = list({uuid.UUID(e.data["seller_machine_id"]) for e in runs})
        stats = {r["machine_id"]: Stats(account_id=r["account_id"], runs=r["runs"], successes=r["successes"],
                                        consecutive_failures=r["consecutive_failures"],
                                        cooling_down_until=r["cooling_down_until"],
                                        recent_latencies_ms=list(r["recent_latencies_ms"]),
                                        last_run_at=r["last_run_at"])
                 for r in await conn.fetch(f"SELECT * FROM {table} WHERE machine_id = ANY($1::uuid[])", sellers)}
        for e in runs:
            d = e.data
            seller = uuid.UUID(d["seller_machine_id"])
            s = stats.setdefault(seller, Stats(account_id=uuid.UUID(d["seller_account_id"])))
            s.fold(d, datetime.fromisoformat(d["timestamp"]), self.policy)
        # One multi-row upsert per batch (executemany would run the executor once per seller). The latency
        # windows travel as array literals: unnest would flatten an integer[][] into one column of integers.
        await conn.execute(
            f"INSERT INTO {table} (machine_id, account_id, runs, successes, consecutive_failures, cooling_down_until,"
            " recent_latencies_ms, p50_latency_ms, last_run_at, updated_at)"
            " SELECT machine_id, account_id, runs, successes, consecutive_failures, cooling_down_until,"
            " recent::integer[], p50, last_run_at, last_run_at"
            " FROM unnest($1::uuid[], $2::uuid[], $3::bigint[], $4::bigint[], $5::integer[], $6::timestamptz[],"
            " $7::text[], $8::integer[], $9::timestamptz[]) AS u(machine_id, account_id, runs, successes,"
            " consecutive_failures, cooling_down_until, recent, p50, last_run_at)"
            " ON CONFLICT (machine_id) DO UPDATE SET"
            " runs = EXCLUDED.runs, successes = EXCLUDED.successes,"
            " consecutive_failures = EXCLUDED.consecutive_failures, cooling_down_until = EXCLUDED.cooling_down_until,"
            " recent_latencies_ms = EXCLUDED.recent_latencies_ms, p50_latency_ms = EXCLUDED.p50_latency_ms,"
            " last_run_at = EXCLUDED.last_run_at, updated_at = EXCLUDED.updated_at",
            *(list(column) for column in zip(*(
                (mid, s.account_id, s.runs, s.successes, s.consecutive_failures, s.cooling_down_until,
                 "{" + ",".join(map(str, s.recent_latencies_ms)) + "}", s.p50_latency_ms, s.last_run_at)
                for mid, s in stats.items()), strict=True)),
        )

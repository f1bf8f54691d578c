"""The policies, machines and seller_stats read models as the policy service's PolicySource and SellerSource."""

from __future__ import annotations

import uuid

import asyncpg

from domain.policies.values import PolicyVersion, Reputation, Seller
from projections import policies_reader
from projections.catalogue_reader import seller_stats


class PolicyRows:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def governing(self, account_id: uuid.UUID, machine_id: uuid.UUID,
                        labels: dict[str, str]) -> list[PolicyVersion]:
        return await policies_reader.governing(self.pool, account_id, machine_id, labels)


class SellerRows:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def seller(self, machine_id: uuid.UUID) -> tuple[Seller, Reputation] | None:
        account = await policies_reader.machine_account(self.pool, machine_id)
        if account is None:
            return None
        stats = (await seller_stats(self.pool, [machine_id])).get(machine_id)
        reputation = Reputation(runs=stats.runs, success_rate=stats.success_rate) if stats else Reputation()
        return Seller(machine_id=machine_id, account_id=account), reputation


class UsageRows:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def budgets_reserved_by(self, task_id: uuid.UUID) -> list[uuid.UUID]:
        return await policies_reader.budgets_reserved_by(self.pool, task_id)

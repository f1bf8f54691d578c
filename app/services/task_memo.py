"""Read-model lookups remembered for one decision: an auto task's steps, decided one after the other on one load,
read the governing policies and the sellers' records once, and every step judges the same figures."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from app.services.policies import PolicySource
from app.services.task_discovery import ReputationSource
from domain.policies.values import PolicyVersion
from domain.tasks.commands import SellerRecord


class RememberedReputation:
    def __init__(self, source: ReputationSource) -> None:
        self.source = source
        self.known: dict[uuid.UUID, SellerRecord | None] = {}

    def remember(self, known: dict[uuid.UUID, SellerRecord | None]) -> None:
        """Records read already (with the catalogue's listings): not read again for this decision."""
        for machine_id, record in known.items():
            self.known.setdefault(machine_id, record)

    async def records(self, seller_machine_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, SellerRecord]:
        missing = [i for i in dict.fromkeys(seller_machine_ids) if i not in self.known]
        if missing:
            found = await self.source.records(missing)
            self.known.update({i: found.get(i) for i in missing})
        return {i: record for i in seller_machine_ids if (record := self.known[i]) is not None}


class RememberedPolicies:
    def __init__(self, source: PolicySource) -> None:
        self.source = source
        self.known: dict[tuple[uuid.UUID, uuid.UUID, tuple[tuple[str, str], ...]], list[PolicyVersion]] = {}

    async def governing(self, account_id: uuid.UUID, machine_id: uuid.UUID,
                        labels: dict[str, str]) -> list[PolicyVersion]:
        key = (account_id, machine_id, tuple(sorted(labels.items())))
        if key not in self.known:
            self.known[key] = await self.source.governing(account_id, machine_id, labels)
        return self.known[key]

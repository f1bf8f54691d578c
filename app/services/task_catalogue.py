"""The catalogue and seller_stats read models as discovery and resolve consume them (OfferSource,
ReputationSource): thin adapters over projections.catalogue_reader."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import asyncpg

from app.services.task_discovery import Offer
from domain.shared.money import Money
from domain.tasks.commands import Candidate, SellerRecord
from projections.catalogue_reader import find_listings, seller_stats

# Discovery records at most this many candidates (cheapest first): a route uses six at most, and the
# explanation stays readable.
MAX_OFFERS = 100


class CatalogueOffers:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def offers(self, *, capability: str, provider_keys: Sequence[str], max_price: Money | None,
                     sellers_allow: Sequence[uuid.UUID], sellers_deny: Sequence[uuid.UUID],
                     exclude_machine_id: uuid.UUID) -> list[Offer]:
        listings = await find_listings(self.pool, capability=capability, provider_keys=provider_keys,
                                       max_price=max_price, sellers_allow=sellers_allow, sellers_deny=sellers_deny,
                                       exclude_machine_id=exclude_machine_id, limit=MAX_OFFERS)
        return [Offer(candidate=Candidate(listing_id=x.listing_id, node_id=x.node_id,
                                          seller_machine_id=x.seller_machine_id,
                                          seller_account_id=x.seller_account_id, seller_name=x.seller_name,
                                          capability=x.capability, provider_key=x.provider_key, price=x.price),
                      input_schema=x.input_schema) for x in listings]


class SellerReputation:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def records(self, seller_machine_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, SellerRecord]:
        stats = await seller_stats(self.pool, seller_machine_ids)
        return {mid: SellerRecord(runs=s.runs, success_rate=s.success_rate, p50_latency_ms=s.p50_latency_ms,
                                  cooling_down=s.cooling_down) for mid, s in stats.items()}

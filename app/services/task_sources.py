"""The catalogue and seller_stats read models as the task service's OfferSource and ReputationSource."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import asyncpg

from app.services.task_discovery import Offer
from domain.shared.money import Money
from domain.tasks.commands import Candidate, SellerRecord
from projections.catalogue_reader import Listing, find_listings_and_sample, seller_stats

# At most this many candidates per discovery (cheapest first); a route uses at most 1 + 5 of them.
MAX_CANDIDATES = 100
# How many of the cheapest listings of the capability are also fetched without the constraints, so the record
# names the ones the constraints (or the buyer's own machine) left out; the rest stay unnamed and unbounded.
EXPLAINED_SAMPLE = 20


def _offer(listing: Listing, has_stats: bool) -> Offer:
    r = listing.reputation
    # As SellerReputation.records answers (seller_stats() names only sellers with a row), from the same row.
    record = SellerRecord(runs=r.runs, success_rate=r.success_rate, p50_latency_ms=r.p50_latency_ms,
                          cooling_down=listing.cooling_down) if has_stats else None
    return Offer(record=record, candidate=Candidate(
        listing_id=listing.listing_id, node_id=listing.node_id, seller_machine_id=listing.seller_machine_id,
        seller_account_id=listing.seller_account_id, seller_name=listing.seller_name,
        capability=listing.capability, provider_key=listing.provider_key, price=listing.price),
        input_schema=listing.input_schema)


class CatalogueOffers:
    """One statement over the catalogue's indexes: the listings that meet the constraints, and a small sample of
    the capability's cheapest listings whatever the constraints. discovery's screen() re-checks every one, so
    the sample's rejects become recorded drops with their reason, and the matches are candidates."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def offers(self, *, capability: str, provider_keys: Sequence[str], max_price: Money | None,
                     sellers_allow: Sequence[uuid.UUID], sellers_deny: Sequence[uuid.UUID],
                     exclude_machine_id: uuid.UUID) -> list[Offer]:
        found = await find_listings_and_sample(
            self.pool, capability=capability, provider_keys=provider_keys, max_price=max_price,
            sellers_allow=sellers_allow, sellers_deny=sellers_deny, exclude_machine_id=exclude_machine_id,
            limit=MAX_CANDIDATES, sample=EXPLAINED_SAMPLE)
        unique = {listing.listing_id: (listing, has_stats) for listing, has_stats in found}
        return [_offer(listing, has_stats) for listing, has_stats in unique.values()]


class SellerReputation:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def records(self, seller_machine_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, SellerRecord]:
        stats = await seller_stats(self.pool, list(seller_machine_ids))
        return {machine_id: SellerRecord(runs=s.runs, success_rate=s.success_rate, p50_latency_ms=s.p50_latency_ms,
                                         cooling_down=s.cooling_down)
                for machine_id, s in stats.items()}

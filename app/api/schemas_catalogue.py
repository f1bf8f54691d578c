"""Response bodies of the catalogue: listings as every account sees them (never an endpoint URL or token)."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

import msgspec

from app.api.schema_types import UtcTime
from projections.catalogue_reader import Listing

Currency = Annotated[str, msgspec.Meta(pattern=r"^[A-Z]{3}$", description="ISO 4217 code", examples=["USD"])]


class MoneyView(msgspec.Struct, rename="camel", frozen=True):
    amount: Annotated[int, msgspec.Meta(ge=0, description="integer minor units (cents)")]
    currency: Currency


class SellerView(msgspec.Struct, rename="camel", frozen=True):
    machine_id: uuid.UUID
    name: str


class HealthView(msgspec.Struct, rename="camel", frozen=True):
    """The seller's runtime endpoint for this listing's provider key, without its address or credentials."""

    endpoint_status: Annotated[str, msgspec.Meta(description="lease state; a listed offer's endpoint is active")]
    source: Annotated[str, msgspec.Meta(description="manual (no lease) or agent (leased, renewed by heartbeats)")]
    lease_expires_at: UtcTime | None
    last_seen_at: Annotated[UtcTime, msgspec.Meta(description="the endpoint's last upsert or agent heartbeat")]


class ReputationView(msgspec.Struct, rename="camel", frozen=True):
    runs: int
    success_rate: Annotated[float | None, msgspec.Meta(description="successes / runs; null before any run")]
    p50_latency_ms: Annotated[int | None, msgspec.Meta(description="median over the seller's recent runs")]


class ListingView(msgspec.Struct, rename="camel", frozen=True):
    id: Annotated[uuid.UUID, msgspec.Meta(description="stable listing id (orders name it)")]
    capability: str
    seller: SellerView
    price: MoneyView
    provider_key: str
    input_schema: dict[str, Any]
    health: HealthView
    reputation: ReputationView
    cooling_down: Annotated[bool, msgspec.Meta(description="the seller failed repeatedly; resolve skips it a while")]

    @classmethod
    def of(cls, r: Listing) -> ListingView:
        return cls(
            id=r.listing_id, capability=r.capability, seller=SellerView(machine_id=r.seller_machine_id,
                                                                         name=r.seller_name),
            price=MoneyView(amount=r.price.amount, currency=r.price.currency), provider_key=r.provider_key,
            input_schema=r.input_schema,
            health=HealthView(endpoint_status=r.endpoint_status, source=r.endpoint_source,
                              lease_expires_at=r.lease_expires_at, last_seen_at=r.last_seen_at),
            reputation=ReputationView(runs=r.reputation.runs, success_rate=r.reputation.success_rate,
                                      p50_latency_ms=r.reputation.p50_latency_ms),
            cooling_down=r.cooling_down,
        )


class ListingPage(msgspec.Struct, rename="camel", frozen=True):
    """One page of a list; nextCursor fetches the next (null on the last page)."""

    data: list[ListingView]
    next_cursor: str | None = None

"""Queries over the catalogue and seller_stats read models: discovery (find_listings), the catalogue API, stats."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any, TypeAlias

import asyncpg
import msgspec

from domain.shared.money import Money
from projections.catalogue import listing_id

Conn: TypeAlias = asyncpg.Pool | asyncpg.Connection

__all__ = ["Listing", "Reputation", "SellerStats", "find_listings", "find_listings_and_sample", "get_listing",
           "list_catalogue", "listing_id", "seller_stats"]


class Reputation(msgspec.Struct, frozen=True):
    runs: int
    success_rate: float | None  # successes / runs; None before the first run
    p50_latency_ms: int | None


class SellerStats(msgspec.Struct, frozen=True):
    machine_id: uuid.UUID
    runs: int
    successes: int
    success_rate: float | None
    p50_latency_ms: int | None
    consecutive_failures: int
    cooling_down_until: datetime | None
    cooling_down: bool  # cooling_down_until > the time of the read
    last_run_at: datetime | None


class Listing(msgspec.Struct, frozen=True):
    """A listed capability as discovery and GET /v1/catalogue see it (never an endpoint URL or token)."""

    listing_id: uuid.UUID
    node_id: uuid.UUID
    seller_machine_id: uuid.UUID
    seller_account_id: uuid.UUID
    seller_name: str
    capability: str
    provider_key: str
    price: Money
    input_schema: dict[str, Any]
    reputation: Reputation
    cooling_down: bool
    cooling_down_until: datetime | None
    endpoint_status: str  # the lease state: always "active" for a listed row
    endpoint_source: str  # "manual" or "agent" (leased)
    lease_expires_at: datetime | None  # None for a manual endpoint (no lease)
    last_seen_at: datetime  # the endpoint's last upsert or heartbeat


# Joins only rows of one listing each (primary keys and the unique (machine, provider key)), so the cost is
# the listing scan's: the partial indexes on catalogue_listings WHERE listed serve every filter.
_SELECT = """
SELECT l.id, l.node_id, l.machine_id, l.account_id, m.name AS seller_name, l.capability, l.provider_key,
       l.price_amount, l.price_currency, l.input_schema::text AS input_schema,
       e.status AS endpoint_status, e.source AS endpoint_source, e.lease_expires_at, e.last_seen_at,
       COALESCE(s.runs, 0) AS runs, COALESCE(s.successes, 0) AS successes, s.p50_latency_ms,
       s.cooling_down_until, COALESCE(s.cooling_down_until > {now}, false) AS cooling_down,
       s.machine_id IS NOT NULL AS has_stats
FROM catalogue_listings l
JOIN catalogue_machines m ON m.id = l.machine_id
JOIN catalogue_endpoints e ON e.machine_id = l.machine_id AND e.provider_key = l.provider_key
LEFT JOIN seller_stats s ON s.machine_id = l.machine_id
WHERE l.listed"""


def _rate(successes: int, runs: int) -> float | None:
    return successes / runs if runs else None


def _listing(r: asyncpg.Record) -> Listing:
    return Listing(
        listing_id=r["id"], node_id=r["node_id"], seller_machine_id=r["machine_id"], seller_account_id=r["account_id"],
        seller_name=r["seller_name"], capability=r["capability"], provider_key=r["provider_key"],
        price=Money(r["price_amount"], r["price_currency"]), input_schema=msgspec.json.decode(r["input_schema"]),
        reputation=Reputation(runs=r["runs"], success_rate=_rate(r["successes"], r["runs"]),
                              p50_latency_ms=r["p50_latency_ms"]),
        cooling_down=r["cooling_down"], cooling_down_until=r["cooling_down_until"],
        endpoint_status=r["endpoint_status"], endpoint_source=r["endpoint_source"],
        lease_expires_at=r["lease_expires_at"], last_seen_at=r["last_seen_at"],
    )


class _Query:
    """Builds the WHERE clause with only the filters asked for, so each shape gets a plan fit for it."""

    def __init__(self, at: datetime | None) -> None:
        self.args: list[Any] = []
        self.sql = _SELECT.format(now=self.arg(at) + "::timestamptz" if at is not None else "now()")

    def arg(self, value: Any) -> str:
        self.args.append(value)
        return f"${len(self.args)}"

    def where(self, clause: str, *values: Any) -> None:
        self.sql += " AND " + clause.format(*(self.arg(v) for v in values))

    async def fetch(self, conn: Conn, order: str, limit: int) -> list[Listing]:
        rows = await conn.fetch(f"{self.sql} ORDER BY {order} LIMIT {self.arg(limit)}", *self.args)
        return [_listing(r) for r in rows]


def _filters(q: _Query, provider_keys: Sequence[str] | None, max_price: Money | None,
             sellers: Sequence[uuid.UUID] | None) -> None:
    if provider_keys:
        q.where("l.provider_key = ANY({0}::text[])", sorted({k.strip().lower() for k in provider_keys}))
    if max_price is not None:
        # Prices in another currency are not comparable: they are left out, never converted.
        q.where("l.price_currency = {0} AND l.price_amount <= {1}", max_price.currency, max_price.amount)
    if sellers:
        q.where("l.machine_id = ANY({0}::uuid[])", list(sellers))


async def find_listings(
    conn: Conn, *, capability: str, provider_keys: Sequence[str] | None = None, max_price: Money | None = None,
    sellers_allow: Sequence[uuid.UUID] | None = None, sellers_deny: Sequence[uuid.UUID] | None = None,
    exclude_machine_id: uuid.UUID | None = None, limit: int = 100, at: datetime | None = None,
) -> list[Listing]:
    """Listed offers of `capability` (exact name), cheapest first (then by listing id), at most `limit`.

    None or empty `provider_keys` / `sellers_allow` mean no restriction; `max_price` keeps only prices in its
    currency at or below its amount; `exclude_machine_id` is the buyer. Cooling-down sellers are included
    (with `cooling_down` set) so the caller can explain skipping them. `at` is "now" for `cooling_down`.
    """
    q = _Query(at)
    _discovery(q, capability, provider_keys, max_price, sellers_allow, sellers_deny, exclude_machine_id)
    return await q.fetch(conn, _CHEAPEST, limit)


_CHEAPEST = "l.price_amount, l.id"


def _discovery(q: _Query, capability: str, provider_keys: Sequence[str] | None, max_price: Money | None,
               sellers_allow: Sequence[uuid.UUID] | None, sellers_deny: Sequence[uuid.UUID] | None,
               exclude_machine_id: uuid.UUID | None) -> None:
    q.where("l.capability = {0}", capability)
    _filters(q, provider_keys, max_price, sellers_allow)
    if sellers_deny:
        q.where("NOT (l.machine_id = ANY({0}::uuid[]))", list(sellers_deny))
    if exclude_machine_id is not None:
        q.where("l.machine_id <> {0}", exclude_machine_id)


async def find_listings_and_sample(
    conn: Conn, *, capability: str, provider_keys: Sequence[str] | None = None, max_price: Money | None = None,
    sellers_allow: Sequence[uuid.UUID] | None = None, sellers_deny: Sequence[uuid.UUID] | None = None,
    exclude_machine_id: uuid.UUID | None = None, limit: int = 100, sample: int = 20, at: datetime | None = None,
) -> list[tuple[Listing, bool]]:
    """find_listings(...) followed by the `sample` cheapest listings of `capability` whatever the constraints, in
    one statement (one round trip; each branch keeps its own index-served plan). A listing in both comes twice.
    Each with whether its seller has a seller_stats row (seller_stats() would name it)."""
    q = _Query(at)
    _discovery(q, capability, provider_keys, max_price, sellers_allow, sellers_deny, exclude_machine_id)
    matching = f"{q.sql} ORDER BY {_CHEAPEST} LIMIT {q.arg(limit)}"
    q.sql = _SELECT.format(now=q.arg(at) + "::timestamptz" if at is not None else "now()")
    q.where("l.capability = {0}", capability)
    rows = await conn.fetch(f"({matching}) UNION ALL ({q.sql} ORDER BY {_CHEAPEST} LIMIT {q.arg(sample)})",
                            *q.args)
    return [(_listing(r), r["has_stats"]) for r in rows]


async def list_catalogue(
    conn: Conn, *, capability: str | None = None, provider_key: str | None = None, max_price: Money | None = None,
    currency: str | None = None, seller: uuid.UUID | None = None, after: uuid.UUID | None = None, limit: int = 50,
) -> list[Listing]:
    """One page of listings in listing-id order (keyset: strictly after `after`)."""
    q = _Query(None)
    if capability is not None:
        q.where("l.capability = {0}", capability)
    _filters(q, [provider_key] if provider_key else None, max_price, [seller] if seller else None)
    if currency is not None and max_price is None:
        q.where("l.price_currency = {0}", currency)
    if after is not None:
        q.where("l.id > {0}", after)
    return await q.fetch(conn, "l.id", limit)


async def get_listing(conn: Conn, listing: uuid.UUID, at: datetime | None = None) -> Listing | None:
    """The listing if it is listed now, else None (a row that stopped qualifying is not shown)."""
    q = _Query(at)
    q.where("l.id = {0}", listing)
    rows = await q.fetch(conn, "l.id", 1)
    return rows[0] if rows else None


async def seller_stats(conn: Conn, machine_ids: Sequence[uuid.UUID],
                       at: datetime | None = None) -> dict[uuid.UUID, SellerStats]:
    """Stats of these sellers; a seller with no finished run yet is absent from the result."""
    now = "$2::timestamptz" if at is not None else "now()"
    rows = await conn.fetch(
        "SELECT machine_id, runs, successes, p50_latency_ms, consecutive_failures, cooling_down_until,"
        f" COALESCE(cooling_down_until > {now}, false) AS cooling_down, last_run_at"
        " FROM seller_stats WHERE machine_id = ANY($1::uuid[])",
        list(machine_ids), *([at] if at is not None else []),
    )
    return {r["machine_id"]: SellerStats(
        machine_id=r["machine_id"], runs=r["runs"], successes=r["successes"],
        success_rate=_rate(r["successes"], r["runs"]), p50_latency_ms=r["p50_latency_ms"],
        consecutive_failures=r["consecutive_failures"], cooling_down_until=r["cooling_down_until"],
        cooling_down=r["cooling_down"], last_run_at=r["last_run_at"]) for r in rows}

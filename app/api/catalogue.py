"""HTTP routes of the market's catalogue: the listed offers, visible to every authenticated account."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, get
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, QueryParameter

from app.api.consistency import honour_min_position
from app.api.context import AUTHENTICATED, Principal, container_of, provide_principal
from app.api.openapi_headers import MIN_POSITION, headers
from app.api.pagination import DEFAULT_LIMIT, MAX_LIMIT, decode_cursor, encode_cursor
from app.api.problems import ApiError, problems
from app.api.schemas_catalogue import ListingPage, ListingView
from domain.graph.rules import MAX_AMOUNT, MAX_NAME
from domain.shared.errors import NotFound
from domain.shared.money import Money
from projections.catalogue_reader import get_listing, list_catalogue

# Filters accept an empty value as "no filter" (as X-Min-Position does), which is how clients send a null.
CURRENCY = r"^([A-Z]{3})?$"
PROVIDER_KEY_ANY_CASE = r"^([A-Za-z0-9][A-Za-z0-9._-]{0,62})?$"  # as app/api/schemas_runtime.ProviderKey
# The constraints sit in the types too, so the OpenAPI document puts them on the string branch of each
# optional parameter (where generators and validators look), not beside its null branch.
Capability = Annotated[str, msgspec.Meta(max_length=MAX_NAME)]
ProviderKeyFilter = Annotated[str, msgspec.Meta(pattern=PROVIDER_KEY_ANY_CASE)]
Amount = Annotated[int, msgspec.Meta(ge=0, le=MAX_AMOUNT)]
Currency = Annotated[str, msgspec.Meta(pattern=CURRENCY)]


def _after(cursor: str) -> uuid.UUID:
    (key,) = decode_cursor(cursor, 1)
    if isinstance(key, str):
        try:
            return uuid.UUID(key)
        except ValueError:
            pass
    raise ApiError(400, "VALIDATION_ERROR", "cursor is not valid; use nextCursor from a previous page")


class CatalogueController(Controller):
    path = "/v1/catalogue"
    tags = ["catalogue"]
    security = AUTHENTICATED
    dependencies = {"principal": Provide(provide_principal)}

    @get("/", operation_id="listCatalogue", opt=headers(honours=[MIN_POSITION]),
         summary="List the market's listings",
         description="Active capabilities of operational machines whose runtime endpoint for the capability's "
                     "provider key is active, in listing-id order. A listing leaves within one projection lag of "
                     "that ceasing to hold. `maxPrice` (minor units) needs `currency`: prices in another currency "
                     "are not comparable and are left out; `currency` alone keeps prices in that currency.",
         responses=problems(400, 401, 503))
    async def list_(
        self, request: Request[Any, Any, Any], principal: NamedDependency[Principal],
        capability: Annotated[Capability | None, QueryParameter(max_length=MAX_NAME,
                                                                description="exact capability name")] = None,
        provider_key: Annotated[ProviderKeyFilter | None, QueryParameter(
            name="providerKey", pattern=PROVIDER_KEY_ANY_CASE, description="stored lower-cased")] = None,
        max_price: Annotated[Amount | None, QueryParameter(name="maxPrice", ge=0, le=MAX_AMOUNT,
                                                           description="at most this price (minor units)")] = None,
        currency: Annotated[Currency | None, QueryParameter(pattern=CURRENCY, description="ISO 4217 code")] = None,
        seller: Annotated[uuid.UUID | None, QueryParameter(description="the seller's machine id")] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
        cursor: Annotated[str | None, QueryParameter(max_length=512)] = None,
    ) -> ListingPage:
        c = container_of(request)
        after = _after(cursor) if cursor else None
        capability, provider_key, currency = capability or None, provider_key or None, currency or None
        if max_price is not None and currency is None:
            raise ApiError(400, "VALIDATION_ERROR", "maxPrice needs currency (prices compare within one currency)")
        await honour_min_position(request, c.pool, "catalogue", c.settings.read_your_writes_timeout_s)
        rows = await list_catalogue(
            c.pool, capability=capability, provider_key=provider_key.lower() if provider_key else None,
            max_price=Money(max_price, currency) if max_price is not None and currency else None,
            currency=currency, seller=seller, after=after, limit=limit + 1,
        )
        more = len(rows) > limit
        rows = rows[:limit]
        return ListingPage(data=[ListingView.of(r) for r in rows],
                           next_cursor=encode_cursor(str(rows[-1].listing_id)) if more else None)

    @get("/{listing_id:uuid}", operation_id="getListing", opt=headers(honours=[MIN_POSITION]),
         summary="Get one listing", description="404 when there is no such listing or it is not listed now.",
         responses=problems(400, 401, 404, 503))
    async def get_one(self, request: Request[Any, Any, Any], principal: NamedDependency[Principal],
                      listing_id: FromPath[uuid.UUID]) -> ListingView:
        c = container_of(request)
        await honour_min_position(request, c.pool, "catalogue", c.settings.read_your_writes_timeout_s)
        row = await get_listing(c.pool, listing_id)
        if row is None:
            raise NotFound(f"listing {listing_id} is not in the catalogue")
        return ListingView.of(row)

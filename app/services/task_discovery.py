"""Discovery's filters that need the application layer: the task input against each listing's inputSchema."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any, Literal, Protocol, runtime_checkable

import jsonschema
import msgspec
from jsonschema.exceptions import SchemaError, ValidationError

from app.services.json_schemas import compiled_validator, schema_key
from domain.shared.money import Money
from domain.tasks.commands import Candidate, Constraints, Dropped, SellerRecord


class Offer(msgspec.Struct, frozen=True, kw_only=True):
    """A listed capability as discovery needs it: the candidate it would become and the schema its input must meet."""

    candidate: Candidate
    input_schema: dict[str, Any]
    # The seller's reputation as ReputationSource.records would answer for it now, when the source read it with
    # the listing ("unknown": it did not; None: the seller has no record).
    record: SellerRecord | Literal["unknown"] | None = "unknown"


@runtime_checkable
class OfferSource(Protocol):
    """The catalogue, as discovery queries it (the constraints applied in the query, by its indexes)."""

    async def offers(self, *, capability: str, provider_keys: Sequence[str], max_price: Money | None,
                     sellers_allow: Sequence[uuid.UUID], sellers_deny: Sequence[uuid.UUID],
                     exclude_machine_id: uuid.UUID) -> list[Offer]: ...


@runtime_checkable
class ReputationSource(Protocol):
    """Sellers' observed reputation (the seller_stats read model), as resolve scores it."""

    async def records(self, seller_machine_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, SellerRecord]: ...


def screen(offers: list[Offer], task_input: Any, buyer: uuid.UUID,
           constraints: Constraints) -> tuple[list[Candidate], list[Dropped]]:
    """Candidates in a stable order, and every listing left out with the reason (the explanation keeps both).

    The constraints are checked again here although the query applied them: a listing the query let through
    by mistake must not become a route, and the reasons must be recorded either way.
    """
    kept, dropped = [], []
    # One task input against many listings: those that share a schema (a capability's sellers mostly do) share
    # the verdict, so each distinct schema is applied once (a hundred validations were 40% of discover's CPU).
    verdicts: dict[bytes, str | None] = {}
    for offer in sorted(offers, key=lambda o: str(o.candidate.listing_id)):
        c = offer.candidate
        reason = _excluded(c, buyer, constraints)
        if reason is None:
            key = schema_key(offer.input_schema)
            if key not in verdicts:
                verdicts[key] = _input_mismatch(key, task_input)
            reason = verdicts[key]
        if reason:
            dropped.append(Dropped(listing_id=c.listing_id, seller_machine_id=c.seller_machine_id, reason=reason))
        else:
            kept.append(c)
    return kept, dropped


def _excluded(c: Candidate, buyer: uuid.UUID, k: Constraints) -> str | None:
    if c.seller_machine_id == buyer:
        return "the buyer's own listing"
    if k.sellers_allow and c.seller_machine_id not in k.sellers_allow:
        return "seller not in constraints.sellers.allow"
    if c.seller_machine_id in k.sellers_deny:
        return "seller in constraints.sellers.deny"
    if k.provider_keys and c.provider_key not in k.provider_keys:
        return f"providerKey {c.provider_key} not in constraints.providerKeys"
    if k.max_price is not None and (c.price.currency != k.max_price.currency or c.price.amount > k.max_price.amount):
        return f"price {c.price.amount} {c.price.currency} above constraints.maxPrice"
    return None


def _input_mismatch(schema_json: bytes, task_input: Any) -> str | None:
    try:
        compiled = compiled_validator(schema_json)
    except SchemaError as exc:
        return f"the listing's inputSchema is not a valid JSON Schema: {exc.message}"
    try:
        error = jsonschema.exceptions.best_match(compiled.iter_errors(task_input))
    except Exception as exc:  # a hostile schema (an unresolvable $ref, a bad regex) drops the listing, no 500
        return f"the listing's inputSchema cannot be applied: {type(exc).__name__}"
    if error is None:
        return None
    where = "/".join(str(p) for p in error.absolute_path) or "(root)"
    return f"input does not match the listing's inputSchema at {where}: {_short(error)}"


def _short(error: ValidationError) -> str:
    return error.message if len(error.message) <= 300 else error.message[:297] + "..."

"""Imperative order commands (frozen structs); ids, time and the intent's nonce come from the caller."""

from __future__ import annotations

import uuid
from datetime import datetime

import msgspec

from domain.shared.money import Money


class PlaceOrder(msgspec.Struct, frozen=True, kw_only=True):
    order_id: uuid.UUID
    account_id: uuid.UUID
    machine_id: uuid.UUID  # the buyer machine
    task_id: uuid.UUID
    listing_id: uuid.UUID
    capability: str
    seller_machine_id: uuid.UUID
    seller_account_id: uuid.UUID
    provider_key: str
    price: Money
    fee_bps: int
    confirm_window_s: int
    intent_id: uuid.UUID
    intent_ttl_s: int
    nonce: str


class Execution(msgspec.Struct, frozen=True, kw_only=True):
    """How the order's task ended, as its stream has it, with the seller's receipt (if any) and the check."""

    run_id: uuid.UUID | None
    succeeded: bool
    code: str | None
    http_status: int | None
    result_digest: str | None
    receipt: str | None
    receipt_verified: bool


class ProofOfPayment(msgspec.Struct, frozen=True, kw_only=True):
    """`mandate`: the buyer machine's signature of the signing payload (checked before); `rail`: a payment
    provider's signed confirmation (its reference and the callback's signature, checked before)."""

    method: str  # "mandate" | "rail"
    rail: str | None = None
    reference: str | None = None
    signature: str
    at: datetime | None = None

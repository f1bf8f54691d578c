"""Request and response bodies of the market order endpoints (camelCase, unknown fields refused)."""

from __future__ import annotations

import enum
import uuid
from typing import Annotated, Any

import msgspec

from app.api.schema_types import NOT_BLANK, UtcTime
from app.api.schemas_tasks import Capability, ConstraintsBody, Reason
from domain.market import order_states as o
from domain.market.order_terms import DEFAULT_CONFIRM_WINDOW_S, MAX_CONFIRM_WINDOW_S, MIN_CONFIRM_WINDOW_S
from domain.shared.money import Money
from domain.tasks import rules


class OrderStatus(enum.StrEnum):
    AWAITING_PAYMENT = o.AWAITING_PAYMENT
    PAID = o.PAID
    ESCROW_HELD = o.ESCROW_HELD
    EXECUTING = o.EXECUTING
    EXECUTED = o.EXECUTED
    CONFIRMED = o.CONFIRMED
    DISPUTED = o.DISPUTED
    SETTLED = o.SETTLED
    PAYMENT_FAILED = o.PAYMENT_FAILED
    CANCELLED = o.CANCELLED
    EXECUTION_FAILED = o.EXECUTION_FAILED


class PaymentStatus(enum.StrEnum):
    AWAITING_PROOF = o.P_AWAITING
    PROOF_RECORDED = o.P_PROVED
    CAPTURED = o.P_CAPTURED
    FAILED = o.P_FAILED
    CANCELLED = o.P_CANCELLED
    EXPIRED = o.P_EXPIRED


class EscrowStatus(enum.StrEnum):
    NONE = o.E_NONE
    HELD = o.E_HELD
    RELEASED = o.E_RELEASED
    REFUNDED = o.E_REFUNDED
    SPLIT = o.E_SPLIT


class OrderRole(enum.StrEnum):
    BUYER = "buyer"
    SELLER = "seller"


class DisputeOutcome(enum.StrEnum):
    REFUND = o.REFUND
    RELEASE = o.RELEASE
    SPLIT = o.SPLIT


Base64 = Annotated[str, msgspec.Meta(min_length=4, max_length=512, pattern=r"^[A-Za-z0-9+/]+={0,2}$",
                                     description="standard base64")]


class CreateOrderRequest(msgspec.Struct, rename="camel", forbid_unknown_fields=True, frozen=True):
    buyer_machine_id: uuid.UUID
    listing_id: Annotated[uuid.UUID, msgspec.Meta(
        description="the listing to buy; or give `capability` (and `constraints`) and the best listing is"
                    " picked as a task's resolve would pick it")] | None = None
    capability: Capability | None = None
    constraints: Annotated[ConstraintsBody, msgspec.Meta(
        description="as for tasks, to pick a listing by `capability`; `fallbacks` is ignored (an order pays one"
                    " seller); with `listingId` only `timeoutMs` applies")] | None = None
    input: Annotated[Any, msgspec.Meta(description=f"any JSON value, at most {rules.MAX_INPUT_BYTES} bytes"
                                                   " encoded; validated against the listing's inputSchema")] = None
    confirm_window_seconds: Annotated[int, msgspec.Meta(
        ge=MIN_CONFIRM_WINDOW_S, le=MAX_CONFIRM_WINDOW_S,
        description="how long after execution the buyer may confirm or dispute; then it is confirmed"
                    " automatically")] = DEFAULT_CONFIRM_WINDOW_S


class ProofBody(msgspec.Struct, rename="camel", forbid_unknown_fields=True, frozen=True):
    signature: Annotated[Base64, msgspec.Meta(
        description="the buyer machine's Ed25519 signature of paymentIntent.signingPayload's UTF-8 bytes")]


class PaymentRequest(msgspec.Struct, rename="camel", forbid_unknown_fields=True, frozen=True):
    proof: ProofBody


class DisputeRequest(msgspec.Struct, rename="camel", forbid_unknown_fields=True, frozen=True):
    reason: Annotated[str, msgspec.Meta(min_length=1, max_length=2000, pattern=NOT_BLANK)]


class ResolutionRequest(msgspec.Struct, rename="camel", forbid_unknown_fields=True, frozen=True):
    outcome: DisputeOutcome
    seller_share: Annotated[int, msgspec.Meta(
        ge=1, description="split only: minor units of the escrow released to the seller (the fee is taken pro"
                          " rata from them), the rest refunded")] | None = None
    note: Reason | None = None


class CancelOrderRequest(msgspec.Struct, rename="camel", forbid_unknown_fields=True, frozen=True):
    reason: Reason | None = None


class RailCallback(msgspec.Struct, rename="camel", forbid_unknown_fields=True, frozen=True):
    """A payment rail's confirmation that the order's intent was paid (signed, see MM-Signature)."""

    order_id: uuid.UUID
    intent_id: uuid.UUID
    amount: Annotated[int, msgspec.Meta(ge=1, description="minor units; must equal the intent's amount")]
    currency: Annotated[str, msgspec.Meta(pattern=r"^[A-Z]{3}$")]
    reference: Annotated[str, msgspec.Meta(min_length=1, max_length=200, pattern=NOT_BLANK,
                                           description="the rail's own id for the payment")]


# --- views ---------------------------------------------------------------------------------------


class PaymentIntentView(msgspec.Struct, rename="camel", frozen=True):
    id: uuid.UUID
    amount: Money
    fee: Money
    payee_account_id: uuid.UUID
    expires_at: UtcTime
    nonce: str
    signing_payload: Annotated[str, msgspec.Meta(description="the exact string whose UTF-8 bytes the buyer"
                                                             " machine signs (see the route's description)")]


class FailureView(msgspec.Struct, rename="camel", frozen=True):
    code: str
    detail: str


class PaymentView(msgspec.Struct, rename="camel", frozen=True):
    status: PaymentStatus
    method: str | None
    rail: str | None
    reference: str | None
    proof_recorded_at: UtcTime | None
    failure: FailureView | None


class EscrowView(msgspec.Struct, rename="camel", frozen=True):
    status: EscrowStatus
    held: Money
    released: Money
    refunded: Money
    held_at: UtcTime | None


class OrderExecutionView(msgspec.Struct, rename="camel", frozen=True):
    run_id: uuid.UUID | None
    succeeded: bool
    code: str | None
    http_status: int | None
    result_digest: str | None
    receipt: str | None
    receipt_verified: bool
    executed_at: UtcTime


class DisputeView(msgspec.Struct, rename="camel", frozen=True):
    reason: str
    evidence_run_ids: list[uuid.UUID]
    opened_at: UtcTime
    outcome: DisputeOutcome | None
    seller_share: int | None
    note: str | None
    resolved_at: UtcTime | None


class TimelineEntry(msgspec.Struct, rename="camel", frozen=True):
    type: Annotated[str, msgspec.Meta(examples=["market.order.created"])]
    at: UtcTime
    version: int


class OrderView(msgspec.Struct, rename="camel", frozen=True):
    id: uuid.UUID
    status: OrderStatus
    buyer_machine_id: uuid.UUID
    buyer_account_id: uuid.UUID
    seller_machine_id: uuid.UUID
    seller_account_id: uuid.UUID
    listing_id: uuid.UUID
    capability: str
    provider_key: str
    task_id: uuid.UUID
    price: Money
    fee: Money
    confirm_window_seconds: int
    confirm_by: UtcTime | None
    payment_intent: PaymentIntentView
    payment: PaymentView
    escrow: EscrowView
    execution: OrderExecutionView | None
    dispute: DisputeView | None
    cancel_reason: str | None
    version: int
    timeline: list[TimelineEntry]


class OrderSummary(msgspec.Struct, rename="camel", frozen=True):
    id: uuid.UUID
    status: OrderStatus
    payment_status: PaymentStatus
    escrow_status: EscrowStatus
    buyer_machine_id: uuid.UUID
    seller_machine_id: uuid.UUID
    listing_id: uuid.UUID
    capability: str
    task_id: uuid.UUID
    price: Money
    fee: Money
    created_at: UtcTime
    updated_at: UtcTime
    version: int


class OrderPage(msgspec.Struct, rename="camel", frozen=True):
    data: list[OrderSummary]
    next_cursor: str | None

"""The Order aggregate: a buyer machine's purchase of one listing, from payment intent to settlement.

Status, payment and escrow are three fields: status says where the order is in its life, payment what became of
the intent, escrow what became of the money held. Decisions that move money return the `Split` the service posts
to the ledger in the same append, so an order's record and the wallets can never disagree.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from eventsourcing.domain import Aggregate

from domain.market import order_states as st
from domain.market.order_commands import Execution, PlaceOrder, ProofOfPayment
from domain.market.order_errors import (
    ConfirmWindowClosed,
    ListingUnavailable,
    OrderStateConflict,
    PaymentIntentExpired,
)
from domain.market.order_terms import (
    MAX_CONFIRM_WINDOW_S,
    MIN_CONFIRM_WINDOW_S,
    Split,
    fee_of,
    seller_share_of,
    signing_payload,
    split_of,
)
from domain.shared.errors import PermissionDenied, ValidationFailed
from domain.shared.money import Money


class Order(Aggregate):
    TOPIC = "market:Order"

    class Created(Aggregate.Created):
        TOPIC = "market:Order.Created"  # required by eventsourcing once TOPIC is set; never triggered

    class Event(Aggregate.Event):
        TOPIC = "market:Order.Event"

    class Placed(Aggregate.Created):
        """market.order.created: the price and the seller are fixed here, from the listing."""

        TOPIC = "market:Order.Placed"
        account_id: uuid.UUID
        machine_id: uuid.UUID
        task_id: uuid.UUID
        listing_id: uuid.UUID
        capability: str
        seller_machine_id: uuid.UUID
        seller_account_id: uuid.UUID
        provider_key: str
        price: Money
        fee: Money
        confirm_window_s: int

    class PaymentIntentCreated(Aggregate.Event):
        TOPIC = "market:Order.PaymentIntentCreated"
        intent_id: uuid.UUID
        amount: Money
        fee: Money
        payee_account_id: uuid.UUID
        expires_at: datetime
        nonce: str
        signing_payload: str

        def apply(self, aggregate: Any) -> None:
            aggregate.intent = {"intent_id": self.intent_id, "amount": self.amount, "fee": self.fee,
                                "payee_account_id": self.payee_account_id, "expires_at": self.expires_at,
                                "nonce": self.nonce, "signing_payload": self.signing_payload}

    class ProofRecorded(Aggregate.Event):
        TOPIC = "market:Order.ProofRecorded"
        method: str
        rail: str | None
        reference: str | None
        signature: str

        def apply(self, aggregate: Any) -> None:
            aggregate.proof = {"method": self.method, "rail": self.rail, "reference": self.reference,
                               "signature": self.signature, "recorded_at": self.timestamp}
            aggregate.status, aggregate.payment = st.PAID, st.P_PROVED

    class EscrowHeld(Aggregate.Event):
        """market.payment.escrow-held. Since v2 it also requests the task's execution (`execution_requested`):
        the order's task executes only once its price is in escrow, and the two were always recorded together, so
        a separate Order.ExecutionRequested carried nothing of its own (the task's ExecutionRequested remains)."""

        TOPIC = "market:Order.EscrowHeld"
        class_version = 2
        amount: Money
        execution_requested: bool

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state["execution_requested"] = False  # v1 streams record an Order.ExecutionRequested after it

        def apply(self, aggregate: Any) -> None:
            status = st.EXECUTING if self.execution_requested else st.ESCROW_HELD
            aggregate.status, aggregate.payment, aggregate.escrow = status, st.P_CAPTURED, st.E_HELD
            aggregate.held_at = self.timestamp

    class PaymentFailed(Aggregate.Event):
        TOPIC = "market:Order.PaymentFailed"
        code: str
        detail: str

        def apply(self, aggregate: Any) -> None:
            aggregate.status, aggregate.payment = st.PAYMENT_FAILED, st.P_FAILED
            aggregate.failure = {"code": self.code, "detail": self.detail}

    class ExecutionRequested(Aggregate.Event):
        """Only in streams recorded before EscrowHeld v2 (which carries the request): kept so they still load."""

        TOPIC = "market:Order.ExecutionRequested"

        def apply(self, aggregate: Any) -> None:
            aggregate.status = st.EXECUTING

    class Executed(Aggregate.Event):
        """market.order.executed: the task's outcome, its run and result digest, the seller's receipt."""

        TOPIC = "market:Order.Executed"
        run_id: uuid.UUID | None
        succeeded: bool
        code: str | None
        http_status: int | None
        result_digest: str | None
        receipt: str | None
        receipt_verified: bool
        confirm_by: datetime | None

        def apply(self, aggregate: Any) -> None:
            aggregate.status = st.EXECUTED if self.succeeded else st.EXECUTION_FAILED
            aggregate.execution = {"run_id": self.run_id, "succeeded": self.succeeded, "code": self.code,
                                   "http_status": self.http_status, "result_digest": self.result_digest,
                                   "receipt": self.receipt, "receipt_verified": self.receipt_verified,
                                   "executed_at": self.timestamp}
            aggregate.confirm_by = self.confirm_by

    class Confirmed(Aggregate.Event):
        TOPIC = "market:Order.Confirmed"
        auto: bool

        def apply(self, aggregate: Any) -> None:
            aggregate.status, aggregate.confirmed_auto = st.CONFIRMED, self.auto

    class Disputed(Aggregate.Event):
        TOPIC = "market:Order.Disputed"
        reason: str
        evidence_run_ids: list[uuid.UUID]

        def apply(self, aggregate: Any) -> None:
            aggregate.status = st.DISPUTED
            aggregate.dispute = {"reason": self.reason, "evidence_run_ids": list(self.evidence_run_ids),
                                 "opened_at": self.timestamp, "outcome": None, "seller_share": None}

    class DisputeResolved(Aggregate.Event):
        TOPIC = "market:Order.DisputeResolved"
        outcome: str
        seller_share: int
        note: str | None

        def apply(self, aggregate: Any) -> None:
            aggregate.dispute.update(outcome=self.outcome, seller_share=self.seller_share, note=self.note,
                                     resolved_at=self.timestamp)

    class Released(Aggregate.Event):
        """market.payment.released: `seller` to the seller's available, `fee` to the platform."""

        TOPIC = "market:Order.Released"
        seller: Money
        fee: Money

        def apply(self, aggregate: Any) -> None:
            aggregate.released = self.seller + self.fee
            aggregate.escrow = st.E_SPLIT if aggregate.refunded.amount else st.E_RELEASED
            if aggregate.status in (st.CONFIRMED, st.DISPUTED):
                aggregate.status = st.SETTLED

    class Refunded(Aggregate.Event):
        TOPIC = "market:Order.Refunded"
        amount: Money

        def apply(self, aggregate: Any) -> None:
            aggregate.refunded = self.amount
            aggregate.escrow = st.E_SPLIT if aggregate.released.amount else st.E_REFUNDED
            if aggregate.status == st.DISPUTED:
                aggregate.status = st.SETTLED

    class Cancelled(Aggregate.Event):
        TOPIC = "market:Order.Cancelled"
        reason: str | None
        expired: bool

        def apply(self, aggregate: Any) -> None:
            aggregate.status = st.CANCELLED
            aggregate.payment = st.P_EXPIRED if self.expired else st.P_CANCELLED
            aggregate.cancel_reason = self.reason

    def __init__(self, account_id: uuid.UUID, machine_id: uuid.UUID, task_id: uuid.UUID, listing_id: uuid.UUID,
                 capability: str, seller_machine_id: uuid.UUID, seller_account_id: uuid.UUID, provider_key: str,
                 price: Money, fee: Money, confirm_window_s: int) -> None:
        self.account_id, self.machine_id, self.task_id = account_id, machine_id, task_id
        self.listing_id, self.capability, self.provider_key = listing_id, capability, provider_key
        self.seller_machine_id, self.seller_account_id = seller_machine_id, seller_account_id
        self.price, self.fee, self.confirm_window_s = price, fee, confirm_window_s
        self.status, self.payment, self.escrow = st.AWAITING_PAYMENT, st.P_AWAITING, st.E_NONE
        self.intent: dict[str, Any] = {}
        self.proof: dict[str, Any] | None = None
        self.failure: dict[str, Any] | None = None
        self.execution: dict[str, Any] | None = None
        self.dispute: dict[str, Any] | None = None
        self.held_at: datetime | None = None
        self.confirm_by: datetime | None = None
        self.confirmed_auto: bool | None = None
        self.cancel_reason: str | None = None
        self.released, self.refunded = Money(0, price.currency), Money(0, price.currency)

    # --- decisions -------------------------------------------------------------------------------

    @classmethod
    def place(cls, cmd: PlaceOrder, at: datetime) -> Order:
        if not MIN_CONFIRM_WINDOW_S <= cmd.confirm_window_s <= MAX_CONFIRM_WINDOW_S:
            raise ValidationFailed(f"confirmWindowSeconds must be within {MIN_CONFIRM_WINDOW_S}.."
                                   f"{MAX_CONFIRM_WINDOW_S}")
        if cmd.price.amount <= 0:
            raise ListingUnavailable("a listing without a positive price cannot be ordered")
        if cmd.seller_account_id == cmd.account_id:
            raise ListingUnavailable("an account cannot order from itself")
        fee = fee_of(cmd.price, cmd.fee_bps)
        order = cls._create(cls.Placed, id=cmd.order_id, timestamp=at, account_id=cmd.account_id,
                            machine_id=cmd.machine_id, task_id=cmd.task_id, listing_id=cmd.listing_id,
                            capability=cmd.capability, seller_machine_id=cmd.seller_machine_id,
                            seller_account_id=cmd.seller_account_id, provider_key=cmd.provider_key,
                            price=cmd.price, fee=fee, confirm_window_s=cmd.confirm_window_s)
        expires = at + timedelta(seconds=cmd.intent_ttl_s)
        payload = signing_payload(order_id=cmd.order_id, intent_id=cmd.intent_id, payer_machine_id=cmd.machine_id,
                                  payee_account_id=cmd.seller_account_id, amount=cmd.price, fee=fee,
                                  expires_at=expires, nonce=cmd.nonce)
        order.trigger_event(cls.PaymentIntentCreated, timestamp=at, intent_id=cmd.intent_id, amount=cmd.price,
                            fee=fee, payee_account_id=cmd.seller_account_id, expires_at=expires, nonce=cmd.nonce,
                            signing_payload=payload)
        return order

    @property
    def signing_payload(self) -> str:
        return str(self.intent["signing_payload"])

    def record_proof(self, proof: ProofOfPayment, at: datetime) -> bool:
        """False when this very proof is already recorded (a retried request records nothing)."""
        if self.proof is not None and self.proof["signature"] == proof.signature:
            return False
        self._require({st.AWAITING_PAYMENT}, "record a payment for")
        if at >= self.intent["expires_at"]:
            raise PaymentIntentExpired("the payment intent has expired; the order will be cancelled",
                                       expiresAt=self.intent["expires_at"].isoformat())
        self.trigger_event(self.ProofRecorded, timestamp=at, method=proof.method, rail=proof.rail,
                           reference=proof.reference, signature=proof.signature)
        return True

    def hold(self, at: datetime) -> Money | None:
        """The amount to move into escrow now (None: already held or no longer paid). The caller posts it with
        this event, which also requests the task's execution (status `executing`)."""
        if self.status != st.PAID:
            return None
        self.trigger_event(self.EscrowHeld, timestamp=at, amount=self.price, execution_requested=True)
        return self.price

    def fail_payment(self, code: str, detail: str, at: datetime) -> bool:
        if self.status != st.PAID:
            return False
        self.trigger_event(self.PaymentFailed, timestamp=at, code=code, detail=detail)
        return True

    def record_execution(self, result: Execution, at: datetime) -> Split | None:
        """The task's outcome; a failed execution refunds in full at once (the returned split says so)."""
        if self.status != st.EXECUTING:
            return None
        confirm_by = at + timedelta(seconds=self.confirm_window_s) if result.succeeded else None
        self.trigger_event(self.Executed, timestamp=at, run_id=result.run_id, succeeded=result.succeeded,
                           code=result.code, http_status=result.http_status, result_digest=result.result_digest,
                           receipt=result.receipt, receipt_verified=result.receipt_verified, confirm_by=confirm_by)
        if result.succeeded:
            return None
        return self._settle(split_of(self.price, self.fee, 0), at)

    def confirm(self, by_buyer: bool, at: datetime) -> Split | None:
        """The buyer's confirmation (within the window), or the timer's after it: releases the escrow.
        The timer's returns None when the order is no longer waiting (the buyer acted first)."""
        if not by_buyer:
            if self.status != st.EXECUTED or self.confirm_by is None or at < self.confirm_by:
                return None
        else:
            self._require({st.EXECUTED}, "confirm")
            self._within_window(at, "confirm")
        self.trigger_event(self.Confirmed, timestamp=at, auto=not by_buyer)
        return self._settle(split_of(self.price, self.fee, self.price.amount), at)

    def open_dispute(self, reason: str, run_ids: list[uuid.UUID], at: datetime) -> None:
        self._require({st.EXECUTED}, "dispute")
        self._within_window(at, "dispute")
        reason = reason.strip()
        if not reason:
            raise ValidationFailed("a dispute needs a reason")
        self.trigger_event(self.Disputed, timestamp=at, reason=reason, evidence_run_ids=run_ids)

    def resolve_dispute(self, outcome: str, seller_share: int | None, note: str | None, at: datetime) -> Split:
        self._require({st.DISPUTED}, "resolve the dispute of")
        share = seller_share_of(outcome, seller_share, self.price)
        self.trigger_event(self.DisputeResolved, timestamp=at, outcome=outcome, seller_share=share, note=note)
        return self._settle(split_of(self.price, self.fee, share), at)

    def cancel(self, reason: str | None, at: datetime, *, expired: bool = False) -> bool:
        """Before payment only. The intent timer cancels only an intent that has expired (False otherwise)."""
        if expired and (self.status != st.AWAITING_PAYMENT or at < self.intent["expires_at"]):
            return False
        if self.status == st.CANCELLED:
            return False
        self._require({st.AWAITING_PAYMENT}, "cancel")
        self.trigger_event(self.Cancelled, timestamp=at, reason=reason, expired=expired)
        return True

    def ensure_buyer(self, account_id: uuid.UUID | None, is_admin: bool, action: str) -> None:
        if not is_admin and account_id != self.account_id:
            raise PermissionDenied(f"only the buyer's account may {action} this order")

    def _settle(self, split: Split, at: datetime) -> Split:
        if split.released:
            self.trigger_event(self.Released, timestamp=at, seller=Money(split.seller, split.currency),
                               fee=Money(split.fee, split.currency))
        if split.refund:
            self.trigger_event(self.Refunded, timestamp=at, amount=Money(split.refund, split.currency))
        return split

    def _within_window(self, at: datetime, action: str) -> None:
        if self.confirm_by is not None and at >= self.confirm_by:
            raise ConfirmWindowClosed(f"the window to {action} closed at {self.confirm_by.isoformat()}",
                                      confirmBy=self.confirm_by.isoformat())

    def _require(self, allowed: set[str], action: str) -> None:
        if self.status not in allowed:
            raise OrderStateConflict(f"cannot {action} an order that is {self.status}", status=self.status)

"""Order aggregate, given/when/then on events: placing, paying, holding, executing, and every way it settles."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest

from app.store.mapper import event_type, rebuild, to_data
from app.store.types import RecordedEvent
from domain.market import order_states as o
from domain.market.order import Order
from domain.market.order_commands import Execution, PlaceOrder, ProofOfPayment
from domain.market.order_errors import (
    ConfirmWindowClosed,
    ListingUnavailable,
    OrderStateConflict,
    PaymentIntentExpired,
)
from domain.market.order_terms import fee_of, signing_payload, split_of
from domain.shared.errors import PermissionDenied, ValidationFailed
from domain.shared.money import Money
from tests.factories import FIXED_AT

T0 = FIXED_AT
BUYER_ACCOUNT, BUYER, SELLER_ACCOUNT, SELLER = uuid.uuid4(), uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
OK = Execution(run_id=uuid.uuid4(), succeeded=True, code=None, http_status=200, result_digest="ab" * 32,
               receipt=None, receipt_verified=False)
BAD = Execution(run_id=uuid.uuid4(), succeeded=False, code="UPSTREAM_FAILED", http_status=503, result_digest=None,
                receipt=None, receipt_verified=False)


def placed(price: int = 1000, fee_bps: int = 250, window: int = 60) -> Order:
    cmd = PlaceOrder(order_id=uuid.uuid4(), account_id=BUYER_ACCOUNT, machine_id=BUYER, task_id=uuid.uuid4(),
                     listing_id=uuid.uuid4(), capability="translate", seller_machine_id=SELLER,
                     seller_account_id=SELLER_ACCOUNT, provider_key="p", price=Money(price, "USD"), fee_bps=fee_bps,
                     confirm_window_s=window, intent_id=uuid.uuid4(), intent_ttl_s=900, nonce="n0nce")
    return Order.place(cmd, T0)


def names(order: Order) -> list[str]:
    return [type(e).__name__ for e in order.collect_events()]


def proof(sig: str = "c2ln") -> ProofOfPayment:
    return ProofOfPayment(method="mandate", signature=sig)


def executing() -> Order:
    order = placed()
    order.record_proof(proof(), T0)
    assert order.hold(T0) == Money(1000, "USD")
    return order


def executed() -> Order:
    order = executing()
    assert order.record_execution(OK, T0) is None
    order.collect_events()
    return order


def test_place_fixes_the_price_fee_and_an_intent_whose_payload_names_every_term() -> None:
    order = placed()
    assert names(order) == ["Placed", "PaymentIntentCreated"]
    assert (order.status, order.payment, order.escrow) == (o.AWAITING_PAYMENT, o.P_AWAITING, o.E_NONE)
    assert order.fee == Money(25, "USD")
    lines = order.signing_payload.split("\n")
    assert lines[0] == "mm-payment-v1" and len(lines) == 10
    assert f"order:{order.id}" in lines and f"payer:{BUYER}" in lines and f"payee:{SELLER_ACCOUNT}" in lines
    assert "amount:1000" in lines and "currency:USD" in lines and "fee:25" in lines and "nonce:n0nce" in lines
    assert lines[8] == "expires:2025-03-01T09:15:00Z"


def test_payload_changes_with_any_term() -> None:
    base = dict(order_id=uuid.uuid4(), intent_id=uuid.uuid4(), payer_machine_id=BUYER,
                payee_account_id=SELLER_ACCOUNT, amount=Money(5, "USD"), fee=Money(0, "USD"), expires_at=T0,
                nonce="x")
    one = signing_payload(**base)  # type: ignore[arg-type]
    assert one != signing_payload(**{**base, "amount": Money(6, "USD")})  # type: ignore[arg-type]
    assert one != signing_payload(**{**base, "payee_account_id": uuid.uuid4()})  # type: ignore[arg-type]


def test_place_refuses_a_bad_window_and_buying_from_oneself() -> None:
    with pytest.raises(ValidationFailed):
        placed(window=0)
    cmd = PlaceOrder(order_id=uuid.uuid4(), account_id=SELLER_ACCOUNT, machine_id=BUYER, task_id=uuid.uuid4(),
                     listing_id=uuid.uuid4(), capability="c", seller_machine_id=SELLER,
                     seller_account_id=SELLER_ACCOUNT, provider_key="p", price=Money(1, "USD"), fee_bps=0,
                     confirm_window_s=60, intent_id=uuid.uuid4(), intent_ttl_s=60, nonce="n")
    with pytest.raises(ListingUnavailable):
        Order.place(cmd, T0)


def test_proof_then_hold_requests_execution_and_a_repeat_records_nothing() -> None:
    order = placed()
    order.collect_events()
    assert order.record_proof(proof(), T0) is True
    assert order.record_proof(proof(), T0) is False
    assert (order.status, order.payment) == (o.PAID, o.P_PROVED)
    assert order.hold(T0) == Money(1000, "USD")
    assert names(order) == ["ProofRecorded", "EscrowHeld"]
    assert (order.status, order.payment, order.escrow) == (o.EXECUTING, o.P_CAPTURED, o.E_HELD)
    assert order.hold(T0) is None and names(order) == []


def test_a_second_different_proof_and_an_expired_intent_are_refused() -> None:
    order = placed()
    order.record_proof(proof("a"), T0)
    with pytest.raises(OrderStateConflict):
        order.record_proof(proof("b"), T0)
    late = placed()
    with pytest.raises(PaymentIntentExpired):
        late.record_proof(proof(), T0 + timedelta(seconds=900))


def test_insufficient_funds_fails_the_payment_once() -> None:
    order = placed()
    order.record_proof(proof(), T0)
    order.collect_events()
    assert order.fail_payment("INSUFFICIENT_FUNDS", "no", T0) is True
    assert order.fail_payment("INSUFFICIENT_FUNDS", "no", T0) is False
    assert names(order) == ["PaymentFailed"] and (order.status, order.payment) == (o.PAYMENT_FAILED, o.P_FAILED)


def test_success_opens_the_confirm_window_and_confirm_releases_everything() -> None:
    order = executing()
    order.collect_events()
    order.record_execution(OK, T0)
    assert order.status == o.EXECUTED and order.confirm_by == T0 + timedelta(seconds=60)
    order.collect_events()
    split = order.confirm(True, T0 + timedelta(seconds=5))
    assert split is not None and (split.seller, split.fee, split.refund) == (975, 25, 0)
    assert names(order) == ["Confirmed", "Released"]
    assert (order.status, order.escrow) == (o.SETTLED, o.E_RELEASED)
    with pytest.raises(OrderStateConflict):
        order.confirm(True, T0)
    with pytest.raises(OrderStateConflict):
        order.open_dispute("late", [], T0)


def test_failed_execution_refunds_in_full_at_once() -> None:
    order = executing()
    order.collect_events()
    split = order.record_execution(BAD, T0)
    assert split is not None and (split.seller, split.fee, split.refund) == (0, 0, 1000)
    assert names(order) == ["Executed", "Refunded"]
    assert (order.status, order.escrow) == (o.EXECUTION_FAILED, o.E_REFUNDED) and order.confirm_by is None


def test_the_timer_confirms_only_after_the_window_and_only_an_unanswered_order() -> None:
    order = executed()
    assert order.confirm(False, T0 + timedelta(seconds=59)) is None and names(order) == []
    split = order.confirm(False, T0 + timedelta(seconds=60))
    assert split is not None and order.confirmed_auto is True and order.status == o.SETTLED
    disputed = executed()
    disputed.open_dispute("wrong answer", [OK.run_id], T0)  # type: ignore[list-item]
    assert disputed.confirm(False, T0 + timedelta(days=1)) is None


def test_the_buyer_cannot_confirm_or_dispute_after_the_window() -> None:
    order = executed()
    with pytest.raises(ConfirmWindowClosed):
        order.confirm(True, T0 + timedelta(seconds=60))
    with pytest.raises(ConfirmWindowClosed):
        order.open_dispute("x", [], T0 + timedelta(seconds=61))


@pytest.mark.parametrize(("outcome", "share", "want"), [
    ("refund", None, (0, 0, 1000, o.E_REFUNDED, ["DisputeResolved", "Refunded"])),
    ("release", None, (975, 25, 0, o.E_RELEASED, ["DisputeResolved", "Released"])),
    ("split", 400, (390, 10, 600, o.E_SPLIT, ["DisputeResolved", "Released", "Refunded"])),
])
def test_dispute_resolutions_settle_the_escrow(outcome: str, share: int | None, want: tuple) -> None:  # type: ignore[type-arg]
    order = executed()
    order.open_dispute("  wrong answer ", [OK.run_id], T0)  # type: ignore[list-item]
    assert order.status == o.DISPUTED and order.dispute is not None and order.dispute["reason"] == "wrong answer"
    order.collect_events()
    split = order.resolve_dispute(outcome, share, None, T0)
    assert (split.seller, split.fee, split.refund, order.escrow, names(order)) == want
    assert order.status == o.SETTLED
    assert split.seller + split.fee + split.refund == 1000
    with pytest.raises(OrderStateConflict):
        order.resolve_dispute("refund", None, None, T0)


def test_split_needs_a_share_strictly_inside_the_price() -> None:
    for share in (None, 0, 1000):
        order = executed()
        order.open_dispute("x", [], T0)
        with pytest.raises(ValidationFailed):
            order.resolve_dispute("split", share, None, T0)


def test_cancel_before_payment_only_and_the_timer_only_after_expiry() -> None:
    order = placed()
    order.collect_events()
    assert order.cancel(None, T0 + timedelta(seconds=10), expired=True) is False
    assert order.cancel("changed my mind", T0) is True
    assert order.cancel("again", T0) is False
    assert names(order) == ["Cancelled"] and (order.status, order.payment) == (o.CANCELLED, o.P_CANCELLED)
    expiring = placed()
    assert expiring.cancel(None, T0 + timedelta(seconds=900), expired=True) is True
    assert expiring.payment == o.P_EXPIRED
    paid = placed()
    paid.record_proof(proof(), T0)
    with pytest.raises(OrderStateConflict):
        paid.cancel(None, T0)


def test_only_the_buyer_account_may_act() -> None:
    order = placed()
    order.ensure_buyer(BUYER_ACCOUNT, False, "pay")
    order.ensure_buyer(uuid.uuid4(), True, "pay")
    with pytest.raises(PermissionDenied):
        order.ensure_buyer(SELLER_ACCOUNT, False, "pay")


def test_fee_and_split_arithmetic_never_create_or_lose_money() -> None:
    assert fee_of(Money(999, "USD"), 250) == Money(24, "USD")
    for share in range(0, 1001, 37):
        s = split_of(Money(1000, "USD"), Money(25, "USD"), share)
        assert s.seller + s.fee + s.refund == 1000 and s.seller >= 0 and s.fee >= 0


def test_replaying_the_stored_events_rebuilds_the_same_order() -> None:
    order = executing()
    order.record_execution(OK, T0)
    order.open_dispute("x", [OK.run_id], T0)  # type: ignore[list-item]
    order.resolve_dispute("split", 500, "half", T0)
    events = order.collect_events()
    recorded = [RecordedEvent(position=i, tx_id=1, event_id=uuid.uuid4(), stream_id=order.id,
                              stream_type="market:Order", version=e.originator_version, type=event_type(e),
                              data=to_data(e), metadata={}, recorded_at=T0) for i, e in enumerate(events)]
    again = rebuild(recorded)
    assert isinstance(again, Order)
    assert (again.status, again.escrow, again.released, again.refunded) == (
        order.status, order.escrow, order.released, order.refunded)
    assert again.signing_payload == order.signing_payload and again.dispute == order.dispute


def test_a_hold_recorded_before_escrow_held_v2_still_loads_through_its_execution_request() -> None:
    """v1 streams: EscrowHeld (no execution_requested) then a separate ExecutionRequested; v2 is one event."""
    order = placed()
    order.record_proof(proof(), T0)
    events = order.collect_events()
    v1_held = {"amount": {"amount": 1000, "currency": "USD"}, "timestamp": T0.isoformat()}
    recorded = [RecordedEvent(position=i, tx_id=1, event_id=uuid.uuid4(), stream_id=order.id,
                              stream_type="market:Order", version=e.originator_version, type=event_type(e),
                              data=to_data(e), metadata={}, recorded_at=T0) for i, e in enumerate(events)]
    held = RecordedEvent(position=10, tx_id=1, event_id=uuid.uuid4(), stream_id=order.id, stream_type="market:Order",
                         version=4, type="market:Order.EscrowHeld", data=v1_held, metadata={}, recorded_at=T0)
    again = rebuild([*recorded, held])
    assert isinstance(again, Order) and (again.status, again.escrow) == (o.ESCROW_HELD, o.E_HELD)
    requested = RecordedEvent(position=11, tx_id=1, event_id=uuid.uuid4(), stream_id=order.id,
                              stream_type="market:Order", version=5, type="market:Order.ExecutionRequested",
                              data={"timestamp": T0.isoformat()}, metadata={}, recorded_at=T0)
    again = rebuild([*recorded, held, requested])
    assert isinstance(again, Order) and (again.status, again.escrow, again.version) == (o.EXECUTING, o.E_HELD, 5)

    order.hold(T0)
    (v2,) = order.collect_events()
    assert to_data(v2)["_classVersion"] == 2 and to_data(v2)["execution_requested"] is True

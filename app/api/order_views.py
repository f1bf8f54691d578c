"""Order views: the order as its stream has it (payment, escrow, execution, dispute, timeline), and list rows."""

from __future__ import annotations

from typing import Any

from app.api.schemas_orders import (
    DisputeOutcome,
    DisputeView,
    EscrowStatus,
    EscrowView,
    FailureView,
    OrderExecutionView,
    OrderStatus,
    OrderSummary,
    OrderView,
    PaymentIntentView,
    PaymentStatus,
    PaymentView,
    TimelineEntry,
)
from app.store.types import RecordedEvent
from domain.market.order import Order
from domain.shared.money import Money
from projections.audit_names import PUBLIC_NAMES


def order_of(order: Order, events: list[RecordedEvent]) -> OrderView:
    i, proof = order.intent, order.proof or {}
    e, d = order.execution, order.dispute
    return OrderView(
        id=order.id, status=OrderStatus(order.status), buyer_machine_id=order.machine_id,
        buyer_account_id=order.account_id, seller_machine_id=order.seller_machine_id,
        seller_account_id=order.seller_account_id, listing_id=order.listing_id, capability=order.capability,
        provider_key=order.provider_key, task_id=order.task_id, price=order.price, fee=order.fee,
        confirm_window_seconds=order.confirm_window_s, confirm_by=order.confirm_by,
        payment_intent=PaymentIntentView(id=i["intent_id"], amount=i["amount"], fee=i["fee"],
                                         payee_account_id=i["payee_account_id"], expires_at=i["expires_at"],
                                         nonce=i["nonce"], signing_payload=i["signing_payload"]),
        payment=PaymentView(status=PaymentStatus(order.payment), method=proof.get("method"), rail=proof.get("rail"),
                            reference=proof.get("reference"), proof_recorded_at=proof.get("recorded_at"),
                            failure=FailureView(**order.failure) if order.failure else None),
        escrow=EscrowView(status=EscrowStatus(order.escrow),
                          held=order.price if order.held_at else Money(0, order.price.currency),
                          released=order.released, refunded=order.refunded, held_at=order.held_at),
        execution=OrderExecutionView(**e) if e else None,
        dispute=DisputeView(reason=d["reason"], evidence_run_ids=d["evidence_run_ids"], opened_at=d["opened_at"],
                            outcome=DisputeOutcome(d["outcome"]) if d.get("outcome") else None,
                            seller_share=d.get("seller_share"), note=d.get("note"),
                            resolved_at=d.get("resolved_at")) if d else None,
        cancel_reason=order.cancel_reason, version=order.version,
        timeline=[TimelineEntry(type=PUBLIC_NAMES.get(ev.type, ev.type), at=ev.recorded_at, version=ev.version)
                  for ev in events],
    )


def order_row(r: Any) -> OrderSummary:
    return OrderSummary(
        id=r["id"], status=OrderStatus(r["status"]), payment_status=PaymentStatus(r["payment_status"]),
        escrow_status=EscrowStatus(r["escrow_status"]), buyer_machine_id=r["buyer_machine_id"],
        seller_machine_id=r["seller_machine_id"], listing_id=r["listing_id"], capability=r["capability"],
        task_id=r["task_id"], price=Money(r["amount"], r["currency"]), fee=Money(r["fee"], r["currency"]),
        created_at=r["created_at"], updated_at=r["updated_at"], version=r["version"])

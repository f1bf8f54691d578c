"""An order's status, payment and escrow states, and the outcomes a dispute can have."""

from __future__ import annotations

AWAITING_PAYMENT, PAID, ESCROW_HELD, EXECUTING, EXECUTED = "awaiting-payment", "paid", "escrow-held", "executing", \
    "executed"
CONFIRMED, DISPUTED, SETTLED = "confirmed", "disputed", "settled"
PAYMENT_FAILED, CANCELLED, EXECUTION_FAILED = "payment-failed", "cancelled", "execution-failed"
STATUSES = (AWAITING_PAYMENT, PAID, ESCROW_HELD, EXECUTING, EXECUTED, CONFIRMED, DISPUTED, SETTLED, PAYMENT_FAILED,
            CANCELLED, EXECUTION_FAILED)
# payment: what became of the intent; escrow: what became of the money held.
P_AWAITING, P_PROVED, P_CAPTURED, P_FAILED, P_CANCELLED, P_EXPIRED = ("awaiting-proof", "proof-recorded",
                                                                       "captured", "failed", "cancelled", "expired")
E_NONE, E_HELD, E_RELEASED, E_REFUNDED, E_SPLIT = "none", "held", "released", "refunded", "split"
REFUND, RELEASE, SPLIT = "refund", "release", "split"

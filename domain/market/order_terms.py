"""Pure payment terms: the platform fee, the split of an escrow, and the exact string a buyer signs."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from domain.shared.errors import ValidationFailed
from domain.shared.money import Money

SIGNING_VERSION = "mm-payment-v1"
MIN_CONFIRM_WINDOW_S, MAX_CONFIRM_WINDOW_S, DEFAULT_CONFIRM_WINDOW_S = 1, 30 * 86_400, 86_400
MAX_FEE_BPS = 10_000


def fee_of(price: Money, fee_bps: int) -> Money:
    """Basis points of the price, rounded down (the seller never gets less than the rounding favours)."""
    if not 0 <= fee_bps <= MAX_FEE_BPS:
        raise ValueError(f"fee basis points must be within 0..{MAX_FEE_BPS}, got {fee_bps}")
    return Money(price.amount * fee_bps // MAX_FEE_BPS, price.currency)


def rfc3339(at: datetime) -> str:
    """UTC, whole microseconds kept, with a Z: one spelling per instant (the payload must be reproducible)."""
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


def signing_payload(*, order_id: uuid.UUID, intent_id: uuid.UUID, payer_machine_id: uuid.UUID,
                    payee_account_id: uuid.UUID, amount: Money, fee: Money, expires_at: datetime,
                    nonce: str) -> str:
    """Newline-separated `key:value` lines in this fixed order, no trailing newline; the buyer signs its UTF-8
    bytes with the machine's Ed25519 key. Every term of the mandate is in it, so a signature authorises
    exactly this payment and nothing else (another amount, payee, order or a re-used intent)."""
    return "\n".join([
        SIGNING_VERSION,
        f"order:{order_id}",
        f"intent:{intent_id}",
        f"payer:{payer_machine_id}",
        f"payee:{payee_account_id}",
        f"amount:{amount.amount}",
        f"currency:{amount.currency}",
        f"fee:{fee.amount}",
        f"expires:{rfc3339(expires_at)}",
        f"nonce:{nonce}",
    ])


class Split:
    """Where an escrow goes: `seller` to the seller's available, `fee` to the platform, `refund` back to the buyer.
    The three always add up to the held amount."""

    def __init__(self, seller: int, fee: int, refund: int, currency: str) -> None:
        self.seller, self.fee, self.refund, self.currency = seller, fee, refund, currency

    @property
    def released(self) -> int:
        return self.seller + self.fee


def split_of(held: Money, fee: Money, seller_share: int) -> Split:
    """`seller_share` minor units of the held amount are released (the fee charged pro rata on them, rounded
    down), the rest refunded. seller_share == held: a full release; 0: a full refund."""
    if not 0 <= seller_share <= held.amount:
        raise ValueError(f"sellerShare must be within 0..{held.amount}")
    share_fee = fee.amount * seller_share // held.amount if held.amount else 0
    return Split(seller_share - share_fee, share_fee, held.amount - seller_share, held.currency)


def seller_share_of(outcome: str, seller_share: int | None, price: Money) -> int:
    """The minor units a dispute's outcome releases to the seller: none (refund), all (release), or the share."""
    from domain.market.order_states import REFUND, RELEASE, SPLIT

    if outcome not in (REFUND, RELEASE, SPLIT):
        raise ValidationFailed(f"unknown outcome {outcome!r}")
    if outcome != SPLIT:
        if seller_share is not None:
            raise ValidationFailed("sellerShare applies to a split only")
        return 0 if outcome == REFUND else price.amount
    if seller_share is None or not 0 < seller_share < price.amount:
        raise ValidationFailed(f"a split needs sellerShare within 1..{price.amount - 1} minor units")
    return seller_share

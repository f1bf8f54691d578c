"""Order errors with the stable codes the API answers."""

from __future__ import annotations

from domain.shared.errors import DomainError, NotFound


class OrderNotFound(NotFound):
    pass


class OrderStateConflict(DomainError):
    """The order is not in a state that allows this command (another command won a race, say)."""

    code = "ORDER_STATE_CONFLICT"


class PaymentProofInvalid(DomainError):
    """The signature does not verify against the buyer machine's key over the intent's signingPayload."""

    code = "PAYMENT_PROOF_INVALID"


class PaymentIntentExpired(DomainError):
    code = "PAYMENT_INTENT_EXPIRED"


class ConfirmWindowClosed(DomainError):
    """The buyer's window to confirm or dispute has passed: the order is being (or was) auto-confirmed."""

    code = "CONFIRM_WINDOW_CLOSED"


class ListingUnavailable(DomainError):
    """The listing is not in the catalogue (any more), or it cannot serve this order (input, policy, own)."""

    code = "LISTING_UNAVAILABLE"

"""Ledger errors with the stable codes the API answers."""

from __future__ import annotations

from domain.shared.errors import DomainError, ValidationFailed


class InsufficientFunds(DomainError):
    """The wallet's available balance does not cover the movement; nothing was recorded."""

    code = "INSUFFICIENT_FUNDS"


class EscrowAlreadyHeld(DomainError):
    """This order already holds escrow on this wallet (a second hold would lock the money twice)."""

    code = "ESCROW_ALREADY_HELD"


class EscrowNotHeld(DomainError):
    """No open hold for this order on this wallet: never held, or already released/refunded."""

    code = "ESCROW_NOT_HELD"


class CurrencyMismatch(ValidationFailed):
    """Money in one currency offered to a wallet or credit stream of another."""

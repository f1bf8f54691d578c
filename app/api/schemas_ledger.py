"""Request and response bodies of the ledger endpoints: balances, entries, deposits and withdrawals."""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

import msgspec

from app.api.schema_types import UtcTime
from app.services.ledger import CURRENCIES
from domain.graph.rules import MAX_AMOUNT

# The schema says exactly what is accepted: an ISO 4217 code with minor units ("XYZ" and "XAU" are 400s).
CURRENCY_PATTERN = f"^({'|'.join(CURRENCIES)})$"
CurrencyCode = Annotated[str, msgspec.Meta(pattern=CURRENCY_PATTERN, examples=["USD"],
                                           description="ISO 4217 currency code (one with minor units)")]
LedgerName = Literal["available", "escrow"]
Reference = Annotated[str, msgspec.Meta(min_length=1, max_length=200, description="your reference, kept with it")]


class AmountBody(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    amount: Annotated[int, msgspec.Meta(ge=1, le=MAX_AMOUNT, description="integer minor units, positive")]
    currency: CurrencyCode


class MovementRequest(msgspec.Struct, rename="camel", forbid_unknown_fields=True, frozen=True):
    amount: AmountBody
    reference: Reference | None = None


class BalanceMoney(msgspec.Struct, rename="camel", frozen=True):
    amount: Annotated[int, msgspec.Meta(ge=0, description="integer minor units")]
    currency: CurrencyCode


class SignedMoney(msgspec.Struct, rename="camel", frozen=True):
    amount: Annotated[int, msgspec.Meta(description="integer minor units: a credit > 0, a debit < 0")]
    currency: CurrencyCode


class BalanceView(msgspec.Struct, rename="camel", frozen=True):
    currency: CurrencyCode
    available: BalanceMoney
    escrow: BalanceMoney


class BalancesView(msgspec.Struct, rename="camel", frozen=True):
    data: list[BalanceView]


class MovementView(msgspec.Struct, rename="camel", frozen=True):
    """A recorded deposit or withdrawal (ledger.deposited / ledger.withdrawn)."""

    type: Literal["ledger.deposited", "ledger.withdrawn"]
    account_id: uuid.UUID
    amount: BalanceMoney
    reference: str | None
    occurred_at: UtcTime


class LedgerEntryView(msgspec.Struct, rename="camel", frozen=True):
    """One posting to one of the account's ledger accounts, with that ledger account's balance after it."""

    cursor: str
    event_id: uuid.UUID
    type: str
    ledger: LedgerName
    amount: SignedMoney
    balance_after: BalanceMoney
    order_id: uuid.UUID | None
    counterparty_account_id: uuid.UUID | None
    occurred_at: UtcTime


class LedgerEntryPage(msgspec.Struct, rename="camel", frozen=True):
    data: list[LedgerEntryView]
    next_cursor: str | None

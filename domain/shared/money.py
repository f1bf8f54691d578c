"""Money as integer minor units plus an ISO 4217 currency code; never floats."""

from __future__ import annotations

import re

import msgspec

_CURRENCY = re.compile(r"^[A-Z]{3}$")


class Money(msgspec.Struct, frozen=True):
    amount: int
    currency: str

    def __post_init__(self) -> None:
        if type(self.amount) is not int:  # bool is an int subclass; floats would round money away
            raise ValueError(f"amount must be an integer number of minor units, got {self.amount!r}")
        if not _CURRENCY.match(self.currency):
            raise ValueError(f"currency must be a three-letter ISO 4217 code, got {self.currency!r}")

    def __add__(self, other: Money) -> Money:
        self._same_currency(other)
        return Money(self.amount + other.amount, self.currency)

    def __sub__(self, other: Money) -> Money:
        self._same_currency(other)
        return Money(self.amount - other.amount, self.currency)

    def _same_currency(self, other: Money) -> None:
        if other.currency != self.currency:
            raise ValueError(f"cannot combine {self.currency} with {other.currency}")

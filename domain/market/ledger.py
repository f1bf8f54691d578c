"""The ledger's write side: a Wallet per (platform account, currency) and the seller's sharded credit streams.

Design (ARCHITECTURE.md §9): money moves only as balanced postings. Every movement is ONE event that carries
its `currency` and `postings` (domain.market.postings) summing to zero in it; balances and entries are read
models folded from those postings. Sufficiency is decided here, on the stream's version (optimistic concurrency).

- `Wallet` (stream id `wallet_id(account, currency)`, uuid5): deposits, withdrawals, escrow holds, releases,
  refunds. Its `available` is the spendable balance as this stream knows it; `escrow` and the open `holds` per
  order. Movement events: Deposited, Withdrawn, EscrowHeld, EscrowReleased, EscrowRefunded (all with postings).
- A release credits the SELLER without touching the seller's Wallet stream (the hot spot: many buyers releasing
  to one seller would all race on its version). The release's postings (on the buyer's wallet event) credit
  `available:<seller>`; a mirror `SellerCredits.Credited` (NO postings) is appended to one of the seller's
  CREDIT_SHARDS credit streams, chosen by the order id, in the same atomic append. Credits only ever grow, so a
  seller's withdrawal or hold may read its shards without a version check: before spending more than its wallet
  knows, the wallet `collect`s them (`CreditsCollected`, NO postings: the absolute shard totals it has counted),
  which can only under-count, never over-count, so `available` never goes negative. Mirror events never carry
  postings, so the ledger read model and `mm ledger verify` count each movement exactly once.
- Platform `fees` is only a ledger account in postings, never a stream: nothing contends on it.

`SellerCredits`, `CREDIT_SHARDS`, `credit_shard` and `credits_id` live in domain.market.credits and are
importable from here too.

API for order settlement (compose with the Order in ONE `Repository.save_all([...])`, retrying ConcurrencyConflict;
app.services.ledger.LedgerService loads/opens the aggregates and calls these):
- `Wallet.open(account_id, currency, at)` (new stream) / `wallet_id(account_id, currency)`.
- `wallet.deposit(amount: Money, at, reference=None)`; `wallet.withdraw(amount: Money, at, reference=None)`
  -> InsufficientFunds.
- `wallet.hold(order_id, amount: Money, at)`: available -> escrow; InsufficientFunds (nothing recorded, never
  negative), EscrowAlreadyHeld while this order's hold is open.
- `wallet.release(order_id, credits: SellerCredits, fee: int, at)`: the whole hold -> seller available minus `fee`,
  `fee` -> platform fees. `credits` is `SellerCredits` for (seller, currency, `credit_shard(order_id)`).
- `wallet.refund(order_id, at)`: the whole hold -> buyer available.
- `wallet.split(order_id, credits, seller_amount: int, fee: int, at)`: `seller_amount` released (fee out of it),
  the rest refunded, in one decision (two events). 0 or the whole hold degenerates to refund or release.
  release/refund/split raise EscrowNotHeld when the order has no open hold (so each settles at most once);
  fee must be 0 <= fee <= released amount (ValidationFailed). released + refunded == held always.
- `wallet.collect(shards: Sequence[SellerCredits], at)`: count new seller credits (call before a spend that
  `available` alone does not cover; LedgerService does).
Audit names: ledger.deposited, ledger.withdrawn, ledger.escrow-held, ledger.escrow-released,
ledger.escrow-refunded, ledger.credits-collected, ledger.seller-credited; `market.payment.*` belong to Order events.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import msgspec
from eventsourcing.domain import Aggregate

from domain.market.credits import CREDIT_SHARDS, SellerCredits, credit_shard, credits_id
from domain.market.errors import CurrencyMismatch, EscrowAlreadyHeld, EscrowNotHeld, InsufficientFunds
from domain.market.postings import AVAILABLE, ESCROW, EXTERNAL, FEES, Posting, posting_set
from domain.shared.errors import ValidationFailed
from domain.shared.ids import derived_id
from domain.shared.money import Money


def wallet_id(account_id: uuid.UUID, currency: str) -> uuid.UUID:
    return derived_id("wallet", account_id, currency)


class ShardTotal(msgspec.Struct, frozen=True):
    shard: int
    total: int


class Wallet(Aggregate):
    TOPIC = "market:Wallet"
    # Every hold and settlement loads the wallet: a snapshot every 20 events keeps a load at one snapshot row and
    # at most 19 events (at 100, a busy buyer's settlements replayed ~50 events each; a snapshot row costs one
    # write per 10 orders).
    SNAPSHOT_EVERY = 20

    class Created(Aggregate.Created):
        TOPIC = "market:Wallet.Created"  # required by eventsourcing once TOPIC is set; never triggered

    class Event(Aggregate.Event):
        TOPIC = "market:Wallet.Event"

    class Opened(Aggregate.Created):
        TOPIC = "market:Wallet.Opened"
        account_id: uuid.UUID
        currency: str

    class Deposited(Aggregate.Event):
        """Public name ledger.deposited: external -> available."""

        TOPIC = "market:Wallet.Deposited"
        amount: int
        reference: str | None
        currency: str
        postings: list[Posting]

        def apply(self, aggregate: Any) -> None:
            aggregate.available += self.amount

    class Withdrawn(Aggregate.Event):
        """Public name ledger.withdrawn: available -> external."""

        TOPIC = "market:Wallet.Withdrawn"
        amount: int
        reference: str | None
        currency: str
        postings: list[Posting]

        def apply(self, aggregate: Any) -> None:
            aggregate.available -= self.amount

    class EscrowHeld(Aggregate.Event):
        TOPIC = "market:Wallet.EscrowHeld"
        order_id: uuid.UUID
        amount: int
        currency: str
        postings: list[Posting]

        def apply(self, aggregate: Any) -> None:
            aggregate.available -= self.amount
            aggregate.escrow += self.amount
            aggregate.holds[str(self.order_id)] = self.amount

    class EscrowReleased(Aggregate.Event):
        """Escrow -> the seller's available (amount - fee) and the platform's fees (fee)."""

        TOPIC = "market:Wallet.EscrowReleased"
        order_id: uuid.UUID
        seller_account_id: uuid.UUID
        amount: int
        fee: int
        currency: str
        postings: list[Posting]

        def apply(self, aggregate: Any) -> None:
            aggregate.settle(self.order_id, self.amount)

    class EscrowRefunded(Aggregate.Event):
        TOPIC = "market:Wallet.EscrowRefunded"
        order_id: uuid.UUID
        amount: int
        currency: str
        postings: list[Posting]

        def apply(self, aggregate: Any) -> None:
            aggregate.settle(self.order_id, self.amount)
            aggregate.available += self.amount

    class CreditsCollected(Aggregate.Event):
        """A mirror, no postings: seller credits (already posted by the releases) this wallet now counts."""

        TOPIC = "market:Wallet.CreditsCollected"
        amount: int
        totals: list[ShardTotal]

        def apply(self, aggregate: Any) -> None:
            aggregate.available += self.amount
            for t in self.totals:
                aggregate.collected[str(t.shard)] = t.total

    def __init__(self, account_id: uuid.UUID, currency: str) -> None:
        self.account_id, self.currency = account_id, currency
        self.available = 0
        self.escrow = 0
        # String keys: snapshots are JSON, where a UUID or int key would not come back as itself.
        self.holds: dict[str, int] = {}
        self.collected: dict[str, int] = {}

    def settle(self, order_id: uuid.UUID, amount: int) -> None:
        """Evolve helper: part or all of a hold leaves escrow."""
        self.escrow -= amount
        left = self.holds.pop(str(order_id)) - amount
        if left:
            self.holds[str(order_id)] = left

    # --- decisions -------------------------------------------------------------------------------

    @classmethod
    def open(cls, account_id: uuid.UUID, currency: str, at: datetime) -> Wallet:
        return cls._create(cls.Opened, id=wallet_id(account_id, currency), timestamp=at, account_id=account_id,
                           currency=currency)

    def deposit(self, amount: Money, at: datetime, reference: str | None = None) -> None:
        self._check_amount(amount)
        self._move(self.Deposited, at, [Posting(EXTERNAL, None, -amount.amount),
                                        Posting(AVAILABLE, self.account_id, amount.amount)],
                   amount=amount.amount, reference=reference)

    def withdraw(self, amount: Money, at: datetime, reference: str | None = None) -> None:
        self._check_amount(amount)
        self._covers(amount.amount)
        self._move(self.Withdrawn, at, [Posting(AVAILABLE, self.account_id, -amount.amount),
                                        Posting(EXTERNAL, None, amount.amount)],
                   amount=amount.amount, reference=reference)

    def hold(self, order_id: uuid.UUID, amount: Money, at: datetime) -> None:
        self._check_amount(amount)
        if str(order_id) in self.holds:
            raise EscrowAlreadyHeld(f"order {order_id} already holds escrow", order_id=str(order_id))
        self._covers(amount.amount)
        self._move(self.EscrowHeld, at, [Posting(AVAILABLE, self.account_id, -amount.amount),
                                         Posting(ESCROW, self.account_id, amount.amount)],
                   order_id=order_id, amount=amount.amount)

    def release(self, order_id: uuid.UUID, credits: SellerCredits, fee: int, at: datetime) -> None:
        self.split(order_id, credits, self._held(order_id), fee, at)

    def refund(self, order_id: uuid.UUID, at: datetime) -> None:
        self._held(order_id)
        self._refund(order_id, self.holds[str(order_id)], at)

    def split(self, order_id: uuid.UUID, credits: SellerCredits | None, seller_amount: int, fee: int,
              at: datetime) -> None:
        """Release `seller_amount` of the hold (less `fee`) to the seller and refund the rest, in one decision."""
        held = self._held(order_id)
        if type(seller_amount) is not int or not 0 <= seller_amount <= held:
            raise ValidationFailed(f"seller share must be between 0 and the held {held}", field="sellerShare")
        if type(fee) is not int or not 0 <= fee <= seller_amount:
            raise ValidationFailed(f"fee must be between 0 and the released {seller_amount}", field="fee")
        if seller_amount:
            if credits is None or credits.currency != self.currency or credits.shard != credit_shard(order_id):
                raise CurrencyMismatch("release needs the seller's credit stream for this order and currency")
            buyer, seller = self.account_id, credits.account_id
            self._move(self.EscrowReleased, at, [Posting(ESCROW, buyer, -seller_amount),
                                                 Posting(AVAILABLE, seller, seller_amount - fee),
                                                 Posting(FEES, None, fee)],
                       order_id=order_id, seller_account_id=seller, amount=seller_amount, fee=fee)
            credits.credit(order_id, buyer, seller_amount - fee, at)
        if held - seller_amount:
            self._refund(order_id, held - seller_amount, at)

    def collect(self, shards: Sequence[SellerCredits], at: datetime) -> int:
        """Count the seller credits not yet counted; returns how much became available (0: nothing recorded)."""
        totals = [ShardTotal(s.shard, s.total) for s in shards
                  if s.account_id == self.account_id and s.currency == self.currency
                  and s.total > self.collected.get(str(s.shard), 0)]
        amount = sum(t.total - self.collected.get(str(t.shard), 0) for t in totals)
        if amount:
            self.trigger_event(self.CreditsCollected, timestamp=at, amount=amount, totals=totals)
        return amount

    # --- guards ----------------------------------------------------------------------------------

    def _refund(self, order_id: uuid.UUID, amount: int, at: datetime) -> None:
        self._move(self.EscrowRefunded, at, [Posting(ESCROW, self.account_id, -amount),
                                             Posting(AVAILABLE, self.account_id, amount)],
                   order_id=order_id, amount=amount)

    def _move(self, kind: type[Aggregate.Event], at: datetime, postings: list[Posting], **fields: Any) -> None:
        """Record one movement: its fields, this wallet's currency and its checked, balanced postings."""
        self.trigger_event(kind, timestamp=at, currency=self.currency, postings=posting_set(*postings), **fields)

    def _held(self, order_id: uuid.UUID) -> int:
        if str(order_id) not in self.holds:
            raise EscrowNotHeld(f"order {order_id} holds no escrow on this wallet", order_id=str(order_id))
        return self.holds[str(order_id)]

    def _check_amount(self, amount: Money) -> None:
        if amount.currency != self.currency:
            raise CurrencyMismatch(f"this wallet holds {self.currency}, not {amount.currency}", field="currency")
        if amount.amount <= 0:
            raise ValidationFailed("amount must be a positive number of minor units", field="amount")

    def _covers(self, amount: int) -> None:
        if amount > self.available:
            raise InsufficientFunds(f"available {self.available} {self.currency} does not cover {amount}",
                                    available=self.available, required=amount, currency=self.currency)


__all__ = ["CREDIT_SHARDS", "SellerCredits", "ShardTotal", "Wallet", "credit_shard", "credits_id", "wallet_id"]

"""Ledger command service: deposits, withdrawals, and the escrow decisions order settlement saves with its Order.

Escrow methods (`hold`, `release`, `refund`, `split`) load and decide but do NOT save: they return the
aggregates to pass to `Repository.save_all([order, *returned], ctx)`, inside `retry_conflicts(..., attempts=
LEDGER_RETRIES, jitter_s=LEDGER_JITTER_S)` so a lost race on a wallet is re-decided on fresh state.
Deposits and withdrawals save themselves (same retries).
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable

from eventsourcing.domain import Aggregate
from iso4217 import Currency

from app.services.retries import retry_conflicts
from app.store.repository import Repository
from app.store.types import AppendResult, LogPosition
from domain.accounts.aggregate import Account
from domain.market.ledger import CREDIT_SHARDS, SellerCredits, Wallet, credit_shard, credits_id, wallet_id
from domain.shared.context import CommandContext
from domain.shared.errors import NotFound, ValidationFailed
from domain.shared.money import Money

# The codes a wallet can hold: ISO 4217 currencies with minor units (not XAU, XDR and other funds or metals).
CURRENCIES: tuple[str, ...] = tuple(sorted(c.code for c in Currency if c.exponent is not None))

# Streams a caller read with its own (e.g. with the order): each as found, None when it does not exist.
Loaded = tuple[Aggregate | None, ...]

# Many commands can race on one buyer's wallet (64 concurrent holds in the proof test): each loser re-decides.
LEDGER_RETRIES, LEDGER_JITTER_S = 64, 0.005


def minor_units(currency: str) -> int:
    """The ISO 4217 decimal places of `currency`; VALIDATION_ERROR (400) for an unknown code or one without
    minor units (precious metals, funds codes such as XAU, XDR)."""
    try:
        exponent = Currency(currency).exponent
    except ValueError:
        raise ValidationFailed(f"{currency!r} is not an ISO 4217 currency code", field="currency") from None
    if exponent is None:
        raise ValidationFailed(f"{currency} has no minor units; it cannot be held in a wallet", field="currency")
    return int(exponent)


def checked(amount: Money) -> Money:
    minor_units(amount.currency)
    if amount.amount <= 0:
        raise ValidationFailed("amount must be a positive number of minor units", field="amount")
    return amount


class LedgerOutcome:
    """The wallet after the command, and where its last event sits in the log (None: nothing recorded)."""

    def __init__(self, wallet: Wallet, result: AppendResult | None) -> None:
        self.wallet = wallet
        self.position: LogPosition | None = result.last if result else None
        self.duplicate = bool(result and result.duplicate)


class LedgerService:
    def __init__(self, repo: Repository) -> None:
        self.repo = repo

    # --- loading ---------------------------------------------------------------------------------

    async def wallet(self, ctx: CommandContext, account_id: uuid.UUID, currency: str) -> Wallet:
        """The wallet as its stream stands, or a new one (its Opened pending, saved with the first movement)."""
        try:
            return await self.repo.get(Wallet, wallet_id(account_id, currency), what="wallet")
        except NotFound:
            return Wallet.open(account_id, currency, ctx.at)

    async def wallet_and_credits(self, ctx: CommandContext, account_id: uuid.UUID, currency: str,
                                 seller_account_id: uuid.UUID, order_id: uuid.UUID,
                                 loaded: Loaded | None = None) -> tuple[Wallet, SellerCredits]:
        """The buyer's wallet and the seller's credit shard for this order, in one statement (a release moves both);
        either one new (its Opened pending) when its stream does not exist yet. `loaded`: the two as the caller
        has just read them (None for a stream that does not exist), instead of reading them here."""
        shard = credit_shard(order_id)
        wallet, credits = loaded if loaded is not None else await self.repo.get_many(
            [(Wallet, wallet_id(account_id, currency)),
             (SellerCredits, credits_id(seller_account_id, currency, shard))])
        if not isinstance(wallet, Wallet):
            wallet = Wallet.open(account_id, currency, ctx.at)
        if not isinstance(credits, SellerCredits):
            credits = SellerCredits.open(seller_account_id, currency, shard, ctx.at)
        return wallet, credits

    async def spendable(self, ctx: CommandContext, account_id: uuid.UUID, amount: Money,
                        loaded: Wallet | None = None) -> Wallet:
        """The wallet, having counted its seller credits first when what it knows does not cover `amount`.
        `loaded`: the wallet as the caller has just read it (e.g. together with other streams)."""
        wallet = loaded if loaded is not None else await self.wallet(ctx, account_id, amount.currency)
        if wallet.available < amount.amount:
            shards = await self.repo.get_many([(SellerCredits, credits_id(account_id, amount.currency, shard))
                                               for shard in range(CREDIT_SHARDS)])  # one statement
            wallet.collect([s for s in shards if isinstance(s, SellerCredits)], ctx.at)
        return wallet

    # --- escrow: decided here, saved by the caller with its Order ---------------------------------

    async def hold(self, ctx: CommandContext, buyer_account_id: uuid.UUID, order_id: uuid.UUID,
                   amount: Money, loaded: Wallet | None = None) -> list[Aggregate]:
        """available -> escrow. Raises INSUFFICIENT_FUNDS / ESCROW_ALREADY_HELD; nothing is recorded then.
        `loaded`: the buyer's wallet as the caller has just read it (see spendable)."""
        wallet = await self.spendable(ctx, buyer_account_id, checked(amount), loaded)
        wallet.hold(order_id, amount, ctx.at)
        return [wallet]

    async def release(self, ctx: CommandContext, buyer_account_id: uuid.UUID, order_id: uuid.UUID, currency: str,
                      seller_account_id: uuid.UUID, fee: int) -> list[Aggregate]:
        """The whole hold -> seller available less `fee`, `fee` -> platform fees. ESCROW_NOT_HELD if not open."""
        wallet, credits = await self.wallet_and_credits(ctx, buyer_account_id, currency, seller_account_id, order_id)
        wallet.release(order_id, credits, fee, ctx.at)
        return [wallet, credits]

    async def refund(self, ctx: CommandContext, buyer_account_id: uuid.UUID, order_id: uuid.UUID,
                     currency: str, loaded: Loaded | None = None) -> list[Aggregate]:
        """The whole hold -> buyer available. ESCROW_NOT_HELD if not open. `loaded`: (the wallet as the caller
        has just read it, or None if its stream does not exist)."""
        found = loaded[0] if loaded is not None else None
        if isinstance(found, Wallet):
            wallet = found
        elif loaded is not None:
            wallet = Wallet.open(buyer_account_id, currency, ctx.at)
        else:
            wallet = await self.wallet(ctx, buyer_account_id, currency)
        wallet.refund(order_id, ctx.at)
        return [wallet]

    async def split(self, ctx: CommandContext, buyer_account_id: uuid.UUID, order_id: uuid.UUID, currency: str,
                    seller_account_id: uuid.UUID, seller_amount: int, fee: int,
                    loaded: Loaded | None = None) -> list[Aggregate]:
        """`seller_amount` of the hold released (less `fee`), the rest refunded, in one decision. `loaded`: see
        wallet_and_credits."""
        wallet, credits = await self.wallet_and_credits(ctx, buyer_account_id, currency, seller_account_id, order_id,
                                                        loaded)
        wallet.split(order_id, credits, seller_amount, fee, ctx.at)
        return [wallet, credits]

    async def atomically(self, ctx: CommandContext,
                         decide: Callable[[], Awaitable[list[Aggregate]]]) -> AppendResult | None:
        """Run `decide` (load fresh, decide, return every aggregate that recorded something: e.g. the Order and
        what `hold`/`release`/... returned) and save it all in one append; a lost race re-runs `decide`."""

        async def attempt() -> AppendResult | None:
            return await self.repo.save_all(await decide(), ctx)

        return await retry_conflicts(attempt, attempts=LEDGER_RETRIES, jitter_s=LEDGER_JITTER_S)

    # --- commands saved here ----------------------------------------------------------------------

    async def deposit(self, ctx: CommandContext, account_id: uuid.UUID, amount: Money,
                      reference: str | None = None) -> LedgerOutcome:
        """Admin: external -> available on an existing account (NOT_FOUND otherwise)."""
        checked(amount)
        await self.repo.get(Account, account_id, what="account")

        async def attempt() -> LedgerOutcome:
            wallet = await self.wallet(ctx, account_id, amount.currency)
            wallet.deposit(amount, ctx.at, reference)
            return await self._saved(ctx, wallet)

        return await retry_conflicts(attempt, attempts=LEDGER_RETRIES, jitter_s=LEDGER_JITTER_S,
                                     replay=lambda: self._replay(ctx, account_id, amount.currency))

    async def withdraw(self, ctx: CommandContext, account_id: uuid.UUID, amount: Money,
                       reference: str | None = None) -> LedgerOutcome:
        """available -> external; INSUFFICIENT_FUNDS rather than below zero."""
        checked(amount)

        async def attempt() -> LedgerOutcome:
            wallet = await self.spendable(ctx, account_id, amount)
            wallet.withdraw(amount, ctx.at, reference)
            return await self._saved(ctx, wallet)

        return await retry_conflicts(attempt, attempts=LEDGER_RETRIES, jitter_s=LEDGER_JITTER_S,
                                     replay=lambda: self._replay(ctx, account_id, amount.currency))

    async def _replay(self, ctx: CommandContext, account_id: uuid.UUID, currency: str) -> LedgerOutcome | None:
        """Refused (e.g. INSUFFICIENT_FUNDS), but this very request (its Idempotency-Key) was recorded before, and
        its own withdrawal is what the balance lacks now: answer as it did."""
        wallet = wallet_id(account_id, currency)
        if (done := await self.repo.recorded(ctx, wallet)) is None:
            return None
        return LedgerOutcome(await self.repo.get(Wallet, wallet, what="wallet"), done)

    async def _saved(self, ctx: CommandContext, wallet: Wallet) -> LedgerOutcome:
        result = await self.repo.save(wallet, ctx)
        if result is not None and result.duplicate:  # a retried command: answer with what is stored
            wallet = await self.repo.get(Wallet, wallet.id, what="wallet")
        return LedgerOutcome(wallet, result)

"""`mm ledger verify` on a real log: silent on a good one; on each breach appended straight to the events table
(as a bug or a hand edit would), it exits non-zero and names it."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from eventsourcing.domain import Aggregate

from app.container import Container
from app.ledger_verify import verify_ledger
from app.settings import Settings
from app.store.types import NewEvent
from domain.market.ledger import credit_shard, credits_id, wallet_id
from domain.shared.context import CommandContext
from domain.shared.money import Money
from tests.conftest import TEST_SECRET_KEY

ROOT = Path(__file__).resolve().parents[2]
W = "market:Wallet."


def ctx() -> CommandContext:
    return CommandContext(at=datetime.now(UTC), actor="test:ledger-verify")


def mm_verify(dsn: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MM_DATABASE_URL": dsn, "MM_LOG_LEVEL": "WARNING", "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "app.cli", "ledger", "verify"], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


class Book:
    """A small, good ledger: a buyer with deposits, orders held, released (with a fee), refunded and split."""

    def __init__(self, c: Container) -> None:
        self.c = c

    async def write(self) -> None:
        c = self.c
        self.buyer = (await c.accounts.open(ctx(), "buyer", False))[0].id
        self.seller = (await c.accounts.open(ctx(), "seller", False))[0].id
        await c.ledger.deposit(ctx(), self.buyer, Money(1000, "USD"))
        await c.ledger.deposit(ctx(), self.buyer, Money(500, "EUR"))
        self.orders = [uuid.uuid4() for _ in range(3)]
        for o in self.orders:
            await self._save(c.ledger.hold(ctx(), self.buyer, o, Money(200, "USD")))
        await self._save(c.ledger.release(ctx(), self.buyer, self.orders[0], "USD", self.seller, 20))
        await self._save(c.ledger.refund(ctx(), self.buyer, self.orders[1], "USD"))
        await self._save(c.ledger.split(ctx(), self.buyer, self.orders[2], "USD", self.seller, 150, 15))
        await c.ledger.withdraw(ctx(), self.seller, Money(315, "USD"))  # all it was credited, collected first
        await c.ledger.withdraw(ctx(), self.buyer, Money(250, "EUR"))

    async def _save(self, decided: Any) -> None:
        aggregates: list[Aggregate] = await decided
        await self.c.repo.save_all(aggregates, ctx())

    async def append(self, stream: uuid.UUID, kind: str, **data: Any) -> None:
        """An event written past the domain (no decision, no guard): what verify exists to catch."""
        version = (await self.c.store.stream_version(stream) or 0) + 1
        data.setdefault("timestamp", datetime.now(UTC).isoformat())
        await self.c.store.append([NewEvent(event_id=uuid.uuid4(), stream_id=stream, stream_type=kind.rsplit(".")[0],
                                            version=version, type=kind, data=data, metadata={"actor": "tamper"})])

    def wallet(self, account: uuid.UUID) -> uuid.UUID:
        return wallet_id(account, "USD")


def p(ledger: str, account: uuid.UUID | None, amount: int) -> dict[str, Any]:
    return {"ledger": ledger, "account_id": str(account) if account else None, "amount": amount}


@pytest.fixture
async def book(fresh_database: str) -> AsyncIterator[Book]:
    c = await Container.open(Settings(secret_key=TEST_SECRET_KEY), fresh_database, min_size=1, max_size=4)
    b = Book(c)
    try:
        await b.write()
        yield b
    finally:
        await c.close()


async def test_a_good_log_verifies(book: Book, fresh_database: str) -> None:
    audit = await verify_ledger(fresh_database)
    assert audit.breaches == []
    assert audit.movements == 2 + 3 + 1 + 1 + 2 + 2  # deposits, holds, release, refund, split (2), withdrawals
    out = await asyncio.to_thread(mm_verify, fresh_database)
    assert out.returncode == 0, out.stderr
    assert "ledger verified: 11 movements, 3 orders, currencies: EUR, USD" in out.stdout


async def test_an_unbalanced_posting_set_is_named(book: Book, fresh_database: str) -> None:
    await book.append(book.wallet(book.buyer), W + "Deposited", amount=5, reference=None, currency="USD",
                      postings=[p("external", None, -5), p("available", book.buyer, 6)])
    out = await asyncio.to_thread(mm_verify, fresh_database)
    assert out.returncode == 1
    assert "postings sum to 1 USD, not 0" in out.stderr and "USD: the ledger accounts sum to 1, not 0" in out.stderr


async def test_available_below_zero_is_named(book: Book, fresh_database: str) -> None:
    await book.append(book.wallet(book.buyer), W + "Withdrawn", amount=10_000, reference=None, currency="USD",
                      postings=[p("available", book.buyer, -10_000), p("external", None, 10_000)])
    audit = await verify_ledger(fresh_database)
    assert any(f"available:{book.buyer} went negative" in b for b in audit.breaches), audit.breaches


async def test_an_order_released_twice_is_named(book: Book, fresh_database: str) -> None:
    order = book.orders[0]
    await book.append(book.wallet(book.buyer), W + "EscrowReleased", order_id=str(order),
                      seller_account_id=str(book.seller), amount=200, fee=0, currency="USD",
                      postings=[p("escrow", book.buyer, -200), p("available", book.seller, 200)])
    audit = await verify_ledger(fresh_database)
    assert any(f"order {order} released twice" in b for b in audit.breaches), audit.breaches
    assert any(f"order {order}: released 400 + refunded 0 != held 200" in b for b in audit.breaches)
    assert any(f"escrow:{book.buyer} went negative (-200 USD)" in b for b in audit.breaches)  # it was empty


async def test_a_refund_without_a_hold_and_a_partial_settlement_are_named(book: Book, fresh_database: str) -> None:
    stray = uuid.uuid4()
    await book.append(book.wallet(book.buyer), W + "EscrowHeld", order_id=str(stray), amount=100, currency="USD",
                      postings=[p("available", book.buyer, -100), p("escrow", book.buyer, 100)])
    await book.append(book.wallet(book.buyer), W + "EscrowRefunded", order_id=str(stray), amount=60, currency="USD",
                      postings=[p("escrow", book.buyer, -60), p("available", book.buyer, 60)])
    never = uuid.uuid4()
    await book.append(book.wallet(book.buyer), W + "EscrowRefunded", order_id=str(never), amount=1, currency="USD",
                      postings=[p("escrow", book.buyer, -1), p("available", book.buyer, 1)])
    audit = await verify_ledger(fresh_database)
    assert any(f"order {stray}: released 0 + refunded 60 != held 100" in b for b in audit.breaches), audit.breaches
    assert any(f"order {never} refunded without escrow held" in b for b in audit.breaches), audit.breaches


async def test_a_mirror_with_postings_or_a_credit_without_a_release_is_named(book: Book, fresh_database: str) -> None:
    order = uuid.uuid4()
    await book.append(credits_id(book.seller, "USD", credit_shard(order)), "market:SellerCredits.Credited",
                      order_id=str(order), buyer_account_id=str(book.buyer), amount=50,
                      postings=[p("external", None, -50), p("available", book.seller, 50)])
    audit = await verify_ledger(fresh_database)
    assert any("a mirror event carries postings" in b for b in audit.breaches), audit.breaches
    assert any(f"order {order}: a seller credit without a release" in b for b in audit.breaches), audit.breaches


async def test_malformed_postings_are_named(book: Book, fresh_database: str) -> None:
    await book.append(book.wallet(book.buyer), W + "Deposited", amount=5, reference=None, currency="USD",
                      postings=[p("fees", book.buyer, -5), p("available", book.buyer, 5)])
    await book.append(book.wallet(book.buyer), W + "Deposited", amount=5, reference=None, currency="USD",
                      postings=[])
    audit = await verify_ledger(fresh_database)
    assert any("malformed posting" in b for b in audit.breaches), audit.breaches
    assert any("a movement without postings" in b for b in audit.breaches), audit.breaches


async def test_collecting_more_credits_than_were_mirrored_is_named(book: Book, fresh_database: str) -> None:
    seller_wallet = book.wallet(book.seller)
    await book.append(seller_wallet, W + "CreditsCollected", amount=1, totals=[{"shard": 0, "total": 10_000}])
    audit = await verify_ledger(fresh_database)
    (breach,) = audit.breaches
    assert breach.endswith(f"wallet {seller_wallet} counted 316 of seller credits, only 315 were credited"), breach

"""The ledger on real PostgreSQL under real concurrency: escrow holds, withdrawals and releases racing on one
stream never overdraw and all land; the read model (rebuilt from zero) and `mm ledger verify` agree."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from eventsourcing.domain import Aggregate

from app.container import Container
from app.ledger_verify import verify_ledger
from app.settings import Settings
from app.store.mapper import rebuild as rebuild_stream
from app.store.types import AppendResult
from domain.market.errors import EscrowNotHeld, InsufficientFunds
from domain.market.ledger import Wallet, credit_shard, credits_id, wallet_id
from domain.shared.context import CommandContext
from domain.shared.money import Money
from projections.ledger import LedgerProjection
from projections.ledger_reader import balances
from projections.rebuild import rebuild
from tests.conftest import TEST_SECRET_KEY

pytestmark = pytest.mark.slow
UNSEEN = "SELECT count(*) FROM events WHERE tx_id >= pg_snapshot_xmin(pg_current_snapshot())"


def ctx() -> CommandContext:
    return CommandContext(at=datetime.now(UTC), actor="test:ledger")


def usd(n: int) -> Money:
    return Money(n, "USD")


@pytest.fixture
async def c(fresh_database: str) -> AsyncIterator[Container]:
    container = await Container.open(Settings(secret_key=TEST_SECRET_KEY), fresh_database, min_size=2, max_size=16)
    try:
        yield container
    finally:
        await container.close()


async def account(c: Container, funds: int = 0) -> uuid.UUID:
    opened, _ = await c.accounts.open(ctx(), f"acct-{uuid.uuid4().hex[:6]}", False)
    if funds:
        await c.ledger.deposit(ctx(), opened.id, usd(funds))
    return opened.id


async def hold(c: Container, buyer: uuid.UUID, order: uuid.UUID, amount: int) -> AppendResult | None:
    async def decide() -> list[Aggregate]:
        return await c.ledger.hold(ctx(), buyer, order, usd(amount))

    return await c.ledger.atomically(ctx(), decide)


async def release(c: Container, buyer: uuid.UUID, order: uuid.UUID, seller: uuid.UUID, fee: int) -> None:
    async def decide() -> list[Aggregate]:
        return await c.ledger.release(ctx(), buyer, order, "USD", seller, fee)

    await c.ledger.atomically(ctx(), decide)


async def rebuilt_balances(c: Container, who: uuid.UUID) -> dict[str, int]:
    # Readers of the log see an event once every older transaction in the cluster has ended (the store's
    # gap-free rule); other databases on a shared server can hold that back for a moment.
    for _ in range(200):
        if not await c.pool.fetchval(UNSEEN):
            break
        await asyncio.sleep(0.05)
    await rebuild(c.pool, c.store, LedgerProjection())
    rows = await balances(c.pool, who, "USD")
    return {"available": rows[0]["available"], "escrow": rows[0]["escrow"]} if rows else {}


async def test_64_concurrent_holds_on_a_balance_that_covers_10(c: Container, fresh_database: str) -> None:
    buyer = await account(c, 1000)
    orders = [uuid.uuid4() for _ in range(64)]
    results = await asyncio.gather(*(hold(c, buyer, o, 100) for o in orders), return_exceptions=True)
    held = [r for r in results if isinstance(r, AppendResult)]
    refused = [r for r in results if isinstance(r, InsufficientFunds)]
    others = [r for r in results if not isinstance(r, AppendResult | InsufficientFunds)]
    assert (len(held), len(refused)) == (10, 54), others
    wallet = await c.repo.get(Wallet, wallet_id(buyer, "USD"))
    assert (wallet.available, wallet.escrow, len(wallet.holds)) == (0, 1000, 10)
    assert await rebuilt_balances(c, buyer) == {"available": 0, "escrow": 1000}
    audit = await verify_ledger(fresh_database)
    assert audit.breaches == [] and audit.movements == 11


async def test_concurrent_withdrawals_never_overdraw(c: Container, fresh_database: str) -> None:
    who = await account(c, 1000)
    results = await asyncio.gather(*(c.ledger.withdraw(ctx(), who, usd(150)) for _ in range(24)),
                                   return_exceptions=True)
    done = [r for r in results if not isinstance(r, BaseException)]
    assert len(done) == 6 and all(isinstance(r, InsufficientFunds) for r in results if r not in done)
    assert (await c.repo.get(Wallet, wallet_id(who, "USD"))).available == 100
    assert await rebuilt_balances(c, who) == {"available": 100, "escrow": 0}
    assert (await verify_ledger(fresh_database)).breaches == []


async def test_32_concurrent_releases_to_one_seller_all_land(c: Container, fresh_database: str) -> None:
    seller = await account(c)
    buyers = await asyncio.gather(*(account(c, 500) for _ in range(32)))
    orders = [uuid.uuid4() for _ in buyers]
    await asyncio.gather(*(hold(c, b, o, 400) for b, o in zip(buyers, orders, strict=True)))
    await asyncio.gather(*(release(c, b, o, seller, 40) for b, o in zip(buyers, orders, strict=True)))
    # No release touched the seller's wallet: its credits are on its shard streams, mirrored without postings.
    assert await c.store.stream_version(wallet_id(seller, "USD")) is None
    assert await rebuilt_balances(c, seller) == {"available": 32 * 360, "escrow": 0}
    for b in buyers[:3]:
        assert await rebuilt_balances(c, b) == {"available": 100, "escrow": 0}
    fees = await c.pool.fetchval("SELECT balance FROM ledger_balances WHERE ledger = 'fees' AND currency = 'USD'")
    assert fees == 32 * 40
    # The seller spends what the releases credited: its wallet collects the shards first.
    with pytest.raises(InsufficientFunds):
        await c.ledger.withdraw(ctx(), seller, usd(32 * 360 + 1))
    await c.ledger.withdraw(ctx(), seller, usd(32 * 360))
    assert await rebuilt_balances(c, seller) == {"available": 0, "escrow": 0}
    audit = await verify_ledger(fresh_database)
    assert audit.breaches == [] and len(audit.orders) == 32


async def test_refund_and_split_on_the_read_model_and_the_log(c: Container, fresh_database: str) -> None:
    buyer, seller = await account(c, 1000), await account(c)
    o1, o2, o3 = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    for o in (o1, o2, o3):
        await hold(c, buyer, o, 300)

    async def refund() -> list[Aggregate]:
        return await c.ledger.refund(ctx(), buyer, o1, "USD")

    async def split() -> list[Aggregate]:
        return await c.ledger.split(ctx(), buyer, o2, "USD", seller, 200, 20)

    await c.ledger.atomically(ctx(), refund)
    await c.ledger.atomically(ctx(), split)
    assert await rebuilt_balances(c, buyer) == {"available": 100 + 300 + 100, "escrow": 300}
    assert await rebuilt_balances(c, seller) == {"available": 180, "escrow": 0}
    entries = await c.pool.fetch("SELECT type, ledger, amount, balance_after, counterparty FROM ledger_entries"
                                 " WHERE account_id = $1 AND order_id = $2 ORDER BY tx_id, position, line", buyer, o2)
    assert [(e["type"], e["ledger"], e["amount"]) for e in entries] == [
        ("ledger.escrow-held", "available", -300), ("ledger.escrow-held", "escrow", 300),
        ("ledger.escrow-released", "escrow", -200), ("ledger.escrow-refunded", "escrow", -100),
        ("ledger.escrow-refunded", "available", 100)]
    assert entries[2]["counterparty"] == seller
    # Each line's balance after its own account: held second of three (1000 - 600 available, 600 in escrow), then
    # o1's refund (escrow 600 -> 300 after o2's release and refund), o2's refund back to available (400 + 100).
    assert [e["balance_after"] for e in entries] == [400, 600, 400, 300, 500]
    audit = await verify_ledger(fresh_database)
    assert audit.breaches == [] and audit.orders[str(o3)]["held"] == [300]
    credits = await c.store.load(credits_id(seller, "USD", credit_shard(o2)))
    assert [e.data["amount"] for e in credits if e.type.endswith("Credited")] == [180]


async def test_a_long_wallet_loads_from_its_snapshot_as_it_replays(c: Container) -> None:
    """SNAPSHOT_EVERY=20: holds (keyed by order) and collected shard totals survive the JSON snapshot exactly."""
    buyer, seller = await account(c, 10_000), await account(c)
    orders = [uuid.uuid4() for _ in range(120)]
    for o in orders:
        await hold(c, buyer, o, 10)
    for o in orders[:60]:
        await release(c, buyer, o, seller, 1)
    await c.ledger.withdraw(ctx(), seller, usd(1))  # the seller's wallet collects its shards
    wid = wallet_id(buyer, "USD")
    assert Wallet.SNAPSHOT_EVERY == 20
    assert await c.pool.fetchval("SELECT max(version) FROM snapshots WHERE stream_id = $1", wid) == 180
    loaded = await c.repo.get(Wallet, wid)
    replayed = rebuild_stream(await c.store.load(wid))
    assert isinstance(replayed, Wallet)
    assert (loaded.available, loaded.escrow, loaded.holds, loaded.version) == (
        replayed.available, replayed.escrow, replayed.holds, replayed.version) == (
        10_000 - 1200, 600, {str(o): 10 for o in orders[60:]}, 182)
    with pytest.raises(EscrowNotHeld):  # settled orders stay settled after a snapshot load
        await c.ledger.release(ctx(), buyer, orders[0], "USD", seller, 0)
    seller_wallet = await c.repo.get(Wallet, wallet_id(seller, "USD"))
    assert seller_wallet.available == 60 * 9 - 1 and sum(seller_wallet.collected.values()) == 60 * 9

"""Wallet and SellerCredits, given/when/then on events: every movement one balanced event, never below zero."""

from __future__ import annotations

import uuid

import pytest

from app.store.mapper import rebuild, to_data, to_domain_event
from app.store.types import RecordedEvent
from domain.market.errors import CurrencyMismatch, EscrowAlreadyHeld, EscrowNotHeld, InsufficientFunds
from domain.market.ledger import (
    CREDIT_SHARDS,
    SellerCredits,
    Wallet,
    credit_shard,
    credits_id,
    wallet_id,
)
from domain.market.postings import AVAILABLE, ESCROW, EXTERNAL, FEES, Posting, posting_set
from domain.shared.errors import ValidationFailed
from domain.shared.money import Money
from tests.factories import FIXED_AT

BUYER, SELLER, ORDER, ORDER2 = uuid.uuid4(), uuid.uuid4(), uuid.uuid4(), uuid.uuid4()


def usd(n: int) -> Money:
    return Money(n, "USD")


def wallet(balance: int = 0, account: uuid.UUID = BUYER) -> Wallet:
    w = Wallet.open(account, "USD", FIXED_AT)
    if balance:
        w.deposit(usd(balance), FIXED_AT)
    w.collect_events()
    return w


def credits(order: uuid.UUID = ORDER, account: uuid.UUID = SELLER) -> SellerCredits:
    c = SellerCredits.open(account, "USD", credit_shard(order), FIXED_AT)
    c.collect_events()
    return c


def events(*aggregates: Wallet | SellerCredits) -> list[object]:
    return [e for a in aggregates for e in a.collect_events()]


def names(*aggregates: Wallet | SellerCredits) -> list[str]:
    return [type(e).__name__ for e in events(*aggregates)]


def postings(e: object) -> dict[str, int]:
    return {p.key(): p.amount for p in getattr(e, "postings", [])}


def test_ids_are_deterministic_per_account_currency_and_shard() -> None:
    assert wallet().id == wallet_id(BUYER, "USD") != wallet_id(BUYER, "EUR")
    assert credits().id == credits_id(SELLER, "USD", credit_shard(ORDER))
    assert {credits_id(SELLER, "USD", s) for s in range(CREDIT_SHARDS)}.__len__() == CREDIT_SHARDS


def test_posting_sets_must_balance_and_name_accounts_where_they_belong() -> None:
    with pytest.raises(ValueError):
        posting_set(Posting(EXTERNAL, None, -5), Posting(AVAILABLE, BUYER, 4))
    with pytest.raises(ValueError):
        posting_set(Posting(FEES, BUYER, -5), Posting(AVAILABLE, BUYER, 5))
    with pytest.raises(ValueError):
        posting_set(Posting(AVAILABLE, BUYER, 0))
    assert posting_set(Posting(FEES, None, 0), Posting(EXTERNAL, None, -1), Posting(ESCROW, BUYER, 1)) == [
        Posting(EXTERNAL, None, -1), Posting(ESCROW, BUYER, 1)]


def test_deposit_and_withdraw_move_external_money_in_one_balanced_event() -> None:
    w = wallet()
    w.deposit(usd(500), FIXED_AT, reference="wire-1")
    (deposited,) = events(w)
    assert postings(deposited) == {"external": -500, f"available:{BUYER}": 500} and w.available == 500
    w.withdraw(usd(200), FIXED_AT)
    (withdrawn,) = events(w)
    assert postings(withdrawn) == {f"available:{BUYER}": -200, "external": 200} and w.available == 300


def test_withdrawal_never_takes_available_below_zero() -> None:
    w = wallet(100)
    with pytest.raises(InsufficientFunds) as err:
        w.withdraw(usd(101), FIXED_AT)
    assert err.value.code == "INSUFFICIENT_FUNDS" and err.value.extra["available"] == 100
    assert names(w) == [] and w.available == 100
    w.withdraw(usd(100), FIXED_AT)
    assert w.available == 0


def test_amounts_must_be_positive_and_in_the_wallets_currency() -> None:
    w = wallet(100)
    with pytest.raises(ValidationFailed):
        w.deposit(usd(0), FIXED_AT)
    with pytest.raises(ValidationFailed):
        w.withdraw(usd(-5), FIXED_AT)
    with pytest.raises(CurrencyMismatch):
        w.hold(ORDER, Money(5, "EUR"), FIXED_AT)
    assert names(w) == []


def test_hold_moves_available_to_escrow_once_per_order() -> None:
    w = wallet(100)
    w.hold(ORDER, usd(60), FIXED_AT)
    (held,) = events(w)
    assert postings(held) == {f"available:{BUYER}": -60, f"escrow:{BUYER}": 60}
    assert (w.available, w.escrow) == (40, 60)
    with pytest.raises(EscrowAlreadyHeld):
        w.hold(ORDER, usd(10), FIXED_AT)
    with pytest.raises(InsufficientFunds):
        w.hold(ORDER2, usd(41), FIXED_AT)
    assert names(w) == [] and (w.available, w.escrow) == (40, 60)


def test_release_pays_the_seller_less_the_fee_and_credits_a_shard_without_postings() -> None:
    w, c = wallet(100), credits()
    w.hold(ORDER, usd(80), FIXED_AT)
    w.collect_events()
    w.release(ORDER, c, 8, FIXED_AT)
    released, credited = events(w, c)
    assert type(released).__name__ == "EscrowReleased" and type(credited).__name__ == "Credited"
    assert postings(released) == {f"escrow:{BUYER}": -80, f"available:{SELLER}": 72, "fees": 8}
    assert postings(credited) == {} and c.total == 72
    assert (w.available, w.escrow, w.holds) == (20, 0, {})
    with pytest.raises(EscrowNotHeld):  # settled once
        w.release(ORDER, c, 0, FIXED_AT)
    with pytest.raises(EscrowNotHeld):
        w.refund(ORDER, FIXED_AT)


def test_release_checks_the_fee_and_the_credit_stream() -> None:
    w = wallet(100)
    w.hold(ORDER, usd(50), FIXED_AT)
    w.collect_events()
    with pytest.raises(ValidationFailed):
        w.release(ORDER, credits(), 51, FIXED_AT)
    other = SellerCredits.open(SELLER, "USD", (credit_shard(ORDER) + 1) % CREDIT_SHARDS, FIXED_AT)
    with pytest.raises(CurrencyMismatch):
        w.release(ORDER, other, 0, FIXED_AT)
    assert names(w) == [] and w.escrow == 50


def test_refund_returns_the_whole_hold() -> None:
    w = wallet(100)
    w.hold(ORDER, usd(30), FIXED_AT)
    w.collect_events()
    w.refund(ORDER, FIXED_AT)
    (refunded,) = events(w)
    assert postings(refunded) == {f"escrow:{BUYER}": -30, f"available:{BUYER}": 30}
    assert (w.available, w.escrow, w.holds) == (100, 0, {})


@pytest.mark.parametrize(("share", "expected"), [(60, ["EscrowReleased", "EscrowRefunded", "Credited"]),
                                                 (0, ["EscrowRefunded"]), (100, ["EscrowReleased", "Credited"])])
def test_split_releases_a_share_and_refunds_the_rest_so_released_plus_refunded_is_held(
        share: int, expected: list[str]) -> None:
    w, c = wallet(100), credits()
    w.hold(ORDER, usd(100), FIXED_AT)
    w.collect_events()
    w.split(ORDER, c, share, min(share, 5), FIXED_AT)
    recorded = events(w, c)
    assert [type(e).__name__ for e in recorded] == expected
    moved = [e for e in recorded if getattr(e, "postings", None)]
    assert all(sum(postings(e).values()) == 0 for e in moved)
    assert sum(getattr(e, "amount", 0) for e in moved) == 100
    assert (w.available, w.escrow, c.total) == (100 - share, 0, share - min(share, 5))


def test_split_share_must_fit_the_hold() -> None:
    w = wallet(100)
    w.hold(ORDER, usd(40), FIXED_AT)
    w.collect_events()
    with pytest.raises(ValidationFailed):
        w.split(ORDER, credits(), 41, 0, FIXED_AT)
    with pytest.raises(ValidationFailed):
        w.split(ORDER, credits(), 10, 11, FIXED_AT)


def test_seller_spends_credits_only_once_it_has_collected_them() -> None:
    buyer, seller, c = wallet(100), wallet(0, SELLER), credits()
    buyer.hold(ORDER, usd(100), FIXED_AT)
    buyer.release(ORDER, c, 10, FIXED_AT)
    with pytest.raises(InsufficientFunds):  # the wallet alone does not know of the credit
        seller.withdraw(usd(90), FIXED_AT)
    assert seller.collect([c], FIXED_AT) == 90
    (collected,) = events(seller)
    assert postings(collected) == {}  # a mirror: the release already posted the money
    assert seller.collect([c], FIXED_AT) == 0 and names(seller) == []  # counted once
    seller.withdraw(usd(90), FIXED_AT)
    assert seller.available == 0
    other_account = credits(ORDER, uuid.uuid4())
    other_account.total = 50
    assert seller.collect([other_account], FIXED_AT) == 0


def test_wallet_state_survives_the_store_round_trip() -> None:
    """Events go to JSON and back (as the store does): postings, holds and collected totals keep their types."""
    w, c = wallet(0), credits()
    w.deposit(usd(100), FIXED_AT)
    w.hold(ORDER, usd(70), FIXED_AT)
    w.split(ORDER, c, 50, 5, FIXED_AT)
    recorded = []
    for e in [*Wallet.open(BUYER, "USD", FIXED_AT).collect_events(), *w.collect_events()]:
        recorded.append(RecordedEvent(position=0, tx_id=0, event_id=uuid.uuid4(), stream_id=w.id,
                                      stream_type="market:Wallet", version=e.originator_version,
                                      type=type(e).TOPIC, data=to_data(e), metadata={}, recorded_at=FIXED_AT))
    assert to_domain_event(recorded[2]).postings == [Posting(AVAILABLE, BUYER, -70), Posting(ESCROW, BUYER, 70)]
    again = rebuild(recorded)
    assert isinstance(again, Wallet)
    assert (again.available, again.escrow, again.holds) == (w.available, w.escrow, w.holds) == (50, 0, {})

"""Pure route scoring: each strategy's order, determinism, currencies, and the reasons it gives."""

from __future__ import annotations

import uuid

from domain.shared.money import Money
from domain.tasks.commands import Candidate, SellerRecord
from domain.tasks.scoring import rank


def listing(amount: int, currency: str = "USD") -> Candidate:
    return Candidate(listing_id=uuid.uuid4(), node_id=uuid.uuid4(), seller_machine_id=uuid.uuid4(),
                     seller_account_id=uuid.uuid4(), seller_name="s", capability="c", provider_key="p",
                     price=Money(amount, currency))


CHEAP, MID, DEAR = listing(100), listing(200), listing(300)
STATS = {
    CHEAP.seller_machine_id: SellerRecord(runs=50, success_rate=0.1, p50_latency_ms=2000),
    MID.seller_machine_id: SellerRecord(runs=50, success_rate=0.9, p50_latency_ms=400),
    DEAR.seller_machine_id: SellerRecord(runs=50, success_rate=1.0, p50_latency_ms=50),
}


def order(strategy: str, stats: dict[uuid.UUID, SellerRecord] = STATS) -> list[Candidate]:
    return [s.candidate for s in rank([DEAR, CHEAP, MID], stats, strategy).ranked]


def test_each_strategy_orders_by_what_it_names() -> None:
    assert order("cheapest") == [CHEAP, MID, DEAR]
    assert order("fastest") == [DEAR, MID, CHEAP]
    assert order("most-reliable") == [DEAR, MID, CHEAP]


def test_balanced_trades_price_against_reputation() -> None:
    # MID is neither cheapest nor best: 0.5*0.5 + 0.3*0.88 + 0.2*0.71 = 0.66 beats CHEAP (0.60) and DEAR (0.48).
    ranked = rank([DEAR, CHEAP, MID], STATS, "balanced").ranked
    assert ranked[0].candidate == MID and ranked[0].score > ranked[1].score


def test_no_history_counts_as_even_odds_not_as_perfect() -> None:
    newcomer, proven = listing(100), listing(100)
    stats = {proven.seller_machine_id: SellerRecord(runs=100, success_rate=0.99, p50_latency_ms=100)}
    assert [s.candidate for s in rank([newcomer, proven], stats, "most-reliable").ranked] == [proven, newcomer]


def test_ties_are_broken_deterministically() -> None:
    a, b = listing(100), listing(100)
    first = [s.candidate.listing_id for s in rank([a, b], {}, "cheapest").ranked]
    assert first == [s.candidate.listing_id for s in rank([b, a], {}, "cheapest").ranked]
    assert first == sorted(first, key=str)


def test_prices_are_compared_within_their_currency_only() -> None:
    usd, eur = listing(100), listing(100_000, "EUR")
    ranked = rank([usd, eur], {}, "cheapest").ranked
    assert [s.features.price for s in ranked] == [1.0, 1.0]  # each is the cheapest of its currency


def test_every_place_has_a_reason_naming_its_inputs() -> None:
    ranked = rank([DEAR, CHEAP, MID], STATS, "cheapest").ranked
    assert [s.rank for s in ranked] == [1, 2, 3]
    assert ranked[0].reason.startswith("place 1 of 3 by cheapest") and "100 USD" in ranked[0].reason
    assert "success rate 0.10 over 50 runs" in ranked[0].reason and "p50 2000 ms" in ranked[0].reason

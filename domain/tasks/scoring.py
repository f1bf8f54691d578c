"""Pure route scoring: rank recorded candidates by a strategy from price and observed reputation, with reasons."""

from __future__ import annotations

import uuid
from collections import defaultdict

import msgspec

from domain.tasks.commands import BALANCED, CHEAPEST, FASTEST, MOST_RELIABLE, Candidate, Dropped, SellerRecord

# Balanced weighs what a buyer pays most, then whether it gets an answer, then how fast.
BALANCED_WEIGHTS = {"price": 0.5, "reliability": 0.3, "speed": 0.2}
# A seller with no history is assumed to answer in a second: neither favoured over nor buried under known ones.
UNKNOWN_LATENCY_MS = 1000


class Features(msgspec.Struct, frozen=True, kw_only=True):
    price: float  # 1.0 = cheapest among candidates of the same currency, 0.0 = dearest
    reliability: float  # Laplace-smoothed success rate: no history counts as 0.5, not as perfect
    speed: float  # 1000 / (1000 + p50 ms)


class Scored(msgspec.Struct, frozen=True, kw_only=True):
    candidate: Candidate
    record: SellerRecord
    features: Features
    score: float
    rank: int
    reason: str


class Ranking(msgspec.Struct, frozen=True, kw_only=True):
    ranked: list[Scored]  # best first
    excluded: list[Dropped]


def rank(candidates: list[Candidate], stats: dict[uuid.UUID, SellerRecord], strategy: str) -> Ranking:
    """Deterministic for the same inputs: ties fall to the lower price, then the listing id."""
    excluded = [Dropped(listing_id=c.listing_id, seller_machine_id=c.seller_machine_id,
                        reason="seller is cooling down after repeated failures")
                for c in candidates if stats.get(c.seller_machine_id, SellerRecord()).cooling_down]
    left = [c for c in candidates if not stats.get(c.seller_machine_id, SellerRecord()).cooling_down]
    prices = _price_scores(left)
    scored = []
    for c in left:
        record = stats.get(c.seller_machine_id, SellerRecord())
        features = Features(price=prices[c.listing_id], reliability=_reliability(record), speed=_speed(record))
        scored.append((c, record, features, round(_score(features, strategy), 6)))
    scored.sort(key=lambda s: (-s[3], s[0].price.amount, str(s[0].listing_id)))
    ranked = [Scored(candidate=c, record=r, features=f, score=s, rank=i,
                     reason=_reason(i, len(scored), strategy, c, r, f, s))
              for i, (c, r, f, s) in enumerate(scored, start=1)]
    return Ranking(ranked=ranked, excluded=excluded)


def _score(f: Features, strategy: str) -> float:
    if strategy == CHEAPEST:
        return f.price
    if strategy == FASTEST:
        return f.speed
    if strategy == MOST_RELIABLE:
        return f.reliability
    assert strategy == BALANCED, strategy
    w = BALANCED_WEIGHTS
    return w["price"] * f.price + w["reliability"] * f.reliability + w["speed"] * f.speed


def _price_scores(candidates: list[Candidate]) -> dict[uuid.UUID, float]:
    """Min-max within each currency: prices in different currencies are never converted into each other."""
    by_currency: dict[str, list[Candidate]] = defaultdict(list)
    for c in candidates:
        by_currency[c.price.currency].append(c)
    out = {}
    for group in by_currency.values():
        low, high = min(c.price.amount for c in group), max(c.price.amount for c in group)
        for c in group:
            out[c.listing_id] = 1.0 if high == low else (high - c.price.amount) / (high - low)
    return out


def _reliability(r: SellerRecord) -> float:
    successes = round((r.success_rate or 0.0) * r.runs)
    return (successes + 1) / (r.runs + 2)


def _speed(r: SellerRecord) -> float:
    p50 = UNKNOWN_LATENCY_MS if r.p50_latency_ms is None else r.p50_latency_ms
    return 1000 / (1000 + max(0, p50))


def _reason(place: int, total: int, strategy: str, c: Candidate, r: SellerRecord, f: Features, score: float) -> str:
    history = (f"success rate {r.success_rate:.2f} over {r.runs} runs" if r.runs and r.success_rate is not None
               else "no runs yet")
    latency = f"p50 {r.p50_latency_ms} ms" if r.p50_latency_ms is not None else "latency unknown"
    return (f"place {place} of {total} by {strategy} score {score:.4f}: price {c.price.amount} {c.price.currency} "
            f"(minor units; price score {f.price:.2f}), {history} (reliability {f.reliability:.2f}), {latency} "
            f"(speed {f.speed:.2f})")

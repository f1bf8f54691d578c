"""The seller reputation fold, without I/O: streaks, cooldown from event times, the latency window."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from projections.catalogue import capability_fields
from projections.seller_stats import CooldownPolicy, Stats, counts_against_seller

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def run(succeeded: bool, latency: int = 10, status: int | None = 200) -> dict[str, Any]:
    return {"succeeded": succeeded, "latency_ms": latency, "http_status": status}


def test_the_failure_that_reaches_the_threshold_starts_the_cooldown() -> None:
    s, policy = Stats(account_id=uuid.uuid4()), CooldownPolicy(failures=2, cooldown_s=30, window=3)
    s.fold(run(False, status=500), T0, policy)
    assert s.cooling_down_until is None
    s.fold(run(False, status=None), T0 + timedelta(seconds=5), policy)
    assert s.cooling_down_until == T0 + timedelta(seconds=35)
    s.fold(run(True), T0 + timedelta(seconds=50), policy)
    assert (s.consecutive_failures, s.cooling_down_until, s.runs, s.successes) == (0, None, 3, 1)


def test_the_latency_window_is_bounded_and_its_median_observed() -> None:
    s, policy = Stats(account_id=uuid.uuid4()), CooldownPolicy(window=4)
    assert s.p50_latency_ms is None
    for latency in (100, 1, 2, 3, 4):
        s.fold(run(True, latency), T0, policy)
    assert s.recent_latencies_ms == [1, 2, 3, 4] and s.p50_latency_ms == 2


@pytest.mark.parametrize(("status", "counts"), [(400, False), (404, False), (422, False), (401, True), (403, True),
                                                (407, True), (408, True), (429, True), (500, True), (None, True)])
def test_a_buyer_caused_rejection_is_not_the_sellers_failure(status: int | None, counts: bool) -> None:
    assert counts_against_seller(run(False, status=status)) is counts


def test_capability_fields_are_read_leniently() -> None:
    good = capability_fields({"name": "S", "price": {"amount": 5, "currency": "USD"}, "providerKey": " OpenAI "})
    assert (good["capability"], good["provider_key"], good["price_amount"], good["input_schema"]) == (
        "S", "openai", 5, "{}")
    bad = capability_fields({"name": 7, "price": {"amount": 2**70, "currency": "USD"}, "inputSchema": []})
    assert (bad["capability"], bad["provider_key"], bad["price_amount"], bad["price_currency"]) == (
        None, None, None, None)

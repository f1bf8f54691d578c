"""seller_stats on real PostgreSQL, from tasks:Task.RunFinished events in the contract's shape."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from app.container import Container
from app.store.types import NewEvent
from projections.catalogue_reader import seller_stats
from projections.rebuild import rebuild
from projections.runner import ProjectionRunner
from projections.seller_stats import RUN_FINISHED, CooldownPolicy, SellerStatsProjection
from tests.journeys import all_visible

T0 = datetime(2026, 2, 1, 12, 0, tzinfo=UTC)
POLICY = CooldownPolicy(failures=3, cooldown_s=60, window=5)


def run_finished(seller: uuid.UUID, account: uuid.UUID, at: datetime, *, succeeded: bool, latency_ms: int,
                 http_status: int | None = 200, retryable: bool = False) -> NewEvent:
    """One attempt's end exactly as the tasks context records it (one event per task stream here)."""
    task, run = uuid.uuid4(), uuid.uuid4()
    data: dict[str, Any] = {
        "run_id": str(run), "attempt": 1, "listing_id": str(uuid.uuid4()), "seller_machine_id": str(seller),
        "seller_account_id": str(account), "capability": "Summarise", "provider_key": "openai",
        "succeeded": succeeded, "http_status": http_status, "latency_ms": latency_ms,
        "error_class": None if succeeded else "http_status", "retryable": retryable,
        "response_digest": None, "body": None, "timestamp": at.isoformat(),
    }
    return NewEvent(event_id=uuid.uuid4(), stream_id=task, stream_type="task", version=1, type=RUN_FINISHED,
                    data=data, metadata={"actor": "worker"})


async def caught_up(c: Container, batch_size: int = 500) -> None:
    await all_visible(c)
    await ProjectionRunner(c.pool, c.store, [], batch_size=batch_size).catch_up(SellerStatsProjection(POLICY))


async def test_fold_cooldown_reset_and_rebuild(fresh_container: Container) -> None:
    c = fresh_container
    seller, other, account = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    t = [T0 + timedelta(seconds=10 * i) for i in range(12)]
    await c.store.append([run_finished(seller, account, t[0], succeeded=True, latency_ms=40)])
    await c.store.append([run_finished(seller, account, t[1], succeeded=True, latency_ms=20)])
    await c.store.append([run_finished(other, account, t[1], succeeded=True, latency_ms=5)])
    # The buyer's bad input (400) neither counts against the seller nor resets its streak.
    await c.store.append([run_finished(seller, account, t[2], succeeded=False, latency_ms=90, http_status=503,
                                       retryable=True)])
    await c.store.append([run_finished(seller, account, t[3], succeeded=False, latency_ms=10, http_status=400)])
    await c.store.append([run_finished(seller, account, t[4], succeeded=False, latency_ms=30_000, http_status=None,
                                       retryable=True)])
    await caught_up(c, batch_size=2)
    s = (await seller_stats(c.pool, [seller, other, uuid.uuid4()], at=t[4]))
    assert set(s) == {seller, other}
    mine = s[seller]
    assert (mine.runs, mine.successes, mine.consecutive_failures) == (5, 2, 2)
    assert mine.success_rate == 0.4 and not mine.cooling_down and mine.cooling_down_until is None
    assert mine.p50_latency_ms == 40  # lower median of [10, 20, 40, 90, 30000]

    # The third consecutive failure starts the cooldown at its own time, not the projector's clock.
    await c.store.append([run_finished(seller, account, t[5], succeeded=False, latency_ms=50, http_status=502,
                                       retryable=True)])
    await caught_up(c)
    mine = (await seller_stats(c.pool, [seller], at=t[5] + timedelta(seconds=59)))[seller]
    assert mine.consecutive_failures == 3 and mine.cooling_down
    assert mine.cooling_down_until == t[5] + timedelta(seconds=60)
    assert mine.p50_latency_ms == 50  # the window keeps the last 5: [20, 90, 10, 30000, 50]
    assert not (await seller_stats(c.pool, [seller], at=t[5] + timedelta(seconds=60)))[seller].cooling_down
    assert not (await seller_stats(c.pool, [seller]))[seller].cooling_down  # by now(): long past

    # A failure after the cooldown starts another; a success resets the streak and the cooldown.
    await c.store.append([run_finished(seller, account, t[11], succeeded=False, latency_ms=5, http_status=500,
                                       retryable=True)])
    await caught_up(c)
    mine = (await seller_stats(c.pool, [seller], at=t[11]))[seller]
    assert mine.consecutive_failures == 4 and mine.cooling_down_until == t[11] + timedelta(seconds=60)
    await c.store.append([run_finished(seller, account, t[11] + timedelta(seconds=61), succeeded=True,
                                       latency_ms=7)])
    await caught_up(c)
    mine = (await seller_stats(c.pool, [seller], at=t[11]))[seller]
    assert (mine.runs, mine.successes, mine.consecutive_failures, mine.cooling_down_until) == (8, 3, 0, None)
    assert not mine.cooling_down

    live = [tuple(r) for r in await c.pool.fetch("SELECT * FROM seller_stats ORDER BY machine_id")]
    await rebuild(c.pool, c.store, SellerStatsProjection(POLICY), batch_size=10_000)
    assert [tuple(r) for r in await c.pool.fetch("SELECT * FROM seller_stats ORDER BY machine_id")] == live

"""The supervisor's restart delays: doubling per crash, bounded, reset after a stable run."""

from __future__ import annotations

from app.children import Backoff


def test_delays_double_per_crash_up_to_the_bound() -> None:
    b = Backoff(first=1.0, most=30.0, stable=60.0)
    assert [b.after_crash(uptime=0.5) for _ in range(8)] == [1, 2, 4, 8, 16, 30, 30, 30]


def test_a_stable_run_resets_the_delay() -> None:
    b = Backoff(first=1.0, most=30.0, stable=60.0)
    for _ in range(4):
        b.after_crash(uptime=1.0)
    assert b.after_crash(uptime=59.0) == 16
    assert b.after_crash(uptime=61.0) == 1 and b.after_crash(uptime=0.1) == 2

"""The live tail's read spacing: derived from what a fan-out measurably costs, bounded, quick to rise and slow
to fall (the end-to-end measurement is in tests/api/test_audit_stream.py)."""

from __future__ import annotations

from typing import cast

import asyncpg
import pytest

from app.audit_tail import BUSY_SHARE, COST_EASE, MAX_SPACING_S, MIN_SPACING_S, AuditTail, spacing_for


def test_spacing_keeps_fan_outs_to_their_share_of_the_loop() -> None:
    assert spacing_for(0.02) == pytest.approx(0.02 / BUSY_SHARE)
    assert spacing_for(0.02) > spacing_for(0.01)  # a dearer fan-out: reads further apart
    assert spacing_for(0.0) == MIN_SPACING_S  # cheap (few subscribers): still at most this many reads a second
    assert spacing_for(60.0) == MAX_SPACING_S  # a stalled loop: the added latency stays bounded


def test_the_cost_estimate_rises_at_once_and_eases_down() -> None:
    tail = AuditTail(cast(asyncpg.Pool, None), 1.0, lambda _: b"")
    assert tail.spacing == MIN_SPACING_S  # nothing measured yet
    tail.measured(0.04)
    assert tail.cost == 0.04 and tail.spacing == pytest.approx(0.04 / BUSY_SHARE)
    tail.measured(0.08)
    assert tail.cost == 0.08  # dearer: counts at once
    tail.measured(0.0)
    assert tail.cost == pytest.approx(0.08 * (1 - COST_EASE))  # one cheap read only pulls it part of the way
    for _ in range(50):
        tail.measured(0.004)
    assert tail.cost == pytest.approx(0.004, rel=0.01)

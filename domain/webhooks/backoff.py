"""When a failing webhook delivery is tried next: exponential backoff with full jitter, within a retry span."""

from __future__ import annotations

import random


def next_delay_s(attempts: int, base_s: float, max_s: float, rand: random.Random | None = None) -> float:
    """After `attempts` failures: uniform in [d/2, d] with d = min(max_s, base_s * 2^(attempts-1)).

    Half the step is kept so retries of one endpoint never collapse to zero (jitter spreads receivers'
    load; the floor keeps the schedule exponential)."""
    step = min(max_s, base_s * 2 ** max(0, attempts - 1))
    return (rand or random).uniform(step / 2, step)

"""Optimistic concurrency for command services: retry a lost race on fresh state, or honour If-Match."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

from domain.shared.errors import ConcurrencyConflict, DomainError, PreconditionFailed

RETRIES = 3
T = TypeVar("T")


async def retry_conflicts(attempt: Callable[[], Awaitable[T]], expected_version: int | None = None, *,
                          attempts: int = RETRIES, jitter_s: float = 0.0,
                          replay: Callable[[], Awaitable[T | None]] | None = None) -> T:
    """Re-run a load-decide-save after a lost race, unless the client pinned a stream version (If-Match).

    `jitter_s` spaces the retries of writers that share one busy stream, so they do not collide in lockstep.
    `replay`: asked when the decision is refused (any domain error but a lost race); it answers for a retried
    request whose first attempt was recorded (see Repository.recorded), or None to let the refusal stand.
    """
    for n in range(1 if expected_version is not None else attempts):
        try:
            return await attempt()
        except ConcurrencyConflict:
            if expected_version is not None or n == attempts - 1:
                raise
            if jitter_s:
                await asyncio.sleep(random.uniform(0, jitter_s * (n + 1)))
        except DomainError:
            if replay is not None and (answer := await replay()) is not None:
                return answer
            raise
    raise AssertionError("unreachable")


def check_expected(version: int | None, expected: int | None, what: str) -> None:
    if expected is not None and version != expected:
        raise PreconditionFailed(f"{what} is at version {version}, not {expected}", currentVersion=version)

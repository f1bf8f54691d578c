"""Helpers for tests that drive a ProjectionRunner in-process."""

from __future__ import annotations

import asyncio
import time

from projections.runner import ProjectionRunner


async def running(runner: ProjectionRunner, stop: asyncio.Event) -> asyncio.Task[None]:
    """Start `runner` until `stop` is set; return once it leads every one of its projections."""
    task = asyncio.create_task(runner.run(stop))
    deadline = time.monotonic() + 30
    while runner.leading != {p.name for p in runner.projections}:
        assert time.monotonic() < deadline, "the runner never led every projection"
        await asyncio.sleep(0.01)
    return task

"""The `mm worker` process SIGKILLed in the middle of a seller call: after a restart the task completes exactly
once, the open run re-sent under the same Idempotency-Key (the seller sees one key, twice), nothing doubled."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
import uuid
from collections.abc import AsyncIterator

import pytest

from app.container import Container
from app.outbound.stub_seller import StubSeller
from domain.tasks.aggregate import FINISHED
from tests.integration.proc_tools import Output, cleanup, mm_env, start_mm
from tests.workers.harness import eventually, relay_through
from tests.workers.tasks_market import buyer, events, resolved, seller
from workers.broker import make_broker

LEASE_S = 2.0  # the killed worker's claim runs out this long after its last renewal


@pytest.fixture
async def c(fresh_container: Container) -> AsyncIterator[Container]:
    yield fresh_container


def start_worker(dsn: str) -> tuple[subprocess.Popen[str], Output]:
    env = mm_env(MM_DATABASE_URL=dsn, MM_ALLOW_PRIVATE_ENDPOINTS="true", MM_WORKER_CLAIM_LEASE_S=str(LEASE_S),
                 MM_LOG_LEVEL="INFO")
    env.pop("MM_BROKER_URL", None)  # the PostgreSQL broker on the test database
    proc = start_mm("worker", "--threads", "2", env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    return proc, Output(proc)


async def test_a_worker_killed_mid_call_completes_the_task_exactly_once_after_restart(
    c: Container, fresh_database: str, stub: StubSeller
) -> None:
    await seller(c, f"{stub.url}/sleep/3000/echo", 100)
    task = await resolved(c, await buyer(c), timeout_ms=20_000)
    broker = make_broker(fresh_database)
    try:
        await relay_through(c, broker, task.id)  # the execute message waits in the broker's table
    finally:
        broker.close()
    first, out = start_worker(fresh_database)
    second: subprocess.Popen[str] | None = None
    try:
        deadline = time.monotonic() + 60
        while stub.stats.total == 0:  # the seller has the call; its answer is three seconds away
            assert first.poll() is None and time.monotonic() < deadline, f"no call reached the seller:\n{out.text}"
            await asyncio.sleep(0.02)
        os.kill(first.pid, signal.SIGKILL)
        first.wait(10)
        assert (await c.tasks.load(task.id)).status == "executing"
        [started] = await events(c, task.id, "RunStarted")
        assert await events(c, task.id, "RunFinished") == []

        second, out2 = start_worker(fresh_database)
        finished = await eventually(lambda: _finished(c, task.id), 60)
        assert finished, f"the task did not finish after the restart:\n{out2.text}"
    finally:
        cleanup(first)
        if second is not None:
            second.send_signal(signal.SIGTERM)
            try:
                second.wait(40)
            except subprocess.TimeoutExpired:
                cleanup(second)
    assert (await c.tasks.load(task.id)).status == "succeeded"
    assert [len(await events(c, task.id, kind)) for kind in ("RunStarted", "RunFinished", "Succeeded")] == [1, 1, 1]
    # The seller saw the same run twice under one key: the call in flight, then its re-send after the restart.
    assert stub.stats.by_key == {started["run_id"]: 2}


async def _finished(c: Container, task_id: uuid.UUID) -> bool:
    return (await c.tasks.load(task_id)).status in FINISHED

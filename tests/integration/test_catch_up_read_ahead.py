"""A catch-up reads the next batch on a second session while it writes the current one (ReadAhead): every event
is still applied once, in log order, and a batch read ahead is used only from where the checkpoint stands."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import asyncpg
import pytest

from app.container import Container
from app.settings import Settings
from app.store.types import LogPosition, NewEvent, RecordedEvent
from projections import checkpoints
from projections.base import Tables
from projections.runner import ProjectionRunner, ReadAhead
from tests.conftest import TEST_SECRET_KEY


@pytest.fixture
def c(fresh_container: Container) -> Container:
    return fresh_container


class Recorder:
    name = "read_ahead_probe"
    tables: tuple[str, ...] = ()

    def __init__(self) -> None:
        self.applied: list[LogPosition] = []

    async def apply_many(self, conn: asyncpg.Connection, events: Sequence[RecordedEvent], t: Tables) -> None:
        self.applied += [e.log_position for e in events]


async def _append(c: Container, streams: int, per_stream: int) -> None:
    for _ in range(streams):
        stream_id = uuid.uuid4()
        await c.store.append([NewEvent(event_id=uuid.uuid4(), stream_id=stream_id, stream_type="test:Probe", version=v,
                                       type="test:Probe.Happened", data={"v": v}, metadata={})
                              for v in range(1, per_stream + 1)])


async def _log(c: Container) -> list[LogPosition]:
    rows = await c.pool.fetch("SELECT tx_id::text::bigint AS tx_id, position FROM events ORDER BY tx_id, position")
    return [LogPosition(r["tx_id"], r["position"]) for r in rows]


async def test_a_catch_up_over_many_batches_applies_every_event_once_in_log_order(c: Container) -> None:
    await _append(c, 40, 5)  # 200 events, read 7 at a time: 28 full batches and a last one of 4
    probe = Recorder()
    runner = ProjectionRunner(c.pool, c.store, [], batch_size=7)
    assert await runner.catch_up(probe) == 200
    assert probe.applied == await _log(c)
    assert runner.batches_read_ahead == 28  # every batch after a full one was read while the last was written
    async with c.pool.acquire() as conn:
        assert await checkpoints.position(conn, probe.name) == probe.applied[-1]
    await _append(c, 3, 1)  # a second catch-up goes on from the checkpoint
    assert await runner.catch_up(probe) == 3
    assert probe.applied == await _log(c)


async def test_a_read_ahead_is_used_only_from_where_it_was_read(c: Container) -> None:
    await _append(c, 4, 5)
    log = await _log(c)
    ahead = ReadAhead(c.pool, c.store, 5)
    ahead.start(log[4])
    assert await ahead.take(log[3]) is None  # the checkpoint is elsewhere (another writer moved it): discarded
    ahead.start(log[4])
    got = await ahead.take(log[4])
    assert got is not None and [e.log_position for e in got] == log[5:10]
    assert await ahead.take(log[4]) is None  # taken once
    ahead.start(log[-1])
    assert await ahead.take(log[-1]) is None  # nothing after the end: the caller reads again itself
    ahead.start(log[0])
    await ahead.close()
    assert await ahead.take(log[0]) is None


@pytest.mark.parametrize("pool_size", [1, 2])
async def test_without_a_spare_session_the_catch_up_reads_on_its_own(fresh_database: str, pool_size: int) -> None:
    c = await Container.open(Settings(secret_key=TEST_SECRET_KEY), fresh_database, min_size=1, max_size=pool_size)
    try:
        await _append(c, 6, 5)
        runner = ProjectionRunner(c.pool, c.store, [], batch_size=10)
        probe = Recorder()
        async with c.pool.acquire() if pool_size == 2 else _nothing():  # size 2: the spare session is busy
            ReadAhead.ACQUIRE_TIMEOUT_S, before = 0.05, ReadAhead.ACQUIRE_TIMEOUT_S
            try:
                assert await runner.catch_up(probe) == 30
            finally:
                ReadAhead.ACQUIRE_TIMEOUT_S = before
        assert probe.applied == await _log(c)
        assert runner.batches_read_ahead == 0
    finally:
        await c.close()


@asynccontextmanager
async def _nothing() -> AsyncIterator[None]:
    yield

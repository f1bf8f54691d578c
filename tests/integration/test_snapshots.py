"""Snapshots bound the cost of loading long streams and never change what a load returns."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from eventsourcing.domain import Aggregate

from app.db import create_pool
from app.settings import Settings
from app.store.event_store import EventStore
from app.store.mapper import rebuild
from app.store.repository import Repository
from domain.shared.context import CommandContext

CTX = CommandContext(at=datetime(2026, 1, 1, tzinfo=UTC), actor="test")


class Meter(Aggregate):
    """A long-lived stream in miniature (heartbeats are the real case)."""

    TOPIC = "tests:Meter"
    SNAPSHOT_EVERY = 5

    class Created(Aggregate.Created):
        TOPIC = "tests:Meter.Created"

    class Event(Aggregate.Event):
        TOPIC = "tests:Meter.Event"

    class Opened(Aggregate.Created):
        TOPIC = "tests:Meter.Opened"
        owner: uuid.UUID

    class Read(Aggregate.Event):
        TOPIC = "tests:Meter.Read"
        value: int
        at: datetime

        def apply(self, aggregate: Any) -> None:
            aggregate.total += self.value
            aggregate.last = {"value": self.value, "at": self.at, "by": aggregate.owner}

    def __init__(self, owner: uuid.UUID) -> None:
        self.owner = owner
        self.total = 0
        self.last: dict[str, Any] | None = None

    def read(self, value: int) -> None:
        self.trigger_event(self.Read, value=value, at=datetime.now(UTC))


class Replays:
    """What each load started from: (the snapshot's version or 0, the versions of the events replayed after it)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.loads: list[tuple[int, list[int]]] = []
        import app.store.repository as repository

        def spy(events: list[Any], start: Aggregate | None = None) -> Aggregate | None:
            self.loads.append((start.version if start else 0, [e.version for e in events]))
            return rebuild(events, start)

        monkeypatch.setattr(repository, "rebuild", spy)


@pytest.fixture
async def repo(fresh_database: str) -> AsyncIterator[Repository]:
    pool = await create_pool(fresh_database, Settings(), min_size=1, max_size=4)
    try:
        yield Repository(EventStore(pool))
    finally:
        await pool.close()


async def write_readings(repo: Repository, n: int) -> uuid.UUID:
    meter = Meter._create(Meter.Opened, id=uuid.uuid4(), owner=uuid.uuid4())
    await repo.save(meter, CTX)
    for i in range(n):
        meter = await repo.get(Meter, meter.id)
        meter.read(i)
        if i % 4 == 0:
            meter.read(100)  # some commands record two events, straddling a snapshot boundary
        await repo.save(meter, CTX)
    return meter.id


async def test_load_starts_from_the_latest_snapshot_and_equals_a_full_replay(
        repo: Repository, monkeypatch: pytest.MonkeyPatch) -> None:
    meter_id = await write_readings(repo, 12)
    full = rebuild(await repo.store.load(meter_id))
    snapshot_version = await repo.store.pool.fetchval("SELECT version FROM snapshots WHERE stream_id = $1", meter_id)
    assert snapshot_version is not None and snapshot_version >= 10

    replays = Replays(monkeypatch)
    loaded = await repo.get(Meter, meter_id)
    assert replays.loads == [(snapshot_version, list(range(snapshot_version + 1, full.version + 1)))]
    assert loaded.__dict__ == full.__dict__ and loaded.total == sum(range(12)) + 300
    assert isinstance(loaded.last["at"], datetime) and isinstance(loaded.last["by"], uuid.UUID)


async def test_a_snapshot_of_another_schema_version_is_ignored(
        repo: Repository, monkeypatch: pytest.MonkeyPatch) -> None:
    meter_id = await write_readings(repo, 6)
    await repo.store.pool.execute("UPDATE snapshots SET schema_version = 99, state = '{}' WHERE stream_id = $1",
                                  meter_id)
    replays = Replays(monkeypatch)
    loaded = await repo.get(Meter, meter_id)
    assert [start for start, _ in replays.loads] == [0]
    assert loaded.__dict__ == rebuild(await repo.store.load(meter_id)).__dict__


async def test_failing_to_write_a_snapshot_does_not_fail_the_command(repo: Repository) -> None:
    await repo.store.pool.execute("ALTER TABLE snapshots RENAME TO snapshots_gone")
    try:
        meter_id = await write_readings(repo, 6)
    finally:
        await repo.store.pool.execute("ALTER TABLE snapshots_gone RENAME TO snapshots")
    assert (await repo.get(Meter, meter_id)).total == sum(range(6)) + 200


async def test_a_state_the_transcoder_cannot_encode_does_not_fail_the_command(repo: Repository) -> None:
    meter = Meter._create(Meter.Opened, id=uuid.uuid4(), owner=uuid.uuid4())
    await repo.save(meter, CTX)
    for i in range(Meter.SNAPSHOT_EVERY):
        meter = await repo.get(Meter, meter.id)
        meter.read(i)
        meter.unencodable = object()  # type: ignore[attr-defined]  # as if a new state type were unregistered
        await repo.save(meter, CTX)  # crosses a snapshot boundary: the snapshot fails, the append stands
    assert await repo.store.pool.fetchval("SELECT count(*) FROM snapshots WHERE stream_id = $1", meter.id) == 0
    assert (await repo.get(Meter, meter.id)).total == sum(range(Meter.SNAPSHOT_EVERY))

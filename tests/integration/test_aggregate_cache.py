"""The repository's copies of long streams: a load reads only what follows the copy, sees every other writer's
appends, never shares state between callers, and falls back to the whole stream when the copy does not match it."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest

from app.container import Container
from app.services.agents import ReportedEndpoint
from app.store import repository
from app.store.aggregate_cache import AggregateCache
from app.store.event_store import EventStore
from app.store.loads import StreamLoad, load_streams
from app.store.mapper import rebuild
from app.store.repository import Repository
from domain.runtime.agent import ACTIVE, REVOKED, MachineAgent
from domain.runtime.commands import UpsertEndpoint
from domain.runtime.endpoint import RuntimeEndpoint, endpoint_id
from domain.shared.context import CommandContext
from tests.journeys import enrolled_agent, operational_machine


async def _beating(c: Container, beats: int) -> tuple[uuid.UUID, uuid.UUID, str]:
    """An agent that has sent `beats` heartbeats: (its id, its endpoint's stream id, its token)."""
    ctx = CommandContext(at=datetime.now(UTC), actor="t", account_id=uuid.uuid4())
    machine = await operational_machine(c, ctx)
    agent_id, token = await enrolled_agent(c, ctx, machine.id, keys=["gpu"], lease_seconds=30)
    for i in range(beats):
        await beat(c, token, i)
    return agent_id, endpoint_id(machine.id, "gpu"), token


async def beat(c: Container, token: str, i: int) -> None:
    await c.agents.heartbeat(CommandContext(at=datetime.now(UTC), actor="agent"), token,
                             [ReportedEndpoint(provider_key="gpu", url=f"https://gpu.example/{i}")])


async def test_heartbeats_load_from_the_copy_and_equal_a_full_replay(fresh_container: Container) -> None:
    c = fresh_container
    agent_id, stream, token = await _beating(c, 12)
    hits = c.repo.cache.hits
    await beat(c, token, 12)
    assert c.repo.cache.hits >= hits + 2  # the agent and its endpoint, each from its copy
    for cls, sid in ((MachineAgent, agent_id), (RuntimeEndpoint, stream)):
        cached = await c.repo.get(cls, sid)
        whole = rebuild(await c.store.load(sid))
        assert cached.__dict__ == whole.__dict__
        assert cached is not await c.repo.get(cls, sid)  # every load its own object
    endpoint = await c.repo.get(RuntimeEndpoint, stream)
    assert endpoint.url == "https://gpu.example/12"


async def test_another_writers_appends_are_seen_at_once(fresh_container: Container) -> None:
    c = fresh_container
    _agent_id, stream, _ = await _beating(c, 3)
    await c.repo.get(RuntimeEndpoint, stream)  # this process's copy is at version 3 now
    other = Repository(EventStore(c.pool), cache_entries=0)  # another process
    endpoint = await other.get(RuntimeEndpoint, stream)
    endpoint.upsert(UpsertEndpoint(url="https://elsewhere.example/v1", source="manual"), datetime.now(UTC))
    await other.save(endpoint, CommandContext(at=datetime.now(UTC), actor="other", account_id=endpoint.account_id))
    seen = await c.repo.get(RuntimeEndpoint, stream)
    assert (seen.url, seen.version, seen.source) == ("https://elsewhere.example/v1", endpoint.version, "manual")
    assert seen.__dict__ == rebuild(await c.store.load(stream)).__dict__


async def test_a_decision_that_is_not_saved_leaves_the_copy_as_it_was(fresh_container: Container) -> None:
    c = fresh_container
    agent_id, _stream, token = await _beating(c, 2)
    agent = await c.repo.get(MachineAgent, agent_id)
    version = agent.version
    agent.revoke("decided, never saved (as when an append conflicts)", datetime.now(UTC))
    assert agent.status == REVOKED
    again = await c.repo.get(MachineAgent, agent_id)
    assert again.version == version and again.status == ACTIVE
    await beat(c, token, 2)  # and the agent still beats


async def test_a_stream_that_is_not_the_copys_is_loaded_whole(fresh_container: Container) -> None:
    c = fresh_container
    _, stream, _ = await _beating(c, 4)
    await c.repo.get(RuntimeEndpoint, stream)  # the copy is at version 4
    # As if the database were restored to an earlier point under the running process: the last event is gone.
    await c.pool.execute("ALTER TABLE events DISABLE TRIGGER USER")
    try:
        await c.pool.execute("DELETE FROM events WHERE stream_id = $1 AND version = 4", stream)
    finally:
        await c.pool.execute("ALTER TABLE events ENABLE TRIGGER USER")
    await c.pool.execute("DELETE FROM snapshots WHERE stream_id = $1", stream)
    loaded = await c.repo.get(RuntimeEndpoint, stream)
    assert loaded.version == 3 and loaded.url == "https://gpu.example/2"
    assert loaded.__dict__ == rebuild(await c.store.load(stream)).__dict__


async def test_a_load_from_the_copy_reads_only_what_follows_it(fresh_container: Container,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    c = fresh_container
    _, stream, token = await _beating(c, 15)  # an endpoint of 15 events, snapshotted every 20: 15 rows to replay
    read: list[int] = []

    async def counted(pool: asyncpg.Pool, wanted: Any) -> dict[uuid.UUID, StreamLoad]:
        loads = await load_streams(pool, wanted)
        read.append(len(loads[stream].events) + (loads[stream].snapshot is not None) if stream in loads else 0)
        return loads

    monkeypatch.setattr(repository, "load_streams", counted)
    await Repository(EventStore(c.pool), cache_entries=0).get(RuntimeEndpoint, stream)
    await c.repo.get(RuntimeEndpoint, stream)
    await beat(c, token, 15)  # loads the endpoint from its copy, then appends one more
    await c.repo.get(RuntimeEndpoint, stream)
    assert read[0] == 15  # without a copy: the whole stream
    assert read[1] == 1  # the copy's own last event, and nothing after it
    assert read[-1] == 1  # the heartbeat's copy, saved with its event: again one row


def test_the_copies_are_bounded_least_recently_used_first() -> None:
    cache = AggregateCache(2)
    ids = [uuid.uuid4() for _ in range(3)]
    for i in ids:
        e = RuntimeEndpoint.open(uuid.uuid4(), i, "gpu", UpsertEndpoint(url="https://a.example/v1"), datetime.now(UTC))
        e.collect_events()
        cache.put(e, uuid.uuid4())
    assert len(cache) == 2 and cache.bytes == sum(len(c.blob) for _, c in cache._copies.values())
    assert cache.get(RuntimeEndpoint, endpoint_id(ids[0], "gpu")) is None
    assert cache.get(MachineAgent, endpoint_id(ids[2], "gpu")) is None  # another type under that id: no copy
    assert cache.get(RuntimeEndpoint, endpoint_id(ids[2], "gpu")) is not None
    assert len(AggregateCache(0)) == 0

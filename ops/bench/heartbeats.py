"""Phase 4: POST /v1/machine-agents/heartbeat against the real app, on agent and endpoint streams past a snapshot."""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from app.db import create_pool
from app.settings import Settings
from app.store.event_store import EventStore
from app.store.repository import Repository, stream_type_of
from app.store.snapshots import schema_version, snapshot_every
from domain.runtime.agent import MachineAgent
from domain.runtime.commands import AGENT, RecordHeartbeat, UpsertEndpoint
from domain.runtime.endpoint import RuntimeEndpoint
from domain.shared.context import CommandContext
from ops.bench.db import postmaster, reset, settle, tree_cpu
from ops.bench.http_api import Load, ceiling, fan_out, load, machine_body, serving, tenant_key

HEARTBEAT = "/v1/machine-agents/heartbeat"
BEAT_SECONDS = 30  # the cadence the requirement assumes; the seeded history is spaced by it
LEASE_SECONDS = 60
SEEDERS = 8  # concurrent in-process writers while seeding history (not timed)


@dataclass(frozen=True)
class Agent:
    id: uuid.UUID
    token: str
    provider_key: str
    url: str

    def endpoint(self) -> dict[str, Any]:
        return {"providerKey": self.provider_key, "url": self.url, "authToken": f"bench-secret-{self.id.hex[:12]}",
                "metadata": {"gpu": "a100", "slots": 4}}


@dataclass
class Replay:
    """How much of its stream a load replays after the latest snapshot, over every stream of one aggregate type."""

    kind: str
    every: int  # the aggregate's SNAPSHOT_EVERY
    streams: int
    snapshotted: int
    hottest_events: int
    hottest_snapshot: int
    hottest_replay: int
    worst_replay: int


@dataclass
class HeartbeatResult:
    machines: int
    agents: int
    history_events: int
    history_beats: tuple[int, int]  # fewest and most past beats seeded per agent
    setup_seconds: float
    health: Load
    beats: Load
    db_cpu: float | None  # CPU seconds of every PostgreSQL process during the timed beats, if the server is local
    replays: list[Replay]

    @property
    def non_200(self) -> int:
        return sum(n for status, n in self.beats.statuses.items() if status != 200)


def _ok(response: httpx.Response, status: int) -> dict[str, Any]:
    if response.status_code != status:
        raise RuntimeError(f"{response.request.method} {response.request.url.path} answered"
                           f" {response.status_code}, not {status}: {response.text[:300]}")
    body: dict[str, Any] = response.json()
    return body


async def _active_machine(client: httpx.AsyncClient, auth: dict[str, str], i: int) -> str:
    """Register with a real Ed25519 key, answer the identity challenge, activate: as a machine does."""
    key = Ed25519PrivateKey.generate()
    public = base64.b64encode(key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()
    mid = _ok(await client.post("/v1/machines", headers=auth, json={**machine_body(i), "publicKey": public}), 201)["id"]
    c = _ok(await client.post(f"/v1/machines/{mid}/identity/challenge", headers=auth), 201)
    signature = base64.b64encode(key.sign(c["nonce"].encode())).decode()
    _ok(await client.post(f"/v1/machines/{mid}/identity/verify", headers=auth,
                          json={"challengeId": c["challengeId"], "signature": signature}), 200)
    _ok(await client.post(f"/v1/machines/{mid}/activate", headers=auth), 200)
    return str(mid)


async def _enroll(client: httpx.AsyncClient, auth: dict[str, str], machine_ids: list[str], i: int) -> Agent:
    """Agent i on machine i mod M; each agent on a machine reports its own provider key (its own endpoint stream)."""
    machine, key = i % len(machine_ids), f"gpu-{i // len(machine_ids)}"
    body = {"name": f"bench-agent-{i}", "allowedProviderKeys": [key], "leaseSeconds": LEASE_SECONDS}
    path = f"/v1/machines/{machine_ids[machine]}/agents/enrollment"
    enrolled = _ok(await client.post(path, headers=auth, json=body), 201)
    return Agent(uuid.UUID(enrolled["agent"]["id"]), enrolled["agentToken"], key,
                 f"https://{key}.m{machine}.bench.example.net/v1")


async def _history(repo: Repository, agent: Agent, beats: int, every: int, now: datetime) -> int:
    """`beats` past heartbeats, 30 s apart, decided by the real aggregates. Saved as the first `every` beats (a
    snapshot is taken there), then the rest, which stays behind the snapshot for the timed loads to replay."""
    state = await repo.get(MachineAgent, agent.id, what="agent")
    reported = agent.endpoint()
    ctx = CommandContext(at=now, actor=f"agent:{state.id}", account_id=state.account_id, request_id=uuid.uuid4().hex)
    endpoint: RuntimeEndpoint | None = None
    for k in range(beats):
        at = now - timedelta(seconds=BEAT_SECONDS * (beats - k))
        lease = at + timedelta(seconds=state.lease_seconds)
        # agent.id, not state.id: an aggregate replayed from events (not from a snapshot) carries asyncpg's UUID
        # class as its id, which the snapshot transcoder cannot encode once it is copied into endpoint state.
        cmd = UpsertEndpoint(url=reported["url"], auth_token=reported["authToken"], metadata=reported["metadata"],
                             source=AGENT, agent_id=agent.id, lease_expires_at=lease)
        if endpoint is None:
            endpoint = RuntimeEndpoint.open(state.account_id, state.machine_id, agent.provider_key, cmd, at)
        else:
            endpoint.upsert(cmd, at)
        state.record_heartbeat(RecordHeartbeat(provider_keys=[agent.provider_key], lease_expires_at=lease), at)
        if k + 1 in (every, beats):
            await repo.save_all([state, endpoint], ctx)
    return 2 * beats


def _history_beats(i: int) -> tuple[int, int]:
    """Agent i's past beats, and where its first snapshot is taken: N to 2N-1 beats for SNAPSHOT_EVERY = N."""
    every = snapshot_every(MachineAgent) or 1
    return every + i % every, every


async def _seed(dsn: str, agents: list[Agent]) -> int:
    """Age every stream past its first snapshot, staggered so the timed loads replay 0 to N-1 events after it."""
    pool = await create_pool(dsn, Settings(), min_size=1, max_size=SEEDERS)
    try:
        repo = Repository(EventStore(pool))
        now = datetime.now(UTC)
        done = await fan_out(range(SEEDERS), len(agents),
                             lambda _, i: _history(repo, agents[i], *_history_beats(i), now))
        return sum(done)
    finally:
        await pool.close()


async def _replays(dsn: str) -> list[Replay]:
    """Read each agent and endpoint stream's length and its usable snapshot straight from the tables."""
    out = []
    conn = await asyncpg.connect(dsn)
    try:
        for kind, cls in (("agent", MachineAgent), ("endpoint", RuntimeEndpoint)):
            rows = await conn.fetch(
                "SELECT e.events, e.version, coalesce(s.version, 0) AS snapshot FROM"
                " (SELECT stream_id, count(*) AS events, max(version) AS version FROM events"
                "  WHERE stream_type = $1 GROUP BY stream_id) e"
                " LEFT JOIN snapshots s ON s.stream_id = e.stream_id AND s.stream_type = $1 AND s.schema_version = $2",
                stream_type_of(cls), schema_version(cls),
            )
            if not rows:
                raise RuntimeError(f"no {kind} streams in the log after the run")
            hottest = max(rows, key=lambda r: r["events"])
            out.append(Replay(
                kind=kind, every=snapshot_every(cls) or 0, streams=len(rows),
                snapshotted=sum(1 for r in rows if r["snapshot"]), hottest_events=hottest["events"],
                hottest_snapshot=hottest["snapshot"], hottest_replay=hottest["version"] - hottest["snapshot"],
                worst_replay=max(r["version"] - r["snapshot"] for r in rows),
            ))
    finally:
        await conn.close()
    return out


async def _prepare(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("VACUUM ANALYZE events, snapshots")  # a long-lived log has statistics and a visibility map
        await settle(conn)
    finally:
        await conn.close()


async def run(dsn: str, machines: int, agents: int, requests: int, warmup: int) -> HeartbeatResult:
    """Set up (not timed) `machines` active machines and `agents` agents with aged streams, then time `requests`."""
    await reset(dsn)
    key = await tenant_key(dsn)
    auth = {"Authorization": f"Bearer {key}"}
    started = time.perf_counter()
    # Agents authenticate with their own token in the body, so the clients carry no API key by default.
    async with serving(dsn, None) as (clients, server):
        mids = await fan_out(clients, machines, lambda c, i: _active_machine(c, auth, i))
        enrolled = await fan_out(clients, agents, lambda c, i: _enroll(c, auth, mids, i))
        history = await _seed(dsn, enrolled)

        def beat(client: httpx.AsyncClient, i: int) -> Awaitable[httpx.Response]:
            agent = enrolled[i % agents]
            return client.post(HEARTBEAT, json={"agentToken": agent.token, "endpoints": [agent.endpoint()]})

        # One warm-up beat per agent: every code path, pool connection and cache is hot before timing.
        first = await load(clients, agents, beat, server)
        if set(first.statuses) != {200}:
            raise RuntimeError(f"warm-up heartbeats failed: statuses {dict(first.statuses)}"
                               + (f", transport errors {dict(first.failures)}" if first.failures else ""))
        await _prepare(dsn)
        setup = time.perf_counter() - started
        health = await ceiling(clients, server, requests, warmup)
        pg = await postmaster(dsn)
        pg_before = tree_cpu(pg) if pg else 0.0
        beats = await load(clients, requests, beat, server)
        db_cpu = tree_cpu(pg) - pg_before if pg else None
    seeded = [_history_beats(i)[0] for i in range(agents)]
    return HeartbeatResult(machines, agents, history, (min(seeded), max(seeded)), setup, health, beats, db_cpu,
                           await _replays(dsn))


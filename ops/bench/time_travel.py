"""Phase `timetravel`: GET of an agent as it stood at a random past version (or time) of its 1,000-event stream."""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx

from app.db import create_pool
from app.settings import Settings
from app.store.event_store import EventStore
from app.store.repository import Repository
from domain.runtime.agent import MachineAgent
from domain.runtime.commands import AGENT, RecordHeartbeat, UpsertEndpoint
from domain.runtime.endpoint import RuntimeEndpoint
from domain.shared.context import CommandContext
from ops.bench.db import reset
from ops.bench.heartbeats import Agent, _active_machine, _enroll
from ops.bench.http_api import Load, load, serving, tenant_key
from ops.bench.report import Report, Row, rate

EVENTS = 1_000  # the agent stream's length: enrolment and 999 heartbeats
LATENCY_CLIENTS = 1  # the latency figure: one request at a time, so queueing on a shared box is not measured


@dataclass
class TimeTravelResult:
    setup_seconds: float
    events: int
    snapshots: int
    floor: Load  # GET /health, one client: the harness's own latency floor in the same run
    past: Load  # GET ?version= / ?asOf= at random points, one client
    past_busy: Load  # the same with every client


async def _history(dsn: str, agent: Agent) -> None:
    """999 past heartbeats, 30 s apart, decided by the real aggregates and saved so a snapshot lands every 20."""
    pool = await create_pool(dsn, Settings(), min_size=1, max_size=2)
    try:
        repo = Repository(EventStore(pool))
        state = await repo.get(MachineAgent, agent.id, what="agent")
        ctx = CommandContext(at=datetime.now(UTC), actor=f"agent:{agent.id}", account_id=state.account_id)
        endpoint: RuntimeEndpoint | None = None
        start = datetime.now(UTC) - timedelta(seconds=30 * EVENTS)
        for k in range(EVENTS - 1):
            at = start + timedelta(seconds=30 * k)
            lease = at + timedelta(seconds=60)
            cmd = UpsertEndpoint(url=agent.url, auth_token=None, metadata={}, source=AGENT, agent_id=agent.id,
                                 lease_expires_at=lease)
            if endpoint is None:
                endpoint = RuntimeEndpoint.open(state.account_id, state.machine_id, agent.provider_key, cmd, at)
            else:
                endpoint.upsert(cmd, at)
            state.record_heartbeat(RecordHeartbeat(provider_keys=[agent.provider_key], lease_expires_at=lease), at)
            if state.version % 20 == 0 or k == EVENTS - 2:
                await repo.save_all([state, endpoint], ctx)
    finally:
        await pool.close()


async def run(dsn: str, requests: int, warmup: int) -> TimeTravelResult:
    await reset(dsn)
    key = await tenant_key(dsn)
    started = time.perf_counter()
    async with serving(dsn, key) as (clients, server):
        auth = {"Authorization": f"Bearer {key}"}
        mid = await _active_machine(clients[0], auth, 0)
        agent = await _enroll(clients[0], auth, [mid], 0)
        await _history(dsn, agent)
        path = f"/v1/machines/{mid}/agents/{agent.id}"
        events = (await clients[0].get(f"/v1/streams/{agent.id}/events", params={"fromVersion": EVENTS})).json()
        if [e["version"] for e in events["data"]] != [EVENTS]:
            raise RuntimeError(f"the agent stream does not hold {EVENTS} events: {events}")
        times = await _recorded_at(dsn, agent.id)
        rng = random.Random(7)
        points = [rng.randint(1, EVENTS) for _ in range(requests)]

        def past(client: httpx.AsyncClient, i: int) -> Awaitable[httpx.Response]:
            v = points[i % len(points)]
            params = {"version": str(v)} if i % 2 else {"asOf": times[v]}
            return client.get(path, params=params)

        def health(client: httpx.AsyncClient, i: int) -> Awaitable[httpx.Response]:
            return client.get("/health")

        await load(clients, warmup, past, server)
        setup = time.perf_counter() - started
        # Every client busy first: while one client runs alone, the others' idle keep-alive connections expire.
        busy = await load(clients, requests, past, server)
        floor = await load(clients[:LATENCY_CLIENTS], requests, health, server)
        one = await load(clients[:LATENCY_CLIENTS], requests, past, server)
    snapshots = await _snapshots(dsn, agent.id)
    return TimeTravelResult(setup, EVENTS, snapshots, floor, one, busy)


async def _recorded_at(dsn: str, stream_id: uuid.UUID) -> dict[int, str]:
    pool = await create_pool(dsn, Settings(), min_size=1, max_size=1)
    try:
        rows = await pool.fetch("SELECT version, recorded_at FROM events WHERE stream_id = $1", stream_id)
    finally:
        await pool.close()
    return {r["version"]: r["recorded_at"].isoformat() for r in rows}


async def _snapshots(dsn: str, stream_id: uuid.UUID) -> int:
    pool = await create_pool(dsn, Settings(), min_size=1, max_size=1)
    try:
        count: int = await pool.fetchval("SELECT count(*) FROM snapshot_history WHERE stream_id = $1", stream_id)
    finally:
        await pool.close()
    return count


def add_rows(report: Report, r: TimeTravelResult, p99_target_ms: float) -> None:
    report.add(Row("timetravel", "GET /health, 1 client: latency p50 / p99 (harness floor)",
                   f"{r.floor.percentile(50):.1f} / {r.floor.percentile(99):.1f} ms"))
    report.add(Row("timetravel", f"GET agent ?version= / ?asOf= of a {r.events:,}-event stream, 1 client",
                   f"{rate(r.past.rate)} req/s"))
    report.add(Row("timetravel", "  latency p50", f"{r.past.percentile(50):.1f} ms"))
    report.check_max("timetravel", "  latency p99, 1 client", r.past.percentile(99), p99_target_ms, ".1f", " ms")
    busy = r.past_busy
    report.add(Row("timetravel", "GET agent ?version= / ?asOf= (busy), 32 clients", f"{rate(busy.rate)} req/s"))
    report.add(Row("timetravel", "  latency p50 / p99", f"{busy.percentile(50):.1f} / {busy.percentile(99):.1f} ms"))
    report.check_max("timetravel", "responses other than 200", r.past.errors + busy.errors, 0, ",d")
    report.notes.append(
        f"timetravel setup (not timed, {r.setup_seconds:.1f} s): one active machine and agent over HTTP, then"
        f" {r.events - 1:,} past heartbeats decided by the aggregates and saved so {r.snapshots} snapshots"
        f" (every 20 versions) are in snapshot_history; timed: random versions 1-{r.events:,}, half as ?version=,"
        f" half as ?asOf=<that version's recordedAt>, all clients (statuses {dict(busy.statuses)}), then one"
        f" client; each loads the machine (the guard) and, side by side, the agent from the nearest snapshot at"
        f" or below the point"
    )

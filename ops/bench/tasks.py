"""Phase `tasks`: auto tasks end to end through `mm api` + `mm projector` + `mm worker` and a stub seller, against
a direct POST to the same stub (the baseline, same run); then discovery over a catalogue of N listings.

An auto task's path: POST /tasks (API) -> relay -> one advance_auto_task message (discover, resolve, request
execution and RunStarted in one append; the call; RunFinished + Succeeded) -> tasks projection -> outcome row
(NOTIFY). "Visible" is that row, read by an OutcomeWaiter as the execute route reads it.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import ExitStack, asynccontextmanager, contextmanager
from dataclasses import dataclass, field

import asyncpg
import httpx
import psutil

from app.container import Container
from app.sealing import new_secret_key
from app.services.task_waiter import OutcomeWaiter
from app.settings import Settings
from ops.bench import tasks_seed
from ops.bench.commands import _caught_up, _process, _wait_healthy_or_404
from ops.bench.db import postmaster, reset, settle, tree_cpu
from ops.bench.heartbeats import _active_machine
from ops.bench.http_api import ROOT, _clients, _free_port, fan_out, tenant_key
from ops.bench.lean_http import LeanClient, lean_clients
from ops.bench.report import Report, Row, rate
from projections.audit_chain import new_signing_key

# Issue 7: auto tasks end to end, 32 at once, at least 150/s and p50 at most 25 ms over a direct call to the same
# stub seller (same run); discovery over a catalogue of 10,000 listings: p99 within 20 ms.
TASKS_RATE, TASKS_ADDED_P50_MS, DISCOVER_P99_MS = 150.0, 25.0, 20.0
CLIENTS = 32
# The load generator's own CPU (this process: the clients and the outcome waiter), on the same 2 cores.
CLIENT_CPU = "bench client (lean_http) + outcome waiter"
WORKER_THREADS = 32  # executions wait on the network: the worker's threads bound how many run at once
ECHO = "bench-echo"


@dataclass
class Timed:
    latencies: list[float] = field(default_factory=list)  # seconds
    seconds: float = 0.0
    statuses: Counter[str] = field(default_factory=Counter)

    @property
    def count(self) -> int:
        return len(self.latencies)

    @property
    def rate(self) -> float:
        return self.count / self.seconds if self.seconds else 0.0

    def p(self, q: float) -> float:
        """Nearest-rank percentile in milliseconds."""
        if not self.latencies:
            return 0.0
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, max(0, int(q / 100 * len(ordered) + 0.5) - 1))] * 1000


@dataclass
class TasksResult:
    direct: Timed
    auto: Timed
    discover: Timed
    listings: int
    sellers: int
    seed_seconds: float
    worker_threads: int
    cpu_ms: dict[str, float] = field(default_factory=dict)  # CPU ms per auto task, by process (timed run)
    direct_one: Timed = field(default_factory=Timed)  # one client at a time: latency without queueing
    auto_one: Timed = field(default_factory=Timed)


@contextmanager
def _stub_seller() -> Iterator[str]:
    """The stub seller in a process of its own (its first line is its URL), so it does not share our GIL."""
    proc = subprocess.Popen([sys.executable, "-m", "app.outbound.stub_seller"], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        yield proc.stdout.readline().strip()
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


@dataclass
class Stack:
    stub: str  # the stub seller's URL
    port: int  # `mm api`'s
    procs: dict[str, psutil.Process]  # whose CPU the phase reports
    c: Container
    waiter: OutcomeWaiter


@asynccontextmanager
async def mm_stack(dsn: str, secret: str, pool_size: int) -> AsyncIterator[Stack]:
    """`mm api` + `mm projector` + `mm worker` as `mm up` runs them (PostgreSQL broker), the stub seller in its own
    process, and a container with an outcome waiter on the same database: what the tasks and market phases drive."""
    env = {**os.environ, "MM_DATABASE_URL": dsn, "MM_BROKER_URL": dsn, "MM_LOG_LEVEL": "WARNING",
           "MM_SECRET_KEY": secret, "MM_ALLOW_PRIVATE_ENDPOINTS": "true", "MM_AUDIT_SIGNING_KEY": new_signing_key()[0]}
    env.pop("MM_ADMIN_TOKEN", None)
    port, mm = _free_port(), [sys.executable, "-m", "app.cli"]
    with ExitStack() as stack:
        stub = stack.enter_context(_stub_seller())
        procs = {"api": stack.enter_context(_process([*mm, "api", "--port", str(port)], env)),
                 "projector": stack.enter_context(_process([*mm, "projector"], env)),
                 "worker": stack.enter_context(_process([*mm, "worker", "--threads", str(WORKER_THREADS)], env))}
        pg = await postmaster(dsn)
        if pg is not None:
            procs["PostgreSQL (all databases)"] = pg
        # Stateless: each release of the bench's own sessions would otherwise cost the server a reset (four
        # statements: 8 per auto task from the outcome waiter's two reads), PostgreSQL CPU that is not the product's.
        c = await Container.open(Settings(secret_key=secret), dsn, stateless_sessions=True, min_size=1,
                                 max_size=pool_size)
        waiter = OutcomeWaiter(c.pool, dsn)
        try:
            yield Stack(stub, port, procs, c, waiter)
        finally:
            await waiter.stop()
            await c.close()


async def _direct(url: str, count: int, clients: int = CLIENTS) -> Timed:
    """The baseline: the same POST (JSON body, Idempotency-Key, bearer) straight to the stub, `clients` at once."""
    out = Timed()
    async with lean_clients(url, {"Authorization": "Bearer t"}, clients) as conns:
        async def call(client: LeanClient, i: int) -> None:
            started = time.perf_counter()
            r = await client.post("/echo", json={"text": f"direct {i}"}, headers={"Idempotency-Key": str(uuid.uuid4())})
            out.latencies.append(time.perf_counter() - started)
            out.statuses[str(r.status_code)] += 1

        started = time.perf_counter()
        await fan_out(conns, count, call)
        out.seconds = time.perf_counter() - started
    return out


async def _auto(clients: Sequence[LeanClient], waiter: OutcomeWaiter, buyer: str, count: int) -> Timed:
    """CLIENTS buyers' requests at once: POST an auto task, then wait until its outcome row exists."""
    out = Timed()

    async def one(client: LeanClient, i: int) -> None:
        started = time.perf_counter()
        r = await client.post(f"/v1/machines/{buyer}/tasks", json={
            "capability": ECHO, "input": {"text": f"task {i}"}, "auto": True,
            "constraints": {"strategy": "cheapest", "timeoutMs": 10_000}})
        if r.status_code != 201:
            out.statuses[f"POST {r.status_code}"] += 1
            return
        row = await waiter.wait(uuid.UUID(r.json()["id"]), 60)
        out.latencies.append(time.perf_counter() - started)
        out.statuses["timeout" if row is None else str(row["status"])] += 1

    started = time.perf_counter()
    await fan_out(clients, count, one)
    out.seconds = time.perf_counter() - started
    return out


async def _discover(client: httpx.AsyncClient, conn: asyncpg.Connection, buyer: str, count: int) -> Timed:
    """POST .../discover on queued tasks for one capability of the seeded catalogue, one at a time, on a settled
    system: the catalogue analyzed and the projections caught up with the creates."""
    # A catalogue that has lived a minute has planner statistics: autovacuum analyzes a table once 10% of it
    # changed. This server runs with autovacuum off, so do what it would (as the catalogue phase does). Without
    # them the planner guesses a few dozen rows per capability and discover's catalogue statement executes in
    # ~5 ms instead of ~1 ms (EXPLAIN ANALYZE, 10,000 listings, 200 per capability).
    await conn.execute("ANALYZE catalogue_listings, catalogue_machines, catalogue_endpoints, seller_stats")
    ids = []
    for i in range(count):
        r = await client.post(f"/v1/machines/{buyer}/tasks", json={
            "capability": tasks_seed.capability(i % 5), "input": {"text": "x"}})
        ids.append(r.json()["id"])
    # The creates' projection (0.3-0.8 s behind when the last create answers) is not discover's latency.
    await _caught_up(conn)
    return (await discover_each(client, buyer, ids))[0]


async def discover_each(client: httpx.AsyncClient, buyer: str, ids: list[str]) -> tuple[Timed, int]:
    """POST .../discover on each task in turn, timed; with the response bytes received in all."""
    out, size = Timed(), 0
    started = time.perf_counter()
    for task_id in ids:
        t0 = time.perf_counter()
        r = await client.post(f"/v1/machines/{buyer}/tasks/{task_id}/discover")
        out.latencies.append(time.perf_counter() - t0)
        out.statuses[str(r.status_code)] += 1
        size += len(r.content)
    out.seconds = time.perf_counter() - started
    return out, size


async def _listed(client: httpx.AsyncClient, capability: str, at_least: int, within: float = 300.0) -> None:
    deadline = time.monotonic() + within
    while True:
        r = await client.get("/v1/catalogue", params={"capability": capability, "limit": 100})
        if r.status_code == 200 and len(r.json()["data"]) >= at_least:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{capability}: fewer than {at_least} listings in the catalogue after {within:.0f} s")
        await asyncio.sleep(0.2)


async def run(dsn: str, tasks: int, warmup: int, listings: int, discovers: int) -> TasksResult:
    await reset(dsn)
    key = await tenant_key(dsn)
    async with mm_stack(dsn, new_secret_key(), tasks_seed.CONCURRENCY + 2) as st:
        stub, port, procs, c, waiter = st.stub, st.port, st.procs, st.c, st.waiter
        seeded = time.perf_counter()
        sellers = await tasks_seed.catalogue(c, uuid.uuid4(), f"{stub}/echo", listings)
        await tasks_seed.seller(c, uuid.uuid4(), "bench-echo-seller", f"{stub}/echo", [(ECHO, 10)])
        async with _clients(port, key, CLIENTS) as clients, \
                lean_clients(f"http://127.0.0.1:{port}", {"Authorization": f"Bearer {key}"}, CLIENTS) as load:
            await _wait_healthy_or_404(clients[0])
            await _listed(clients[0], tasks_seed.capability(0), min(100, listings // tasks_seed.CAPABILITIES))
            await _listed(clients[0], ECHO, 1)
            seed_seconds = time.perf_counter() - seeded
            buyer = await _active_machine(clients[0], dict(clients[0].headers), 0)
            await _direct(stub, warmup)
            direct = await _direct(stub, tasks)
            await _auto(load, waiter, buyer, warmup)
            async with c.pool.acquire() as conn:
                await settle(conn, analyze=True)
            before, own = {name: tree_cpu(p) for name, p in procs.items()}, time.process_time()
            auto = await _auto(load, waiter, buyer, tasks)
            cpu_ms = {name: (tree_cpu(p) - before[name]) / tasks * 1000 for name, p in procs.items()}
            cpu_ms[CLIENT_CPU] = (time.process_time() - own) / tasks * 1000
            # The pipeline's own latency, without queueing behind 31 other tasks: one at a time.
            direct_one = await _direct(stub, tasks // 10, clients=1)
            auto_one = await _auto(load[:1], waiter, buyer, tasks // 10)
            async with c.pool.acquire() as conn:
                discover = await _discover(clients[0], conn, buyer, discovers)
    return TasksResult(direct, auto, discover, listings, sellers, seed_seconds, WORKER_THREADS, cpu_ms,
                       direct_one, auto_one)


def add_rows(report: Report, r: TasksResult, count: int, warmup: int) -> None:
    c = CLIENTS
    report.add(Row("tasks", f"direct POST to the stub seller, {c} at once (baseline)", f"{rate(r.direct.rate)} req/s"))
    report.add(Row("tasks", "  latency p50 / p99", f"{r.direct.p(50):.1f} / {r.direct.p(99):.1f} ms"))
    report.check("tasks", f"auto tasks end to end (POST -> outcome visible), {c} at once", r.auto.rate, TASKS_RATE,
                 ",.0f", " tasks/s")
    report.add(Row("tasks", "  latency p50 / p99", f"{r.auto.p(50):.1f} / {r.auto.p(99):.1f} ms"))
    report.check_max("tasks", "  p50 added over the direct call (same run)", r.auto.p(50) - r.direct.p(50),
                     TASKS_ADDED_P50_MS, ".1f", " ms")
    # Both sides above are closed loops of c clients, so each one's mean latency is c / its own rate (Little's
    # law): their difference measures the rates, and at the rate target alone it cannot fall below this.
    report.add(Row("tasks", f"  mean latency {c} closed-loop clients cannot beat (Little's law: {c} / rate)",
                   f"{c / r.auto.rate * 1000 if r.auto.rate else 0:.1f} ms (at {TASKS_RATE:.0f}/s:"
                   f" {c / TASKS_RATE * 1000:.0f} ms)"))
    one = r.auto_one.p(50) - r.direct_one.p(50)
    report.add(Row("tasks", f"  1 client: p50 added over the direct call ({r.auto_one.count} tasks)",
                   f"{one:.1f} ms ({r.auto_one.p(50):.1f} - {r.direct_one.p(50):.1f})"))
    succeeded = r.auto.statuses.get("succeeded", 0)
    report.add(Row("tasks", "  outcomes succeeded", f"{succeeded:,} / {count:,}", f"{count:,}",
                   "PASS" if succeeded == count else "FAIL"))
    report.add(Row("tasks", f"POST .../discover over {r.listings:,} listings, 1 client: p50",
                   f"{r.discover.p(50):.1f} ms"))
    report.check_max("tasks", "  p99", r.discover.p(99), DISCOVER_P99_MS, ".1f", " ms")
    report.notes.append(
        f"tasks: `mm api` + `mm projector` + `mm worker --threads {r.worker_threads}` (PostgreSQL broker) and the stub"
        f" seller in its own process; auto-task statuses {dict(r.auto.statuses)}, direct {dict(r.direct.statuses)};"
        f" {warmup} warm-up calls of each first; catalogue seeded through the services ({r.sellers:,} sellers x"
        f" {tasks_seed.NODES_PER_SELLER} capability nodes over {tasks_seed.CAPABILITIES} names, {r.seed_seconds:.1f} s"
        f" incl. projection); discover: {r.discover.count} tasks of 5 capabilities"
        f" (~{r.listings // tasks_seed.CAPABILITIES} listings each, up to 100 screened against their inputSchema;"
        " catalogue analyzed, timed once the projections caught up with the creates),"
        f" statuses {dict(r.discover.statuses)}; CPU per auto task: "
        + ", ".join(f"{name} {ms:.1f} ms" for name, ms in r.cpu_ms.items())
    )

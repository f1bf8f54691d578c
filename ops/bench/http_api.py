"""Phase 2: POST /v1/machines and GET /v1/machines/{id} against the real app in a uvicorn subprocess."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TypeVar

import httpx
import psutil

from app.db import create_pool
from app.sealing import new_secret_key
from app.services.accounts import AccountsService
from app.settings import Settings
from app.store.event_store import EventStore
from app.store.repository import Repository
from app.store.types import LogPosition
from domain.shared.context import CommandContext
from projections import checkpoints
from projections.registry import by_name, read_models
from projections.runner import ProjectionRunner

CLIENTS = 32
T = TypeVar("T")
W = TypeVar("W")
ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Load:
    requests: int
    seconds: float
    latencies: list[float]
    statuses: Counter[int]
    server_cpu: float  # CPU seconds the API process used during the run
    ids: list[str] = field(default_factory=list)
    failures: Counter[str] = field(default_factory=Counter)  # transport errors (status 0) by exception type

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def percentile(self, p: float) -> float:
        """Nearest-rank percentile of the latencies, in milliseconds."""
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        rank = max(1, min(len(ordered), round(p / 100 * len(ordered) + 0.5)))
        return ordered[rank - 1] * 1000

    @property
    def errors(self) -> int:
        return sum(n for status, n in self.statuses.items() if status >= 400 or status == 0)


@dataclass
class HttpResult:
    post: Load
    get: Load
    health: Load  # GET /health: what this client and uvicorn manage with no database work at all


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _tail(fh: IO[str], lines: int = 20) -> str:
    fh.flush()
    fh.seek(0)
    return "\n".join(fh.read().splitlines()[-lines:])


@contextmanager
def api_process(dsn: str, port: int) -> Iterator[subprocess.Popen[bytes]]:
    """Start the API subprocess; always stop it (SIGTERM, then SIGKILL after 10 s) by its own handle."""
    # A throw-away key: the heartbeats phase stores endpoint tokens, which the API seals at rest.
    env = {**os.environ, "MM_DATABASE_URL": dsn, "MM_LOG_LEVEL": "WARNING", "MM_SECRET_KEY": new_secret_key()}
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "ops.bench.server", "--port", str(port)],
            cwd=ROOT, env=env, stdout=log, stderr=log,
        )
        try:
            yield proc
        except BaseException as exc:
            if proc.poll() is not None:
                raise RuntimeError(f"API process exited with {proc.returncode}:\n{_tail(log)}") from exc
            raise
        finally:
            stop_process(proc)


async def _wait_healthy(client: httpx.AsyncClient, proc: subprocess.Popen[bytes], within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"API process exited with {proc.returncode} before it became healthy")
        with contextlib.suppress(httpx.TransportError):
            if (await client.get("/health")).status_code == 200:
                return
        await asyncio.sleep(0.1)
    raise TimeoutError(f"API not healthy after {within:.0f} s")


@asynccontextmanager
async def _runner(dsn: str) -> AsyncIterator[tuple[ProjectionRunner, AccountsService]]:
    pool = await create_pool(dsn, Settings(), min_size=1, max_size=4)
    try:
        store = EventStore(pool)
        yield ProjectionRunner(pool, store, read_models()), AccountsService(Repository(store))
    finally:
        await pool.close()


async def tenant_key(dsn: str) -> str:
    """Bootstrap an admin key, open one tenant account, and project both so the keys authenticate."""
    async with _runner(dsn) as (runner, accounts):
        ctx = CommandContext(at=datetime.now(UTC), actor="system:bench")
        await accounts.bootstrap_admin(ctx, "mm_bench_admin_" + uuid.uuid4().hex)
        admin_ctx = CommandContext(at=datetime.now(UTC), actor="system:bench", is_admin=True)
        _, issued = await accounts.open(admin_ctx, "bench-tenant", is_admin=False)
        await _project(runner, "accounts", issued.position)
        return issued.key


async def _project(runner: ProjectionRunner, name: str, until: LogPosition | None, within: float = 30.0) -> None:
    """Catch `name` up until it has applied `until`. One pass can stop short: readers see only events older than
    every transaction still open on the server, including other databases' (a shared test server has many)."""
    projection = by_name(runner.projections)[name]
    deadline = time.monotonic() + within
    while True:
        await runner.catch_up(projection)
        async with runner.pool.acquire() as conn:
            reached = await checkpoints.position(conn, name)
        if until is None or (reached is not None and reached >= until):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"projection {name} did not reach {until} within {within:.0f} s (at {reached})")
        await asyncio.sleep(0.05)


async def _catch_up_machines(dsn: str) -> None:
    async with _runner(dsn) as (runner, _):
        await runner.catch_up(by_name(runner.projections)["machines"])


async def fan_out(workers: Sequence[W], count: int, job: Callable[[W, int], Awaitable[T]]) -> list[T]:
    """One task per worker (a client, a connection...) takes the next of `count` jobs until none is left;
    returns the results in job order."""
    results: dict[int, T] = {}
    issued = iter(range(count))

    async def worker(w: W) -> None:
        for i in issued:
            results[i] = await job(w, i)

    await asyncio.gather(*(worker(w) for w in workers))
    return [results[i] for i in range(count)]


async def load(
    clients: list[httpx.AsyncClient], count: int, call: Callable[[httpx.AsyncClient, int], Awaitable[httpx.Response]],
    proc: psutil.Process, keep_ids: bool = False,
) -> Load:
    """The clients share a fixed budget of `count` requests; every request is timed."""
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    ids: list[str] = []
    failures: Counter[str] = Counter()

    async def timed(client: httpx.AsyncClient, i: int) -> None:
        started = time.perf_counter()
        try:
            response = await call(client, i)
        except httpx.HTTPError as exc:
            statuses[0] += 1
            failures[type(exc).__name__] += 1
            return
        latencies.append(time.perf_counter() - started)
        statuses[response.status_code] += 1
        if keep_ids and response.status_code == 201:
            ids.append(response.json()["id"])

    cpu_before = sum(proc.cpu_times()[:2])
    started = time.perf_counter()
    await fan_out(clients, count, timed)
    elapsed = time.perf_counter() - started
    return Load(count, elapsed, latencies, statuses, sum(proc.cpu_times()[:2]) - cpu_before, ids, failures)


def machine_body(i: int) -> dict[str, object]:
    return {
        "name": f"bench-machine-{i}",
        "description": "GPU worker in rack 7, 2x A100, spot pricing",
        "publicKey": base64.b64encode(os.urandom(32)).decode(),
        "labels": {"region": "eu-west", "gpu": "a100", "tier": "spot"},
    }


@asynccontextmanager
async def _clients(port: int, key: str | None, n: int) -> AsyncIterator[list[httpx.AsyncClient]]:
    """n keep-alive clients of one connection each: one shared 32-connection httpx pool is itself the
    bottleneck (measured here: ~440 req/s against a trivial ASGI app, vs ~1,950 req/s for 32 one-connection clients)."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with contextlib.AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{port}", timeout=30.0, headers=headers,
                limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
            ))
            for _ in range(n)
        ]
        yield clients


@asynccontextmanager
async def serving(
    dsn: str, key: str | None, concurrency: int = CLIENTS
) -> AsyncIterator[tuple[list[httpx.AsyncClient], psutil.Process]]:
    """The API process on a free loopback port, once healthy, with `concurrency` clients (Bearer `key` if given)."""
    port = _free_port()
    with api_process(dsn, port) as proc:
        async with _clients(port, key, concurrency) as clients:
            await _wait_healthy(clients[0], proc)
            yield clients, psutil.Process(proc.pid)


def _health(client: httpx.AsyncClient, _: int) -> Awaitable[httpx.Response]:
    return client.get("/health")


async def ceiling(clients: list[httpx.AsyncClient], server: psutil.Process, requests: int, warmup: int) -> Load:
    """GET /health after a warm-up: the rate of this client and uvicorn with no database work at all."""
    await load(clients, warmup, _health, server)
    return await load(clients, requests, _health, server)


async def run(dsn: str, requests: int, warmup: int, concurrency: int = CLIENTS) -> HttpResult:
    key = await tenant_key(dsn)
    async with serving(dsn, key, concurrency) as (clients, server):

        def post(client: httpx.AsyncClient, i: int) -> Awaitable[httpx.Response]:
            return client.post("/v1/machines", json=machine_body(i))

        health = await ceiling(clients, server, requests, warmup)
        await load(clients, warmup, post, server)
        posted = await load(clients, requests, post, server, keep_ids=True)
        if not posted.ids:
            raise RuntimeError(f"no machine was registered; statuses {dict(posted.statuses)}")
        await _catch_up_machines(dsn)
        ids = posted.ids

        def get(client: httpx.AsyncClient, i: int) -> Awaitable[httpx.Response]:
            return client.get(f"/v1/machines/{ids[i % len(ids)]}")

        await load(clients, warmup, get, server)
        got = await load(clients, requests, get, server)
    return HttpResult(post=posted, get=got, health=health)


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL after 10 s: no bench process outlives its phase."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)

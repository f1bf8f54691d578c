"""Phase `export`: the audit feed exported over HTTP against a raw server-side cursor, and the SSE fan-out."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx
import msgspec
import psutil

from app.db import create_pool
from app.sealing import new_secret_key
from app.services.accounts import bootstrap_admin_key
from app.settings import Settings
from app.store.event_store import EventStore
from app.store.notifier import Notifier
from app.store.types import LogPosition, NewEvent
from ops.bench.db import reset, settle
from ops.bench.http_api import ROOT, _free_port, stop_process
from projections import checkpoints
from projections.audit_chain import new_signing_key, public_key_of
from projections.registry import audit_projection, projection_names
from projections.runner import ProjectionRunner

ACCOUNTS = 50
CHUNK = 1_000


@dataclass
class Rate:
    rows: int
    seconds: float
    peak_rss_growth_mib: float = 0.0

    @property
    def rate(self) -> float:
        return self.rows / self.seconds if self.seconds else 0.0


@dataclass
class ExportResult:
    rows: int
    project: Rate
    baseline: Rate
    formats: dict[str, Rate] = field(default_factory=dict)
    small_growth_mib: float = 0.0  # the same export of a tenth of the rows: flat memory means about the same
    sse: SseResult | None = None


@dataclass
class SseResult:
    subscribers: int
    target_rate: float
    sent: int
    seconds: float
    lags_ms: list[tuple[int, int]]  # (lag in ms, records given it), see ops/bench/sse_client.py
    received_events: int
    resumes: int = 0  # final `resume` events: a subscriber that fell behind
    api_cpu: float = 0.0  # the API process's CPU over the appending, as a share of one core
    client_cpu_s: float = 0.0  # the subscribers' process, connecting and draining included
    # The audit projection's own lag (wall clock minus the newest row's occurredAt), sampled every 200 ms while
    # appending: the part of the delivery lag that is upstream of the API's tail.
    projector_lags_ms: list[float] = field(default_factory=list)

    def projector_p(self, q: float) -> float:
        ordered = sorted(self.projector_lags_ms)
        return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))] if ordered else float("nan")

    @property
    def measured(self) -> int:
        return sum(n for _, n in self.lags_ms)

    def p(self, q: float) -> float:
        """The q-th percentile over records (each weighted by how many records carried that lag)."""
        rank, seen = q / 100 * self.measured, 0
        for lag, n in self.lags_ms:
            seen += n
            if seen >= rank:
                return float(lag)
        return float("nan")


def _event(account: str, machine: uuid.UUID, version: int, at: datetime, i: int) -> NewEvent:
    return NewEvent(event_id=uuid.uuid4(), stream_id=machine, stream_type="machines:Machine", version=version,
                    type="machines:Machine.ProfileRevised",
                    data={"timestamp": at.isoformat(), "name": f"machine-{i}", "labels": {"team": "bench", "n": i},
                          "description": "a machine in the export benchmark"},
                    metadata={"ownerAccountId": account, "actor": f"api-key:{uuid.uuid4()}",
                              "requestId": f"req-{i}", "correlationId": f"corr-{i}"})


async def _load(store: EventStore, rows: int) -> None:
    accounts = [str(uuid.uuid4()) for _ in range(ACCOUNTS)]
    at = datetime(2026, 1, 1, tzinfo=UTC)
    for start in range(0, rows, CHUNK):
        machine = uuid.uuid4()
        account = accounts[(start // CHUNK) % ACCOUNTS]
        await store.append([_event(account, machine, v + 1, at + timedelta(milliseconds=start + v), start + v)
                            for v in range(min(CHUNK, rows - start))])


async def _project(pool: asyncpg.Pool, store: EventStore, settings: Settings) -> Rate:
    runner = ProjectionRunner(pool, store, [audit_projection(settings)], batch_size=500)
    target = await pool.fetchrow("SELECT tx_id::text::bigint AS t, position AS p FROM events"
                                 " ORDER BY tx_id DESC, position DESC LIMIT 1")
    started, applied = time.perf_counter(), 0
    while True:  # another database's open transaction may hold the horizon back: pass again
        applied += await runner.catch_up(runner.projections[0])
        at = await pool.fetchrow("SELECT tx_id, position FROM projection_checkpoints WHERE name = 'audit'")
        if at is not None and LogPosition(at["tx_id"], at["position"]) >= LogPosition(target["t"], target["p"]):
            return Rate(applied, time.perf_counter() - started)
        await asyncio.sleep(0.05)


async def _log_end(pool: asyncpg.Pool) -> LogPosition:
    end = await pool.fetchrow("SELECT tx_id::text::bigint AS t, position AS p FROM events"
                              " ORDER BY tx_id DESC, position DESC LIMIT 1")
    return LogPosition(end["t"], end["p"])


async def _read_models_at_end(pool: asyncpg.Pool) -> None:
    """Every projection but the audit one (projected above) starts at the log's end: the SSE window measures
    the projector following the live log. Otherwise the `mm projector` started for it spends its first ~95 CPU
    seconds (measured) catching up a dozen read models and the relay over the loaded rows, none of which the feed
    shows, and the audit projection's batches queue behind theirs for the whole window."""
    end = await _log_end(pool)
    async with pool.acquire() as conn:
        for name in projection_names():
            if name != "audit":
                await checkpoints.ensure(conn, name)
                await checkpoints.reset(conn, name, end, 0)


async def _audit_following(pool: asyncpg.Pool, timeout_s: float = 120.0) -> None:
    """Wait until the projector's audit projection has reached the log's end. The admin key registered above
    came after the in-process projection: projected once the subscribers were connected, its record (stamped
    then, a minute or more before) counted as the delivery lag of every record read with it."""
    end = await _log_end(pool)
    deadline = time.perf_counter() + timeout_s
    while (at := await pool.fetchrow("SELECT tx_id::text::bigint AS t, position AS p FROM projection_checkpoints"
                                     " WHERE name = 'audit'")) is None or LogPosition(at["t"], at["p"]) < end:
        if time.perf_counter() > deadline:
            raise TimeoutError("the projector's audit projection did not reach the log's end")
        await asyncio.sleep(0.05)


async def _baseline(dsn: str) -> Rate:
    """The same rows, columns and order through one asyncpg server-side cursor, JSON decoded: the floor."""
    conn = await asyncpg.connect(dsn)
    try:
        started, n = time.perf_counter(), 0
        async with conn.transaction():
            async for r in conn.cursor(
                "SELECT id, tx_id, position, type, occurred_at, actor, account_id, machine_id, subject,"
                " data::text AS data, request_id, correlation_id, causation_id, seq, prev_hash, hash"
                " FROM audit_events ORDER BY tx_id, position", prefetch=5_000,
            ):
                msgspec.json.decode(r["data"])
                n += 1
        return Rate(n, time.perf_counter() - started)
    finally:
        await conn.close()


async def _rss_sampler(proc: psutil.Process, peak: list[int], stop: asyncio.Event) -> None:
    while not stop.is_set():
        with contextlib.suppress(psutil.Error):
            peak[0] = max(peak[0], proc.memory_info().rss)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.02)


async def _download(base: str, key: str, proc: psutil.Process, fmt: str, **params: str) -> Rate:
    before = proc.memory_info().rss
    peak, stop = [before], asyncio.Event()
    sampler = asyncio.create_task(_rss_sampler(proc, peak, stop))
    lines = 0
    async with httpx.AsyncClient(timeout=httpx.Timeout(60.0)) as client:
        started = time.perf_counter()
        async with client.stream("GET", base + "/v1/audit-events/export", params={"format": fmt, **params},
                                 headers={"Authorization": f"Bearer {key}"}) as r:
            r.raise_for_status()
            async for chunk in r.aiter_raw():
                lines += chunk.count(b"\n")
        seconds = time.perf_counter() - started
    stop.set()
    await sampler
    return Rate(lines, seconds, (peak[0] - before) / 2**20)


@contextmanager
def _mm(command: str, env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen([sys.executable, "-m", "app.cli", command], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield proc
    finally:
        stop_process(proc)


async def _healthy(base: str, proc: subprocess.Popen[bytes]) -> None:
    async with httpx.AsyncClient() as client:
        for _ in range(300):
            if proc.poll() is not None:
                raise RuntimeError(f"mm api exited with {proc.returncode}")
            with contextlib.suppress(httpx.TransportError):
                if (await client.get(base + "/health")).status_code == 200:
                    return
            await asyncio.sleep(0.1)
    raise TimeoutError("mm api did not become healthy")


async def run(dsn: str, rows: int, subscribers: int, sse_rate: float, sse_seconds: float) -> ExportResult:
    await reset(dsn)
    signing, _ = new_signing_key()
    settings = Settings(audit_signing_key=signing)
    pool = await create_pool(dsn, settings, min_size=1, max_size=8)
    try:
        store = EventStore(pool)
        await _load(store, rows)
        project = await _project(pool, store, settings)
        key = "mm_bench_admin_" + uuid.uuid4().hex
        await bootstrap_admin_key(dsn, key, "system:bench")
        async with pool.acquire() as conn:
            await settle(conn)
        baseline = await _baseline(dsn)
        port = _free_port()
        env = {**os.environ, "MM_DATABASE_URL": dsn, "MM_LOG_LEVEL": "WARNING", "MM_PORT": str(port),
               "MM_SECRET_KEY": new_secret_key(), "MM_AUDIT_PUBLIC_KEY": public_key_of(signing),
               "MM_AUDIT_SIGNING_KEY": ""}
        env.pop("MM_ADMIN_TOKEN", None)
        base = f"http://127.0.0.1:{port}"
        with _mm("api", env) as api:
            await _healthy(base, api)
            proc = psutil.Process(api.pid)
            await _download(base, key, proc, "ndjson", type="no.such-type")  # warm-up
            small = await _download(base, key, proc, "ndjson", until="2026-01-01T00:00:20Z")
            result = ExportResult(rows, project, baseline, small_growth_mib=small.peak_rss_growth_mib)
            for fmt in ("ndjson", "csv", "cloudevents"):
                result.formats[fmt] = await _download(base, key, proc, fmt)
            if subscribers:
                # Appends NOTIFY as the API's do (coalesced, outside the transaction): the projector and the
                # API's audit tail wake on it.
                await _read_models_at_end(pool)
                notifier = Notifier(pool)
                notifier.start()
                try:
                    with _mm("projector", {**env, "MM_AUDIT_SIGNING_KEY": signing}):
                        await _audit_following(pool)
                        result.sse = await _sse(base, key, EventStore(pool, notifier), subscribers, sse_rate,
                                                sse_seconds, proc)
                finally:
                    await notifier.stop()
        return result
    finally:
        await pool.close()


async def _sse(base: str, key: str, store: EventStore, subscribers: int, rate_: float, seconds: float,
               api: psutil.Process) -> SseResult:
    """The subscribers run in a process of their own (ops/bench/sse_client.py), so this one only appends."""
    port = base.rsplit(":", 1)[1]
    client = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ops.bench.sse_client", "--port", port, "--subscribers", str(subscribers),
        cwd=ROOT, env={**os.environ, "MM_BENCH_KEY": key}, stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, limit=2**24)
    assert client.stdin is not None and client.stdout is not None
    try:
        ready = await asyncio.wait_for(client.stdout.readline(), 20)
        if ready.strip() != b"ready":
            raise RuntimeError(f"SSE client did not start: {ready!r}")
        await asyncio.sleep(1.0)
        # One append every 10 ms carrying rate/100 events, each stamped (occurredAt) just before its append.
        per_tick, tick = max(1, round(rate_ / 100)), 0.01
        account, machine, version, sent = str(uuid.uuid4()), uuid.uuid4(), 0, 0
        cpu_before = api.cpu_times()
        projector_lags: list[float] = []
        sampler = asyncio.create_task(_projector_lag(store.pool, projector_lags))
        started = time.perf_counter()
        while time.perf_counter() - started < seconds:
            events = []
            for _ in range(per_tick):
                version += 1
                events.append(_event(account, machine, version, datetime.now(UTC), version))
            await store.append(events)
            sent += per_tick
            await asyncio.sleep(max(0.0, started + sent / (per_tick / tick) - time.perf_counter()))
        elapsed = time.perf_counter() - started
        cpu_after = api.cpu_times()
        sampler.cancel()
        await asyncio.sleep(2.0)  # the last ones arrive
        client.stdin.write(b"stop\n")
        await client.stdin.drain()
        out = msgspec.json.decode(await asyncio.wait_for(client.stdout.readline(), 60))
    finally:
        if client.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                client.kill()
        await client.wait()
    cpu = (cpu_after.user + cpu_after.system - cpu_before.user - cpu_before.system) / elapsed
    return SseResult(subscribers, rate_, sent, elapsed, [(int(a), int(b)) for a, b in out["lags"]], out["events"],
                     out["resumes"], cpu, out["cpu_s"], projector_lags)


async def _projector_lag(pool: asyncpg.Pool, into: list[float]) -> None:
    """Samples from the first appended record on (before it, the newest row is the loaded feed's)."""
    since = datetime.now(UTC)
    while True:
        await asyncio.sleep(0.2)
        newest = await pool.fetchval("SELECT occurred_at FROM audit_events ORDER BY tx_id DESC, position DESC LIMIT 1")
        if newest >= since:
            into.append((datetime.now(UTC) - newest).total_seconds() * 1000)

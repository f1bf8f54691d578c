"""Phase `commands`: the command path against the thinnest endpoint, with the projector and worker running.

Bare Litestar + one asyncpg INSERT vs `POST /v1/machines` and the heartbeat under `mm api` + `mm projector` +
`mm worker` (as `mm up` runs them), same database, uvicorn flags and wrk load, in alternating rounds.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import IO

import asyncpg
import httpx
import msgspec
import psutil

from app.sealing import new_secret_key
from ops.bench import bare, wrk
from ops.bench.db import postmaster, reset, settle
from ops.bench.heartbeats import HEARTBEAT, _active_machine, _enroll
from ops.bench.http_api import ROOT, _clients, _free_port, fan_out, machine_body, stop_process, tenant_key
from projections.audit_chain import new_signing_key

CONNECTIONS = 32
_LAG_SQL = """
SELECT c.name, COALESCE(EXTRACT(EPOCH FROM clock_timestamp() - (
    SELECT e.recorded_at FROM events e WHERE (e.tx_id, e.position) > (c.tx_id, c.position)
    ORDER BY e.tx_id, e.position LIMIT 1)), 0)::float8 AS lag
FROM projection_checkpoints c
"""
_BEHIND_SQL = """
SELECT count(*) FILTER (WHERE EXISTS (SELECT 1 FROM events e WHERE (e.tx_id, e.position) > (c.tx_id, c.position)))
FROM projection_checkpoints c
"""
LAG_SAMPLE_S = 0.05


@dataclass
class Side:
    """Every round of one endpoint."""

    runs: list[wrk.WrkRun] = field(default_factory=list)
    events: int = 0  # events appended during its rounds
    projector_cpu: float = 0.0  # projector CPU seconds from each round's start until it had caught up
    lags: dict[str, list[float]] = field(default_factory=dict)  # lag samples (s) by projection
    lag_samples: list[float] = field(default_factory=list)  # each sample's worst projection (s), its rounds only

    def median(self, attr: str) -> float:
        return statistics.median(getattr(r, attr) for r in self.runs) if self.runs else 0.0

    @property
    def requests(self) -> int:
        return sum(r.requests for r in self.runs)

    def cpu_ms(self, proc: str) -> float:
        """CPU milliseconds of `proc` per request over every round."""
        return sum(r.cpu.get(proc, 0.0) for r in self.runs) / self.requests * 1000 if self.requests else 0.0

    @property
    def errors(self) -> int:
        return sum(r.non_2xx + r.socket_errors for r in self.runs)


@dataclass
class CommandsResult:
    generator: str
    bare: Side
    post: Side
    beat: Side
    catchup_events: int
    catchup_cpu: float
    lag_samples: list[float]
    agents: int
    rounds: int
    seconds: float

    @property
    def ratio(self) -> float:
        return self.post.median("rate") / self.bare.median("rate") if self.bare.runs else 0.0

    @property
    def live_cpu_per_event(self) -> float:
        events = self.post.events + self.beat.events
        return (self.post.projector_cpu + self.beat.projector_cpu) / events if events else 0.0

    @property
    def catchup_cpu_per_event(self) -> float:
        return self.catchup_cpu / self.catchup_events if self.catchup_events else 0.0

    def lag_p99_ms(self) -> float:
        return p99_ms(self.lag_samples)

    def lag_by_projection(self) -> dict[str, float]:
        """p99 lag (ms) of each projection over the live rounds of both commands."""
        names = {*self.post.lags, *self.beat.lags}
        return {n: p99_ms(self.post.lags.get(n, []) + self.beat.lags.get(n, [])) for n in sorted(names)}


def p99_ms(samples: list[float]) -> float:
    if not samples:
        return 0.0
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] * 1000


_LOGS: dict[str, IO[str]] = {}  # each child's output, shown when the phase fails


def _log_tails() -> str:
    out = []
    for name, log in _LOGS.items():
        log.flush()
        log.seek(0)
        tail = log.read()[-1500:]
        if tail.strip():
            out.append(f"--- {name} log (tail) ---\n{tail}")
    return "\n".join(out)


@contextmanager
def _process(argv: list[str], env: dict[str, str]) -> Iterator[psutil.Process]:
    """A child process stopped by its own handle (SIGTERM, then SIGKILL after 10 s), its log shown if it died."""
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=log)
        _LOGS[" ".join(argv[2:4])] = log
        try:
            yield psutil.Process(proc.pid)
            if proc.poll() is not None:
                raise RuntimeError(f"{argv[2:]} exited {proc.returncode}")
        except BaseException as exc:
            exc.add_note(_log_tails())
            raise
        finally:
            _LOGS.pop(" ".join(argv[2:4]), None)
            stop_process(proc)


async def _head(conn: asyncpg.Connection) -> int:
    return int(await conn.fetchval("SELECT COALESCE(max(position), 0) FROM events"))


async def _caught_up(conn: asyncpg.Connection, within: float = 120.0) -> None:
    deadline = time.monotonic() + within
    while await conn.fetchval(_BEHIND_SQL):
        if time.monotonic() > deadline:
            behind = await conn.fetch("SELECT name, position FROM projection_checkpoints ORDER BY name")
            raise TimeoutError(f"projections still behind after {within:.0f} s: head {await _head(conn)},"
                               f" checkpoints {[(r['name'], r['position']) for r in behind]}")
        await asyncio.sleep(0.01)


async def _sample_lag(dsn: str, samples: list[float], by_projection: dict[str, list[float]],
                      stop: asyncio.Event) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        while not stop.is_set():
            rows = await conn.fetch(_LAG_SQL)
            samples.append(max((float(r["lag"]) for r in rows), default=0.0))
            for r in rows:
                by_projection.setdefault(r["name"], []).append(float(r["lag"]))
            await asyncio.sleep(LAG_SAMPLE_S)
    finally:
        await conn.close()


async def _live_round(dsn: str, conn: asyncpg.Connection, side: Side, gen: str, url: str, script: str,
                      seconds: float, watched: dict[str, psutil.Process], lags: list[float]) -> None:
    """One wrk run with the projector following live; its CPU counts until it has applied the round's events."""
    projector = watched["projector"]
    head, cpu = await _head(conn), wrk.tree_cpu(projector)
    stop = asyncio.Event()
    mine: list[float] = []
    sampler = asyncio.create_task(_sample_lag(dsn, mine, side.lags, stop))
    try:
        run = await asyncio.to_thread(wrk.run_wrk, gen, url, script, CONNECTIONS, seconds, watched)
    finally:
        stop.set()
        await sampler
        lags += mine
        side.lag_samples += mine
    await _caught_up(conn)
    side.runs.append(run)
    side.events += await _head(conn) - head
    side.projector_cpu += wrk.tree_cpu(projector) - cpu


async def _beat_bodies(port: int, key: str, machines: int, agents: int) -> list[bytes]:
    auth = {"Authorization": f"Bearer {key}"}
    async with _clients(port, None, 8) as clients:
        mids = await fan_out(clients, machines, lambda c, i: _active_machine(c, auth, i))
        enrolled = await fan_out(clients, agents, lambda c, i: _enroll(c, auth, mids, i))
    return [msgspec.json.encode({"agentToken": a.token, "endpoints": [a.endpoint()]}) for a in enrolled]


async def run(dsn: str, seconds: float, rounds: int, machines: int, agents: int) -> CommandsResult:
    await reset(dsn)
    gen, generator = await asyncio.to_thread(wrk.find_wrk)
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(bare.CREATE)
        key = await tenant_key(dsn)
        env = {**os.environ, "MM_DATABASE_URL": dsn, "MM_BROKER_URL": dsn, "MM_LOG_LEVEL": "WARNING",
               "MM_SECRET_KEY": new_secret_key(), "MM_AUDIT_SIGNING_KEY": new_signing_key()[0]}
        env.pop("MM_ADMIN_TOKEN", None)
        bare_port, api_port = _free_port(), _free_port()
        mm = [sys.executable, "-m", "app.cli"]
        post_bodies = [msgspec.json.encode(machine_body(i)) for i in range(64)]
        post_script = wrk.post_script({"Authorization": f"Bearer {key}"}, post_bodies)
        with ExitStack() as stack:
            bare_proc = stack.enter_context(_process([sys.executable, "-m", "ops.bench.bare", "--port",
                                                      str(bare_port)], env))
            api = stack.enter_context(_process([*mm, "api", "--port", str(api_port)], env))
            projector = stack.enter_context(_process([*mm, "projector"], env))
            worker = stack.enter_context(_process([*mm, "worker"], env))
            # PostgreSQL's CPU, when it runs here: the postmaster and its processes (the pools' sessions live on).
            server = await postmaster(dsn)
            pg = {"postgres": server} if server is not None else {}
            live = {"api": api, "projector": projector, "worker": worker, **pg}
            for port in (bare_port, api_port):
                async with _clients(port, None, 1) as (client,):
                    await _wait_healthy_or_404(client)
            beat_script = wrk.post_script({}, await _beat_bodies(api_port, key, machines, agents))
            await _caught_up(conn)
            bare_url, api_url = f"http://127.0.0.1:{bare_port}", f"http://127.0.0.1:{api_port}"
            # Warm-up (not counted): every code path, pool connection and cache hot before timing.
            for url, script, watched in ((f"{bare_url}/v1/machines", post_script, bare_proc),
                                         (f"{api_url}/v1/machines", post_script, api),
                                         (f"{api_url}{HEARTBEAT}", beat_script, api)):
                await asyncio.to_thread(wrk.run_wrk, gen, url, script, CONNECTIONS, min(2.0, seconds),
                                        {"x": watched})
            await _caught_up(conn)
            await settle(conn, analyze=True)
            result = CommandsResult(generator, Side(), Side(), Side(), 0, 0.0, [], agents, rounds, seconds)
            for r in range(rounds):
                order = ["bare", "post", "beat"] if r % 2 == 0 else ["beat", "post", "bare"]
                for name in order:
                    if name == "bare":
                        run_ = await asyncio.to_thread(wrk.run_wrk, gen, f"{bare_url}/v1/machines", post_script,
                                                       CONNECTIONS, seconds, {"api": bare_proc, **pg})
                        result.bare.runs.append(run_)
                    elif name == "post":
                        await _live_round(dsn, conn, result.post, gen, f"{api_url}/v1/machines", post_script,
                                          seconds, live, result.lag_samples)
                    else:
                        await _live_round(dsn, conn, result.beat, gen, f"{api_url}{HEARTBEAT}", beat_script,
                                          seconds, live, result.lag_samples)
            result.catchup_events, result.catchup_cpu = await _catchup_round(
                conn, gen, f"{api_url}/v1/machines", post_script, seconds, api, projector)
    finally:
        await conn.close()
    return result


async def _catchup_round(conn: asyncpg.Connection, gen: str, url: str, script: str, seconds: float,
                         api: psutil.Process, projector: psutil.Process) -> tuple[int, float]:
    """The projector's catch-up cost on the same traffic: paused (SIGSTOP, while idle) during one POST run,
    then resumed and timed until it has applied everything."""
    await _caught_up(conn)
    await asyncio.sleep(0.2)  # let an idle poll batch finish before pausing
    head = await _head(conn)
    projector.suspend()
    try:
        await asyncio.to_thread(wrk.run_wrk, gen, url, script, CONNECTIONS, seconds, {"api": api})
    finally:
        cpu = wrk.tree_cpu(projector)
        projector.resume()
    await _caught_up(conn)
    return await _head(conn) - head, wrk.tree_cpu(projector) - cpu


async def _wait_healthy_or_404(client: httpx.AsyncClient) -> None:
    """The API answers /health; the bare app has no such route, so any HTTP answer means it is up."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            await client.get("/health")
            return
        except httpx.TransportError:
            await asyncio.sleep(0.1)
    raise TimeoutError("server not answering after 60 s")


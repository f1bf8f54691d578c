"""Discovery alone, fast to iterate: the `tasks` phase's catalogue (seeded as tasks_seed does) and its discover
loop, timed in rounds, with each process's CPU per discover; optionally against several `mm api` code trees
(alternated, on the same database and catalogue) for A/B runs.

    MM_DATABASE_URL=... .venv/bin/python -m ops.bench.discover_alone --rounds 3 [--api-root DIR ...]
        [--modes idle+drop,idle+analyze] [--stats drop] [--state FILE] [--pyspy PATH]

Each round creates `--count` queued tasks, then (mode idle) waits until every projection has caught up and the
processes are idle, or (mode busy) starts at once as the phase does, and times POST .../discover on each task.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import asyncpg
import httpx
import psutil

from app.migrate import create_database
from app.sealing import new_secret_key
from ops.bench import tasks_seed
from ops.bench.commands import _caught_up
from ops.bench.db import bench_database, reset, server_url, tree_cpu
from ops.bench.heartbeats import _active_machine
from ops.bench.http_api import _clients, _free_port, stop_process, tenant_key
from ops.bench.tasks import ECHO, Timed, _listed, discover_each, mm_stack
from projections.audit_chain import new_signing_key


@contextmanager
def _api(root: Path, dsn: str, secret: str, port: int) -> Iterator[psutil.Process]:
    """One more `mm api` on the same database, running the code under `root` (python -m puts it first on sys.path)."""
    env = {**os.environ, "MM_DATABASE_URL": dsn, "MM_BROKER_URL": dsn, "MM_LOG_LEVEL": "WARNING",
           "MM_SECRET_KEY": secret, "MM_ALLOW_PRIVATE_ENDPOINTS": "true", "MM_AUDIT_SIGNING_KEY": new_signing_key()[0]}
    env.pop("MM_ADMIN_TOKEN", None)
    proc = subprocess.Popen([sys.executable, "-m", "app.cli", "api", "--port", str(port)], cwd=root, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield psutil.Process(proc.pid)
    finally:
        stop_process(proc)


_CATALOGUE = ("catalogue_listings", "catalogue_machines", "catalogue_endpoints", "seller_stats")


async def _statistics(conn: asyncpg.Connection, stats: str) -> None:
    if stats == "analyze":
        await conn.execute(f"ANALYZE {', '.join(_CATALOGUE)}")
    elif stats == "drop":  # as a table autovacuum never analyzed (needs superuser)
        oids = [await conn.fetchval("SELECT $1::regclass::oid", t) for t in _CATALOGUE]
        await conn.execute("DELETE FROM pg_statistic WHERE starelid = ANY($1::oid[])", oids)
        await conn.execute("UPDATE pg_class SET reltuples = -1, relpages = 0 WHERE oid = ANY($1::oid[])", oids)


class _Group:
    """Several processes whose CPU is summed (tree_cpu reads cpu_times and children)."""

    def __init__(self, procs: list[psutil.Process]) -> None:
        self.procs = procs

    def cpu_times(self) -> tuple[float, float]:
        total = [0.0, 0.0]
        for p in self.procs:
            with contextlib.suppress(psutil.Error):
                t = p.cpu_times()
                total[0] += t.user
                total[1] += t.system
        return total[0], total[1]

    def children(self) -> list[psutil.Process]:
        return []


async def _healthy(client: httpx.AsyncClient, within: float = 60.0) -> None:
    deadline = time.monotonic() + within
    while True:
        try:
            if (await client.get("/v1/catalogue", params={"limit": 1})).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError("api not healthy")
        await asyncio.sleep(0.2)


async def _idle(procs: dict[str, psutil.Process], conn: asyncpg.Connection, within: float = 120.0) -> None:
    """Projections caught up, then every process under 5% of a core for 0.5 s."""
    await _caught_up(conn, within)
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        before = {n: tree_cpu(p) for n, p in procs.items()}
        await asyncio.sleep(0.5)
        if all(tree_cpu(p) - before[n] < 0.025 for n, p in procs.items()):
            return


async def _round(client: httpx.AsyncClient, maker: httpx.AsyncClient, buyer: str, count: int,
                 procs: dict[str, psutil.Process], conn: asyncpg.Connection,
                 busy: bool, pyspy: str | None, paused: psutil.Process | None) -> tuple[Timed, dict[str, float]]:
    ids = []
    for i in range(count):
        r = await maker.post(f"/v1/machines/{buyer}/tasks", json={"capability": tasks_seed.capability(i % 5),
                                                                   "input": {"text": "x"}})
        ids.append(r.json()["id"])
    created = time.perf_counter()
    if not busy:
        await _caught_up(conn)
        caught_up = time.perf_counter() - created
        await _idle(procs, conn)
        print(f"  after the creates: projections caught up in {caught_up * 1000:.0f} ms,"
              f" processes idle in {(time.perf_counter() - created) * 1000:.0f} ms", flush=True)
    rows = await conn.fetch("SELECT pid, client_port FROM pg_stat_activity"
                            " WHERE datname = current_database() AND pid <> pg_backend_pid()")
    # Each backend by the process on the other end of its socket (the client's port), where it is one of ours.
    owner = {c.laddr.port: c.pid for c in psutil.net_connections("tcp") if c.pid is not None and c.laddr}
    groups: dict[str, list[psutil.Process]] = {}
    for r in rows:
        name = next((n for n, p in procs.items() if owner.get(r["client_port"]) == p.pid), "other")
        groups.setdefault(f"pg for {name}", []).append(psutil.Process(r["pid"]))
    procs = {**procs, **{n: _Group(b) for n, b in sorted(groups.items())}}  # type: ignore[dict-item]
    before = {n: tree_cpu(p) for n, p in procs.items()}
    spy = subprocess.Popen([str(Path(sys.executable).parent / "py-spy"), "record", "-r", "200", "-o", pyspy,  # noqa: ASYNC220
                            "-f", "raw", "-p", str(procs["api"].pid)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) if pyspy else None
    if paused is not None:  # a diagnostic: the loop without the projector's concurrent work (SIGSTOP)
        for p in (paused, *paused.children(recursive=True)):
            p.suspend()
    out, size = await discover_each(client, buyer, ids)
    if paused is not None:
        for p in (paused, *paused.children(recursive=True)):
            p.resume()
    if spy is not None:
        spy.send_signal(2)
        spy.wait(30)
    cpu = {n: (tree_cpu(p) - before[n]) / count * 1000 for n, p in procs.items()}
    cpu["response KiB"] = size / count / 1024
    return out, cpu


async def main(args: argparse.Namespace, roots: list[Path]) -> None:
    state = Path(args.state) if args.state else None
    if state is not None and state.exists():  # a database seeded by an earlier run with --state: reuse it
        saved = json.loads(state.read_text())
        await _run(args, roots, saved["dsn"], saved["key"], saved["secret"], seed=False)
        return
    if state is not None:  # seed one and keep it (drop it yourself: DROP DATABASE ... WITH (FORCE))
        dsn = await create_database(server_url(), "mm_bench")
        key, secret = await tenant_key(dsn), new_secret_key()
        state.write_text(json.dumps({"dsn": dsn, "key": key, "secret": secret}))
        await _run(args, roots, dsn, key, secret, seed=True)
        return
    async with bench_database(server_url()) as dsn:
        await reset(dsn)
        await _run(args, roots, dsn, await tenant_key(dsn), new_secret_key(), seed=True)


async def _run(args: argparse.Namespace, roots: list[Path], dsn: str, key: str, secret: str, seed: bool) -> None:
    async with mm_stack(dsn, secret, tasks_seed.CONCURRENCY + 2) as st:
        t0 = time.perf_counter()
        if seed:
            await tasks_seed.catalogue(st.c, uuid.uuid4(), f"{st.stub}/echo", args.listings)
            await tasks_seed.seller(st.c, uuid.uuid4(), "bench-echo-seller", f"{st.stub}/echo", [(ECHO, 10)])
        with ExitStack() as stack:
            ports = [_free_port() for _ in roots]
            apis = [stack.enter_context(_api(r, dsn, secret, p)) for r, p in zip(roots, ports, strict=True)]
            async with _clients(st.port, key, 1) as (maker,):
                await _healthy(maker)
                await _listed(maker, tasks_seed.capability(0), min(100, args.listings // tasks_seed.CAPABILITIES))
                await _listed(maker, ECHO, 1)
                print(f"seeded {args.listings} listings in {time.perf_counter() - t0:.1f} s", flush=True)
                buyer = await _active_machine(maker, dict(maker.headers), 0)
                conn = await asyncpg.connect(dsn)
                try:
                    await _statistics(conn, args.stats)
                    for rnd in range(args.rounds):
                        for (root, port, api), mode in itertools.product(
                                zip(roots, ports, apis, strict=True), args.modes.split(",")):
                            async with _clients(port, key, 1) as (client,):
                                await _healthy(client)
                                procs = {"api": api, **{k: v for k, v in st.procs.items() if k != "api"}}
                                for stats in ("drop", "analyze"):
                                    if stats in mode.split("+"):
                                        await _statistics(conn, stats)
                                timed, cpu = await _round(client, maker, buyer, args.count, procs, conn,
                                                          "busy" in mode.split("+"),
                                                          args.pyspy and f"{args.pyspy}.{rnd}",
                                                      st.procs["projector"] if "noprojector" in mode else None)
                            print(f"round {rnd} {root.name} {mode}: p50 {timed.p(50):.1f} p90 {timed.p(90):.1f}"
                                  f" p99 {timed.p(99):.1f} ms; {dict(timed.statuses)}; per discover: "
                                  + ", ".join(f"{n} {v:.1f}" for n, v in cpu.items())
                                  + f"; load {os.getloadavg()[0]:.2f}", flush=True)
                finally:
                    await conn.close()


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--listings", type=int, default=10_000)
    p.add_argument("--count", type=int, default=500)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--api-root", action="append", default=[])
    p.add_argument("--state", help="a JSON file: seed a kept database and record it there, or reuse the one named")
    p.add_argument("--pyspy", help="record the api's CPU samples with py-spy (raw format) to this path + round")
    p.add_argument("--modes", default="idle", help="rounds alternated over these, comma-separated: idle (wait for the"
                   " projections and processes to be idle after the creates) or busy (time at once, as the phase"
                   " does), each optionally +drop or +analyze (the catalogue's statistics before the round) and"
                   " +noprojector (the projector stopped during the timed loop: a diagnostic, not a valid run)")
    p.add_argument("--stats", choices=["keep", "drop", "analyze"], default="keep",
                   help="the catalogue tables' planner statistics before the rounds (drop: as never analyzed)")
    a = p.parse_args()
    asyncio.run(main(a, [Path(r).resolve() for r in a.api_root] or [Path(__file__).resolve().parents[2]]))

"""Leader election between real `mm projector` processes: a hot standby takes over from a SIGKILLed leader."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest

from app.container import Container
from app.settings import Settings
from domain.shared.context import CommandContext
from projections.registry import projection_names
from projections.runner import lock_key

ROOT = Path(__file__).resolve().parents[2]
KEY = "A" * 43 + "="


@pytest.fixture
async def c(fresh_database: str) -> AsyncIterator[Container]:
    container = await Container.open(Settings(), fresh_database, min_size=1, max_size=4)
    try:
        yield container
    finally:
        await container.close()


def _projector(dsn: str, app_name: str, log: Path) -> subprocess.Popen[bytes]:
    """`mm projector` whose sessions carry `app_name`, so the test can tell whose locks are whose."""
    url = f"{dsn}{'&' if '?' in dsn else '?'}application_name={app_name}"
    env = {k: v for k, v in os.environ.items() if k != "MM_BROKER_URL"}
    env.update(MM_DATABASE_URL=url, MM_PROJECTION_POLL_INTERVAL_S="0.2", MM_LOG_LEVEL="WARNING",
               PYTHONPATH=str(ROOT))
    with log.open("wb") as out:
        return subprocess.Popen([sys.executable, "-m", "app.cli", "projector"], cwd=ROOT, env=env,
                                stdout=out, stderr=subprocess.STDOUT)


async def _holders(pool: asyncpg.Pool) -> dict[str, str]:
    """Projection name -> application_name of the session holding its advisory lock."""
    rows = await pool.fetch(
        "SELECT (l.classid::bigint << 32) | l.objid::bigint AS key, a.application_name"
        " FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
        " WHERE l.locktype = 'advisory' AND l.granted"
        " AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())")
    by_key = {r["key"]: r["application_name"] for r in rows}
    return {name: by_key[lock_key(name)] for name in projection_names() if lock_key(name) in by_key}


async def _until(check: Callable[[], Awaitable[bool]], seconds: float, what: str,
                 state: Callable[[], Awaitable[str]] | None = None) -> float:
    start = time.monotonic()
    while not await check():
        if time.monotonic() - start > seconds:
            pytest.fail(f"{what} did not happen within {seconds}s" + (f": {await state()}" if state else ""))
        await asyncio.sleep(0.05)
    return time.monotonic() - start


async def _register(c: Container, n: int) -> None:
    ctx = CommandContext(at=datetime.now(UTC), actor="test", account_id=uuid.uuid4())
    for i in range(n):
        await c.machines.register(ctx, name=f"m{i}", description="", public_key=KEY, labels={})


def _logs(folder: Path) -> dict[str, str]:
    return {p.name: p.read_text(errors="replace")[-1500:] for p in sorted(folder.glob("*.log"))}


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


async def test_a_standby_mm_projector_takes_over_when_the_leader_is_sigkilled(
    c: Container, fresh_database: str, tmp_path: Path
) -> None:
    names, pool = projection_names(), c.pool
    procs: list[subprocess.Popen[bytes]] = []

    async def all_held_by(app_name: str) -> bool:
        return await _holders(pool) == dict.fromkeys(names, app_name)

    async def projected(n: int) -> bool:
        return await pool.fetchval("SELECT count(*) FROM machines_view") == n

    async def state() -> str:  # for failure messages: who holds what, and what the projectors said
        return f"locks {await _holders(pool)}, exit codes {[p.poll() for p in procs]}, logs {_logs(tmp_path)}"

    try:
        procs.append(_projector(fresh_database, "mm-leader", tmp_path / "leader.log"))
        await _until(lambda: all_held_by("mm-leader"), 60, "the first projector leading every projection", state)
        procs.append(_projector(fresh_database, "mm-standby", tmp_path / "standby.log"))

        async def standby_connected() -> bool:
            return bool(await pool.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'mm-standby'"))

        await _until(standby_connected, 60, "the standby connecting", state)
        await asyncio.sleep(1.0)  # five of its poll intervals: a standby that grabbed a lock would show now
        assert await all_held_by("mm-leader"), await state()
        await _register(c, 5)
        await _until(lambda: projected(5), 30, "the leader projecting", state)

        procs[0].send_signal(signal.SIGKILL)
        procs[0].wait(10)
        await _register(c, 5)  # written after the kill: only the standby can project these
        took = await _until(lambda: all_held_by("mm-standby"), 60, "the standby taking every lock", state)
        await _until(lambda: projected(10), 30, "the standby projecting events written after the kill", state)
        print(f"\nstandby held every lock {took:.2f}s after the leader's SIGKILL")
        total = await pool.fetchval("SELECT count(*) FROM events")

        async def caught_up() -> bool:  # every event applied once by each, whichever projector applied it
            applied = dict(await pool.fetch("SELECT name, events_applied FROM projection_checkpoints"))
            assert all(applied.get(n, 0) <= total for n in ("machines", "audit")), applied
            return applied.get("machines") == applied.get("audit") == total

        await _until(caught_up, 30, "machines and audit each applying every event exactly once", state)
        assert procs[1].poll() is None, await state()
    finally:
        for proc in procs:
            _stop(proc)

"""Projections on real PostgreSQL: exactly-once under crashes, rebuild equals live, leader election."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sys
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from app.container import Container
from app.settings import Settings
from app.store.types import LogPosition, RecordedEvent
from domain.machines.commands import ChangeStatus, ReviseProfile
from domain.shared.context import CommandContext
from projections import checkpoints
from projections.audit import AuditProjection
from projections.base import Tables
from projections.machines import MachinesProjection
from projections.rebuild import rebuild
from projections.runner import ProjectionRunner, lock_key

ROOT = Path(__file__).resolve().parents[2]
KEY = "A" * 43 + "="


@pytest.fixture
async def app_container(fresh_database: str) -> AsyncIterator[Container]:
    c = await Container.open(Settings(), fresh_database, min_size=1, max_size=8)
    try:
        yield c
    finally:
        await c.close()


async def seed(c: Container, machines: int) -> int:
    """Real aggregates through the real repository: register, revise, suspend some, retire some."""
    account = uuid.uuid4()
    base = datetime(2026, 1, 1, tzinfo=UTC)
    for i in range(machines):
        ctx = CommandContext(at=base + timedelta(seconds=i), actor="seed", account_id=account)
        out = await c.machines.register(ctx, name=f"m{i}", description="", public_key=KEY, labels={"n": str(i)})
        mid = out.machine.id
        await c.machines.revise(ctx, mid, ReviseProfile(name=f"machine-{i}", labels={"tier": str(i % 3)}), None)
        if i % 3 == 0:
            await c.machines.retire(ctx, mid, ChangeStatus(reason="old"))
    return int(await c.pool.fetchval("SELECT count(*) FROM events"))


async def snapshot(conn: asyncpg.Connection | asyncpg.Pool) -> tuple[list[Any], list[Any]]:
    machines = await conn.fetch("SELECT * FROM machines_view ORDER BY id")
    audit = await conn.fetch(
        "SELECT id, tx_id, position, type, occurred_at, actor, account_id, machine_id, subject, data::text"
        " FROM audit_events ORDER BY tx_id, position"
    )
    return [tuple(r) for r in machines], [tuple(r) for r in audit]


async def applied_counts(pool: asyncpg.Pool) -> dict[str, int]:
    rows = await pool.fetch("SELECT name, events_applied FROM projection_checkpoints")
    return {r["name"]: r["events_applied"] for r in rows}


async def _projector(dsn: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, str(ROOT / "tests/integration/projector_proc.py"), dsn,
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )


async def _kill_mid_batch(proc: asyncio.subprocess.Process, nth: int, pool: asyncpg.Pool) -> bool | None:
    """SIGKILL `proc` once it reports its `nth` batch in progress. True when the kill provably hit that batch
    before its commit (its checkpoint never reached the batch's end), False when the commit won the race,
    None when the projector finished first."""
    assert proc.stdout is not None
    seen = 0
    while line := (await asyncio.wait_for(proc.stdout.readline(), 60)).decode():
        if not line.startswith("mid-batch "):
            continue
        seen += 1
        if seen == nth:
            proc.send_signal(signal.SIGKILL)
            await proc.wait()
            _, name, tx_id, position = line.split()
            async with pool.acquire() as conn:
                at = await checkpoints.position(conn, name)
            return at is None or at < LogPosition(int(tx_id), int(position))
    return None


@pytest.mark.slow
async def test_killed_projector_ends_identical_to_a_clean_rebuild(
    app_container: Container, fresh_database: str
) -> None:
    total = await seed(app_container, 200)
    kills = mid_batch_kills = 0
    for attempt in range(40):
        proc = await _projector(fresh_database)
        try:
            if attempt % 3 == 2:  # now and then anywhere, start-up included
                await asyncio.sleep(random.uniform(0.4, 0.9))
                if proc.returncode is None:
                    proc.send_signal(signal.SIGKILL)
                    kills += 1
            else:  # mostly between a batch's first row write and its commit
                hit = await _kill_mid_batch(proc, random.randint(2, 4), app_container.pool)
                kills += hit is not None
                mid_batch_kills += bool(hit)
        finally:
            if proc.returncode is None:
                proc.kill()
            await proc.communicate()
        counts = await applied_counts(app_container.pool)
        if counts.get("machines") == total and counts.get("audit") == total:
            break
    assert kills >= 2, "the projector was never killed mid-run; the test proved nothing"
    assert mid_batch_kills >= 1, "no kill landed inside a partly applied batch; the test proved nothing"
    print(f"\n{kills} kills, {mid_batch_kills} of them inside a partly applied batch")
    final = await _projector(fresh_database)
    out, err = await asyncio.wait_for(final.communicate(), 120)
    assert b"caught-up" in out, err.decode()[-2000:]

    assert await applied_counts(app_container.pool) == {"machines": total, "audit": total}
    after_crashes = await snapshot(app_container.pool)
    for p in (MachinesProjection(), AuditProjection()):
        await rebuild(app_container.pool, app_container.store, p)
    assert after_crashes == await snapshot(app_container.pool)
    assert len(after_crashes[1]) == total


class FailsAfter:
    """Raises between two statements of a batch: the injected-failure variant of the crash test."""

    def __init__(self, inner: MachinesProjection, after: int) -> None:
        self.inner, self.name, self.tables, self.left = inner, inner.name, inner.tables, after

    async def apply_many(self, conn: asyncpg.Connection, events: Sequence[RecordedEvent], t: Tables) -> None:
        for event in events:  # one statement per event, so the failure lands between two writes
            if self.left == 0:
                raise RuntimeError("injected failure")
            self.left -= 1
            await self.inner.apply_many(conn, [event], t)


async def test_failure_mid_batch_rolls_back_rows_and_checkpoint_together(app_container: Container) -> None:
    total = await seed(app_container, 30)
    runner = ProjectionRunner(app_container.pool, app_container.store, [], batch_size=25)
    with pytest.raises(RuntimeError, match="injected"):
        await runner.catch_up(FailsAfter(MachinesProjection(), 60))  # 2 batches commit, the 3rd dies at event 11
    assert (await applied_counts(app_container.pool))["machines"] == 50
    await runner.catch_up(MachinesProjection())
    assert (await applied_counts(app_container.pool))["machines"] == total
    live = await snapshot(app_container.pool)
    await rebuild(app_container.pool, app_container.store, MachinesProjection())
    assert (await snapshot(app_container.pool))[0] == live[0]


async def test_rebuild_swaps_in_without_serving_a_half_built_model(app_container: Container) -> None:
    await seed(app_container, 60)
    runner = ProjectionRunner(app_container.pool, app_container.store, [], batch_size=500)
    await runner.catch_up(MachinesProjection())
    expected = await snapshot(app_container.pool)
    seen_counts: list[int] = []
    done = asyncio.Event()

    async def reader() -> None:
        while not done.is_set():
            seen_counts.append(await app_container.pool.fetchval("SELECT count(*) FROM machines_view"))
            await asyncio.sleep(0)

    task = asyncio.create_task(reader())
    applied = await rebuild(app_container.pool, app_container.store, MachinesProjection(), batch_size=20)
    done.set()
    await task
    assert applied == await app_container.pool.fetchval("SELECT count(*) FROM events")
    assert len(seen_counts) > 3 and set(seen_counts) == {60}, "a reader saw a partial read model"
    assert (await snapshot(app_container.pool))[0] == expected[0]
    leftovers = await app_container.pool.fetchval("SELECT count(*) FROM pg_tables WHERE tablename LIKE '%__rebuild'")
    assert leftovers == 0


async def test_live_runner_follows_new_events_and_a_second_copy_waits(app_container: Container) -> None:
    first = ProjectionRunner(app_container.pool, app_container.store, [MachinesProjection()], poll_interval=0.05)
    second = ProjectionRunner(app_container.pool, app_container.store, [MachinesProjection()], poll_interval=0.05)
    stop = asyncio.Event()
    tasks = [asyncio.create_task(first.run(stop))]
    await asyncio.sleep(0.2)
    tasks.append(asyncio.create_task(second.run(stop)))
    try:
        await seed(app_container, 10)
        for _ in range(100):
            if await app_container.pool.fetchval("SELECT count(*) FROM machines_view") == 10:
                break
            await asyncio.sleep(0.05)
        assert await app_container.pool.fetchval("SELECT count(*) FROM machines_view") == 10
        assert first.leading == {"machines"} and second.leading == set()
        holder = await app_container.pool.fetchval(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted"
            " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            " AND ((classid::bigint << 32) | objid::bigint) = $1", lock_key("machines"))
        assert holder == 1
    finally:
        stop.set()
        await asyncio.gather(*tasks)


class Tagged:
    """Records, inside the batch transaction, which runner applied each batch (so only committed ones show)."""

    def __init__(self, inner: MachinesProjection, tag: str) -> None:
        self.inner, self.name, self.tables, self.tag = inner, inner.name, inner.tables, tag

    async def apply_many(self, conn: asyncpg.Connection, events: Sequence[RecordedEvent], t: Tables) -> None:
        await self.inner.apply_many(conn, events, t)
        await conn.execute("INSERT INTO batch_log (tag, events) VALUES ($1, $2)", self.tag, len(events))


async def _lock_holder(pool: asyncpg.Pool, name: str) -> int | None:
    return await pool.fetchval(
        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted"
        " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        " AND ((classid::bigint << 32) | objid::bigint) = $1", lock_key(name))


async def test_a_leader_whose_lock_session_ends_stops_before_its_next_batch(app_container: Container) -> None:
    pool = app_container.pool
    await pool.execute("CREATE TABLE batch_log (id bigserial PRIMARY KEY, tag text NOT NULL, events int NOT NULL)")
    # The deposed leader retries its lock every 0.5 s (min(poll, 0.5)), the standby every 0.05 s: the standby
    # wins the free lock on any box, however loaded, as a standby that is polling for it would.
    first = ProjectionRunner(pool, app_container.store, [Tagged(MachinesProjection(), "first")],
                             batch_size=5, poll_interval=1.0)
    second = ProjectionRunner(pool, app_container.store, [Tagged(MachinesProjection(), "second")],
                              batch_size=5, poll_interval=0.05)
    stop, writing = asyncio.Event(), asyncio.Event()
    tasks = [asyncio.create_task(first.run(stop))]

    async def writer() -> None:  # a steady stream of small commits, so both copies always have work
        while not writing.is_set():
            await seed(app_container, 1)

    try:
        for _ in range(200):
            if first.leading:
                break
            await asyncio.sleep(0.05)
        tasks.append(asyncio.create_task(second.run(stop)))
        tasks.append(asyncio.create_task(writer()))
        await asyncio.sleep(1.0)
        assert first.leading == {"machines"} and second.leading == set()
        holder = await _lock_holder(pool, "machines")
        assert holder is not None
        assert await pool.fetchval("SELECT pg_terminate_backend($1)", holder)  # the leader's lock session ends
        for _ in range(600):
            if second.leading:
                break
            await asyncio.sleep(0.05)
        assert second.leading == {"machines"}, "the standby never took over"
        await asyncio.sleep(2.0)  # both copies keep being woken by new events
        writing.set()
        await tasks[2]
        for _ in range(600):  # the new leader drains what is left (a busy server's open transactions delay it)
            if await pool.fetchval("SELECT count(*) FROM events") == (await applied_counts(pool))["machines"]:
                break
            await asyncio.sleep(0.05)
    finally:
        writing.set()
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)

    tags = [r["tag"] for r in await pool.fetch("SELECT tag FROM batch_log ORDER BY id")]
    took_over = tags.index("second")
    assert tags[:took_over] == ["first"] * took_over and took_over > 0
    assert tags[took_over:] == ["second"] * (len(tags) - took_over), (
        f"the deposed leader committed {tags[took_over:].count('first')} batch(es) after the standby's first")
    assert tags.count("second") >= 3
    total = await pool.fetchval("SELECT count(*) FROM events")
    assert (await applied_counts(pool))["machines"] == total == await pool.fetchval("SELECT sum(events) FROM batch_log")



class Slow:
    """A projection that dawdles in each batch, so two writers surely overlap on the same checkpoint. With no
    inner projection it writes no rows at all: then only the checkpoint can stop a double application."""

    def __init__(self, inner: AuditProjection | None) -> None:
        self.inner = inner
        self.name = inner.name if inner else "slow_noop"
        self.tables: tuple[str, ...] = inner.tables if inner else ()
        self.batches = 0

    async def apply_many(self, conn: asyncpg.Connection, events: Sequence[RecordedEvent], t: Tables) -> None:
        self.batches += 1
        if self.inner is not None:
            await self.inner.apply_many(conn, events, t)
        await asyncio.sleep(0.005)


@pytest.mark.parametrize("inner", [AuditProjection, None])
async def test_two_concurrent_catch_ups_apply_each_event_once(app_container: Container, inner: Any) -> None:
    """The checkpoint is locked last (after the rows are written) and advanced only if nobody moved it: the
    writer that loses the race rolls its batch back and continues from where the winner stopped."""
    total = await seed(app_container, 40)
    runner = ProjectionRunner(app_container.pool, app_container.store, [], batch_size=7)
    projection = Slow(inner() if inner else None)
    applied = await asyncio.gather(runner.catch_up(projection), runner.catch_up(projection))  # type: ignore[arg-type]
    assert sum(applied) == total
    assert (await applied_counts(app_container.pool))[projection.name] == total
    if inner is not None:
        assert await app_container.pool.fetchval("SELECT count(*) FROM audit_events") == total
    assert projection.batches > -(-total // 7), "the two writers never raced for a batch"

"""GET /v1/audit-events/stream over a real HTTP server: live records, filters, Last-Event-ID resume mid-burst
with no gap and no duplicate, keep-alives, and the final `resume` event for a client that falls behind."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import httpx
import msgspec
import pytest
import uvicorn

from app.api.app import create_app
from app.api.audit_stream import events
from app.audit_tail import AuditTail
from app.migrate import create_database, drop_database
from projections.audit_reader import AuditFilter, last_position
from tests.api.audit_stack import Stack, audit_stack, seed
from tests.api.helpers import assert_problem
from tests.live_stack import free_port


@asynccontextmanager
async def served(stack: Stack) -> AsyncIterator[str]:
    port = free_port()
    app = create_app(stack.container.settings, container=stack.container)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve())
    while not server.started:  # noqa: ASYNC110 (uvicorn offers no event for it)
        await asyncio.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


@pytest.fixture(scope="module")
async def live(server_url: str) -> AsyncIterator[tuple[Stack, str]]:
    """The stack with its projector running live (so records land as they are appended) and served on a port."""
    dsn = await create_database(server_url, "mm_audit_stream")
    try:
        async with audit_stack(dsn, audit_stream_keepalive_s=0.3, projection_poll_interval_s=0.2) as s:
            stop = asyncio.Event()
            runner = asyncio.create_task(s.runner.run(stop))
            try:
                async with served(s) as base:
                    yield s, base
            finally:
                stop.set()
                await runner
    finally:
        await drop_database(server_url, dsn)


class Sse:
    """A minimal EventSource: frames as dicts of their fields (comments under ':')."""

    def __init__(self, response: httpx.Response) -> None:
        self.lines = response.aiter_lines()

    async def next(self) -> dict[str, str]:
        fields: dict[str, str] = {}
        async for line in self.lines:
            if not line:
                if fields:
                    return fields
                continue
            name, _, value = line.partition(":")
            fields[name] = fields.get(name, "") + value.removeprefix(" ")
        raise EOFError

    async def records(self, n: int) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        async with asyncio.timeout(30):
            while len(out) < n:
                f = await self.next()
                if "data" in f:
                    record = json.loads(f["data"])
                    assert f["id"] == record["cursor"] and f["event"] == record["type"], f
                    out.append(record)
        return out


@asynccontextmanager
async def subscribe(base: str, headers: dict[str, str], **params: Any) -> AsyncIterator[tuple[Sse, dict[str, str]]]:
    async with httpx.AsyncClient(timeout=httpx.Timeout(30.0)) as client, \
            client.stream("GET", base + "/v1/audit-events/stream", params=params, headers=headers) as r:
        assert r.status_code == 200, await r.aread()
        assert r.headers["content-type"].startswith("text/event-stream")
        sse = Sse(r)
        yield sse, await sse.next()


async def test_new_records_arrive_live_and_scoped(live: tuple[Stack, str]) -> None:
    stack, base = live
    tenant, other = stack.tenants
    async with subscribe(base, tenant["headers"]) as (sse, hello):
        assert hello["id"] and "data" not in hello  # where to resume, before any record
        await seed(stack.container.store, [other["id"], tenant["id"]], 60, chunk=30)
        got = await sse.records(30)
    assert {r["accountId"] for r in got} == {tenant["id"]}
    assert [r["seq"] for r in got] == sorted(r["seq"] for r in got) and all(r["hash"] for r in got)


async def test_filters_apply_to_the_stream(live: tuple[Stack, str]) -> None:
    stack, base = live
    async with subscribe(base, stack.admin, type="machine.profile-revised", actor="system:seed") as (sse, _):
        opened = await stack.client.post("/v1/accounts", json={"name": "not-streamed"}, headers=stack.admin)
        assert opened.status_code == 201
        await seed(stack.container.store, [stack.tenants[0]["id"]], 5)
        got = await sse.records(5)
    assert {r["type"] for r in got} == {"machine.profile-revised"}


@pytest.mark.parametrize("how", ["header", "query"])
async def test_a_subscriber_cut_mid_burst_resumes_with_every_record_once(live: tuple[Stack, str], how: str) -> None:
    stack, base = live
    tenant = stack.tenants[1]
    total = 1500
    async with subscribe(base, tenant["headers"]) as (sse, _):
        burst = asyncio.create_task(seed(stack.container.store, [tenant["id"]], total, chunk=50))
        first = await sse.records(400)
    last = first[-1]["cursor"]
    resume = {"Last-Event-ID": last} if how == "header" else {}
    async with subscribe(base, {**tenant["headers"], **resume},
                         **({"after": last} if how == "query" else {})) as (sse, _):
        await burst
        rest = await sse.records(total - len(first))
    ids = [r["id"] for r in first + rest]
    assert len(ids) == len(set(ids)) == total
    seqs = [r["seq"] for r in first + rest]
    assert seqs == list(range(seqs[0], seqs[0] + total))  # consecutive places of the chain: none missed


async def test_keep_alive_comments_while_nothing_happens(live: tuple[Stack, str]) -> None:
    stack, base = live
    async with httpx.AsyncClient(timeout=10) as client, client.stream(
            "GET", base + "/v1/audit-events/stream", params={"type": "no.such-type"}, headers=stack.admin) as r:
        seen = []
        async with asyncio.timeout(5):
            async for line in r.aiter_lines():
                seen.append(line)
                if line == ": keep-alive" and seen.count(": keep-alive") == 2:
                    break
    assert seen.count(": keep-alive") == 2


async def test_a_slow_client_is_told_where_to_resume(live: tuple[Stack, str]) -> None:
    stack, _ = live
    s = msgspec.structs.replace(stack.container.settings, audit_stream_queue_size=20)
    tail, pool = stack.container.audit_tail, stack.container.pool
    account = uuid.UUID(stack.tenants[0]["id"])
    slow = events(tail, pool, AuditFilter(account_id=account), None, s)
    hello = await anext(slow)  # subscribed; then it reads nothing while 100 records land
    before = await _count(stack, account)
    await seed(stack.container.store, [str(account)], 100, chunk=10)
    await _projected_and_read(stack, tail, pool, account, before + 100)
    frames = _frames([f async for f in slow])
    *records, final = frames
    assert len(records) == 20 and final.startswith(b"id: ") and b"event: resume" in final
    after = json.loads(final.split(b"data: ")[1])
    assert after["reason"] == "slow-consumer"
    assert after["after"] == json.loads(records[-1].split(b"data: ")[1])["cursor"]
    # Reconnecting from there catches up from the table: the other 80, none twice.
    from app.api.audit import parse_cursor

    again = events(tail, pool, AuditFilter(account_id=account), parse_cursor(after["after"]), s)
    rest: list[bytes] = []
    async for chunk in again:
        rest += [f for f in _frames([chunk]) if f.startswith(b"id: ")]
        if len(rest) >= 80:
            break
    await again.aclose()
    assert hello.startswith(b": connected") and len(rest) == 80
    assert not set(rest) & set(records)


async def _settled(stack: Stack) -> None:
    """Every record so far is in the feed, and the tail (if started) has read past it: a subscriber from now on
    gets only what is appended after."""
    await stack.catch_up()
    end, tail = await last_position(stack.container.pool), stack.container.audit_tail
    async with asyncio.timeout(20):
        while tail.position is not None and end is not None and tail.position < end:  # noqa: ASYNC110 (no event)
            await asyncio.sleep(0.05)


def _frames(chunks: list[bytes]) -> list[bytes]:
    """The frames in what the generator wrote (it joins everything queued into one write)."""
    return [f + b"\n\n" for f in b"".join(chunks).split(b"\n\n") if f]


async def _count(stack: Stack, account: uuid.UUID) -> int:
    return int(await stack.container.pool.fetchval("SELECT count(*) FROM audit_events WHERE account_id = $1",
                                                   account))


async def _projected_and_read(stack: Stack, tail: AuditTail, pool: asyncpg.Pool, account: uuid.UUID,
                              count: int) -> None:
    """Wait (20 s at most) until the projector has applied `count` records of `account` and the tail has read
    up to the log's end."""
    async with asyncio.timeout(20):
        while await _count(stack, account) < count:  # noqa: ASYNC110 (the projector has applied them)
            await asyncio.sleep(0.05)
        end = await last_position(pool)
        while tail.position is None or end is None or tail.position < end:  # noqa: ASYNC110 (the tail read them)
            await asyncio.sleep(0.05)


async def test_the_tail_encodes_each_record_once_and_hands_each_subscriber_one_chunk_per_read(
        live: tuple[Stack, str]) -> None:
    """Subscribers sharing a filter share one group: the very same chunk object reaches each (filtered, encoded
    and joined once), one per read; another filter gets only its rows; frames are in log order, none twice."""
    stack, _ = live
    tail, pool = stack.container.audit_tail, stack.container.pool
    mine, theirs = (uuid.UUID(t["id"]) for t in stack.tenants)
    await _settled(stack)  # else records the fixture made may still reach these subscribers
    same = [await tail.subscribe(AuditFilter(account_id=mine), 1000) for _ in range(3)]
    other = await tail.subscribe(AuditFilter(account_id=theirs), 1000)
    try:
        before, theirs_before = await _count(stack, mine), await _count(stack, theirs)
        await seed(stack.container.store, [str(mine), str(theirs)], 200, chunk=20)
        # Both accounts' records: the last append is theirs, and may still be on its way once all of mine are in.
        await _projected_and_read(stack, tail, pool, mine, before + 100)
        await _projected_and_read(stack, tail, pool, theirs, theirs_before + 100)
        got = [await s.take(1.0) for s in same]
        assert all(len(g) == len(got[0]) for g in got)
        assert all(a[1] is b[1] for g in got[1:] for a, b in zip(got[0], g, strict=True))
        frames = _frames([chunk for _, chunk in got[0]])
        records = [json.loads(f.split(b"data: ")[1]) for f in frames]
        assert len(records) == 100 and {r["accountId"] for r in records} == {str(mine)}
        assert [r["seq"] for r in records] == list(range(records[0]["seq"], records[0]["seq"] + 100))
        assert [at for at, _ in got[0]] == sorted({at for at, _ in got[0]})  # each chunk ends further on
        theirs_got = _frames([chunk for _, chunk in await other.take(1.0)])
        assert len(theirs_got) == 100 and not set(theirs_got) & set(frames)
    finally:
        for s in [*same, other]:
            tail.unsubscribe(s)
    assert tail.subscribers == 0


async def test_a_stream_ends_after_its_lifetime_with_where_to_resume(live: tuple[Stack, str]) -> None:
    stack, _ = live
    s = msgspec.structs.replace(stack.container.settings, audit_stream_max_s=0.3)
    frames = _frames([f async for f in events(stack.container.audit_tail, stack.container.pool, AuditFilter(),
                                              None, s)])
    assert len(frames) >= 2 and b'"reason":"lifetime"' in frames[-1]


@pytest.mark.parametrize("headers", [{"Last-Event-ID": "garbage!!"}, {}])
async def test_bad_resume_points_are_400(live: tuple[Stack, str], headers: dict[str, str]) -> None:
    stack, _ = live
    params = {} if headers else {"after": "bad"}
    r = await stack.client.get("/v1/audit-events/stream", params=params, headers={**stack.admin, **headers})
    assert_problem(r, 400, "VALIDATION_ERROR")
    assert_problem(await stack.client.get("/v1/audit-events/stream"), 401, "UNAUTHORIZED")


async def test_the_tail_spaces_its_reads_by_what_its_fan_out_costs(live: tuple[Stack, str]) -> None:
    """The measured cost of a read covers the writes of every subscriber it woke: consumers that each spend
    20 ms of CPU per chunk make a read cost at least 5 x 20 ms, so reads are spaced at least twice that apart."""
    from app.audit_tail import BUSY_SHARE, spacing_for

    stack, _ = live
    tail = stack.container.audit_tail
    account = uuid.UUID(stack.tenants[1]["id"])
    subs = [await tail.subscribe(AuditFilter(account_id=account), 1000) for _ in range(5)]
    got = [0] * len(subs)

    async def consume(i: int) -> None:
        while True:
            chunks = await subs[i].take(30.0)
            got[i] += sum(len(_frames([c])) for _, c in chunks)
            spin = time.thread_time() + 0.02  # a dear write: 20 ms of the loop's CPU, not a sleep
            while time.thread_time() < spin:
                pass

    consumers = [asyncio.create_task(consume(i)) for i in range(len(subs))]
    try:
        await seed(stack.container.store, [str(account)], 10)
        async with asyncio.timeout(20):
            while min(got) < 10 or tail.cost < 0.1:  # noqa: ASYNC110 (the tail measures after its fan-out)
                await asyncio.sleep(0.01)
        assert tail.spacing == spacing_for(tail.cost) >= 0.1 / BUSY_SHARE
    finally:
        for task in consumers:
            task.cancel()
        for s in subs:
            tail.unsubscribe(s)
        tail.cost = 0.0  # the next tests' reads come soon again


async def test_reads_nobody_is_subscribed_to_measure_no_cost(live: tuple[Stack, str]) -> None:
    """With nobody subscribed the tail skips the rows (no fan-out): that read costs the loop nothing, so it must
    not count the time since the last fan-out, which would space the next subscriber's reads a second apart."""
    stack, _ = live
    tail, pool = stack.container.audit_tail, stack.container.pool
    account = uuid.UUID(stack.tenants[0]["id"])
    sub = await tail.subscribe(AuditFilter(account_id=account), 1000)
    try:  # one fan-out first
        await seed(stack.container.store, [str(account)], 1)
        assert await sub.take(20.0)
    finally:
        tail.unsubscribe(sub)
    assert tail.subscribers == 0
    await asyncio.sleep(0.3)  # that fan-out lies well behind (and the tail has measured it)
    tail.cost = 0.0
    before = await _count(stack, account)
    await seed(stack.container.store, [str(account)], 5)
    await _projected_and_read(stack, tail, pool, account, before + 5)
    assert tail.cost == 0.0

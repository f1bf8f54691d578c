"""No secret a flow creates (the admin key, tenant API keys, agent tokens, endpoint authTokens,
webhook signing secrets) appears anywhere it
could leak to: any row of any table (every event's data and metadata, every snapshot, idempotency_keys, every read
model, the broker's messages), the in-process app's log records at DEBUG, or a projector's, worker's (which
unseals an endpoint's token to call its seller) or rebuild's output."""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import re
import secrets
import signal
import sys
import time
import uuid
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime

import asyncpg
import httpx
import pytest

from app.api.app import create_app
from app.api.consistency import wait_for
from app.container import Container
from app.outbound.stub_seller import StubSeller
from app.settings import Settings
from app.store.types import LogPosition
from domain.shared.context import CommandContext
from projections.registry import read_models
from projections.runner import ProjectionRunner
from tests.api.helpers import active_machine
from tests.conftest import ROOT, TEST_AUDIT_KEY, TEST_SECRET_KEY

HEARTBEAT = "/v1/machine-agents/heartbeat"
BEATS = 22  # past SNAPSHOT_EVERY (20) of the agent and its endpoint, so both streams have a snapshot row
WINDOW = 16
MUST_SCAN = ("events", "snapshots", "idempotency_keys", "worker_messages")


@pytest.fixture
def seller() -> Iterator[StubSeller]:
    with StubSeller() as stub:
        yield stub


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _secret_part(value: str) -> str:
    """What only the holder knows: API keys are `mm_<public prefix>_<secret>`, agent tokens `mma_<agent id>_<secret>`
    (the prefix and the id are shown in listings); the rest of our secrets are random through and through."""
    match = re.fullmatch(r"(?:mma_[0-9a-f]{32}|mm_[0-9a-f]{8}|mm_test_admin)_(.+)", value)
    return match.group(1) if match else value


def _needles(found: dict[str, str]) -> list[tuple[str, bytes]]:
    """Each secret as it could be written: whole, base64-encoded, or any WINDOW characters of its secret part (so a
    truncated or reformatted copy is caught too; 16 random base64url characters are 96 bits, never a coincidence)."""
    out = []
    for name, value in found.items():
        forms = {value, base64.b64encode(value.encode()).decode(), base64.urlsafe_b64encode(value.encode()).decode()}
        part = _secret_part(value)
        forms |= {part[i:i + WINDOW] for i in range(len(part) - WINDOW + 1)}
        out += [(name, form.encode()) for form in forms]
    return out


def _blob(value: object) -> bytes:
    if value is None:
        return b""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    return str(value).encode()


def _leaks(where: str, blob: bytes, needles: Iterable[tuple[str, bytes]]) -> list[str]:
    return [f"{name} in {where}" for name, needle in needles if needle in blob]


async def _scan_tables(dsn: str, needles: list[tuple[str, bytes]]) -> tuple[dict[str, int], list[str]]:
    """Every row of every table in the schema, column by column (bytea as bytes, jsonb and the rest as text)."""
    conn = await asyncpg.connect(dsn)
    try:
        tables = [r["t"] for r in await conn.fetch(
            "SELECT tablename AS t FROM pg_tables WHERE schemaname = current_schema() ORDER BY 1")]
        counts: dict[str, int] = {}
        leaks: list[str] = []
        for table in tables:
            ident = await conn.fetchval("SELECT quote_ident($1)", table)
            rows = await conn.fetch(f"SELECT * FROM {ident}")
            counts[table] = len(rows)
            for row in rows:
                for column, value in row.items():
                    leaks += _leaks(f"{table}.{column}", _blob(value), needles)
        return counts, leaks
    finally:
        await conn.close()


def _log_leaks(records: list[logging.LogRecord], needles: list[tuple[str, bytes]]) -> list[str]:
    """The formatted message and every attribute of each record (args, extras, exception text)."""
    leaks = []
    for r in records:
        trace = logging.Formatter().formatException(r.exc_info) if r.exc_info else ""
        text = f"{r.getMessage()} {r.__dict__!r} {trace}"
        leaks += _leaks(f"log record {r.name}:{r.levelname}", text.encode(), needles)
    return leaks


def _mm_env(dsn: str, admin_key: str) -> dict[str, str]:
    # Production gives every process the same environment file, the admin key included.
    return {**os.environ, "MM_DATABASE_URL": dsn, "MM_LOG_LEVEL": "DEBUG", "MM_SECRET_KEY": TEST_SECRET_KEY,
            "MM_ADMIN_TOKEN": admin_key, "PYTHONPATH": str(ROOT), "MM_ALLOW_PRIVATE_ENDPOINTS": "true"}


async def _mm(dsn: str, admin_key: str, *args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(sys.executable, "-m", "app.cli", *args, cwd=ROOT,
                                                env=_mm_env(dsn, admin_key),
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)


# Projections whose checkpoint is short of the log's last event.
_BEHIND_HEAD = ("SELECT count(*) FROM projection_checkpoints c, (SELECT tx_id, position FROM events"
                " ORDER BY tx_id DESC, position DESC LIMIT 1) h WHERE (c.tx_id, c.position) < (h.tx_id, h.position)")


async def _run_projector_and_worker(dsn: str, admin_key: str, events: int) -> tuple[bytes, bytes]:
    """`mm projector` and `mm worker` at DEBUG until the relay has handed every event of the flow to the broker and
    the task it requested has an outcome (the worker called the seller with the revealed token), then SIGTERM;
    their outputs."""
    procs = [await _mm(dsn, admin_key, "projector"), await _mm(dsn, admin_key, "worker", "--threads", "2")]
    outputs = [asyncio.create_task(p.stdout.read()) for p in procs if p.stdout is not None]  # no full pipe blocks
    try:
        conn = await asyncpg.connect(dsn)
        try:
            deadline = time.monotonic() + 60
            # The worker's own events (the run, the outcome) must also reach every read model before the stop,
            # or a table they feed (seller_stats) is scanned empty when the box is slow.
            while (await conn.fetchval("SELECT events_applied FROM projection_checkpoints WHERE name = 'relay'")
                   or 0) < events or not await conn.fetchval("SELECT count(*) FROM task_outcomes_view") \
                    or await conn.fetchval(_BEHIND_HEAD):
                assert all(p.returncode is None for p in procs), "the projector or the worker exited early"
                assert time.monotonic() < deadline, "no relay of every event and task outcome within 60 s"
                await asyncio.sleep(0.1)
        finally:
            await conn.close()
    finally:
        for p in procs:
            if p.returncode is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            await asyncio.wait_for(p.wait(), 40)
    return await outputs[0], await outputs[1]


async def _flow(client: httpx.AsyncClient, admin: dict[str, str], c: Container,
                seller_url: str) -> tuple[dict[str, str], list[httpx.Response]]:
    """Create one of every kind of secret, store them the ways the API can (events, snapshots, idempotent
    replays), and send some in refused requests too. Returns the secrets and the responses that must not show any.
    A task of another machine is routed to this one's stub-seller endpoint; a worker executes it later."""
    found: dict[str, str] = {}
    quiet: list[httpx.Response] = []
    opened = await client.post("/v1/accounts", json={"name": "secretive"},
                               headers={**admin, "Idempotency-Key": f"open-{uuid.uuid4()}"})
    assert opened.status_code == 201, opened.text
    account, found["tenant apiKey"] = opened.json()["account"]["id"], opened.json()["apiKey"]["key"]
    issued = await client.post(f"/v1/accounts/{account}/api-keys", json={"label": "second"},
                               headers={**auth(found["tenant apiKey"]), "Idempotency-Key": f"key-{uuid.uuid4()}"})
    assert issued.status_code == 201, issued.text
    found["issued apiKey"] = issued.json()["key"]
    h = auth(found["issued apiKey"])
    mid = (await active_machine(client, h)).json()["id"]

    graph = f"/v1/machines/{mid}/graph"  # so every read-model table has a row to scan
    nodes = [await client.post(f"{graph}/nodes", headers=h, json={"type": "resource", "label": f"n{i}"})
             for i in (1, 2)]
    assert all(r.status_code == 201 for r in nodes), [r.text for r in nodes]
    edge = await client.post(f"{graph}/edges", headers=h,
                             json={"from": nodes[0].json()["id"], "to": nodes[1].json()["id"], "type": "uses"})
    assert edge.status_code == 201, edge.text
    policy = await client.post("/v1/policies", headers=h, json={
        "name": "caps", "rules": [{"type": "capabilities", "deny": ["translate"]}]})
    assert policy.status_code == 201, policy.text
    deposit = await client.post(f"/v1/accounts/{account}/deposits", headers=admin,
                                json={"amount": {"amount": 500, "currency": "USD"}})
    assert deposit.status_code == 201, deposit.text
    hook = await client.post("/v1/webhook-endpoints", headers={**h, "Idempotency-Key": f"hook-{uuid.uuid4()}"},
                             json={"url": "https://hooks.example.net/mm", "types": ["*"]})
    assert hook.status_code == 201, hook.text
    hook_path = hook.headers["location"]
    found["webhook secret"] = hook.json()["secret"]
    rotated = await client.post(f"{hook_path}/rotate-secret", headers=h)
    assert rotated.status_code == 200, rotated.text
    found["webhook secret rotated"] = rotated.json()["secret"]
    for path in (hook_path, "/v1/webhook-endpoints", f"{hook_path}/deliveries"):
        quiet.append(await client.get(path, headers=h))

    endpoints = f"/v1/machines/{mid}/runtime-endpoints"
    for n in (1, 2):  # set, then rotate: both tokens were secrets once
        found[f"manual authToken {n}"] = secrets.token_urlsafe(24)
        r = await client.put(f"{endpoints}/manual", headers=h,
                             json={"url": "https://node.example.net/v1", "authToken": found[f"manual authToken {n}"]})
        assert r.status_code in (200, 201), r.text
        quiet.append(r)
    found["refused authToken"] = secrets.token_urlsafe(24)
    quiet.append(r := await client.put(f"{endpoints}/manual", headers=h,
                                       json={"url": "ftp://node.example.net", "authToken": found["refused authToken"]}))
    assert r.status_code == 400, r.text

    enrol = {**h, "Idempotency-Key": f"enrol-{uuid.uuid4()}"}
    body = {"name": "edge", "allowedProviderKeys": ["gpu"], "leaseSeconds": 600}
    first = await client.post(f"/v1/machines/{mid}/agents/enrollment", headers=enrol, json=body)
    again = await client.post(f"/v1/machines/{mid}/agents/enrollment", headers=enrol, json=body)
    assert first.status_code == again.status_code == 201, first.text + again.text
    assert again.headers["idempotent-replayed"] == "true"
    found["agentToken"] = first.json()["agentToken"]
    assert again.json()["agentToken"] == found["agentToken"]

    token = ""
    for n in range(BEATS):
        if n % 12 == 0:  # the agent rotates its endpoint's token once along the way
            token = found[f"agent endpoint authToken {n // 12}"] = secrets.token_urlsafe(24)
        ep = {"providerKey": "gpu", "url": "https://gpu.node.example.net/v1", "authToken": token}
        quiet.append(r := await client.post(HEARTBEAT, json={"agentToken": found["agentToken"], "endpoints": [ep]}))
        assert r.status_code == 200, r.text
    bad = {"providerKey": "gpu", "url": "not a url", "authToken": found["refused authToken"]}
    quiet.append(r := await client.post(HEARTBEAT, json={"agentToken": found["agentToken"], "endpoints": [bad]}))
    assert r.status_code == 400, r.text
    for path in (f"{endpoints}/manual", endpoints, f"/v1/machines/{mid}/agents", f"/v1/accounts/{account}/api-keys",
                 "/v1/audit-events?limit=200"):
        quiet.append(await client.get(path, headers=h))
    quiet += await _task(client, h, c, mid, f"{endpoints}/stub", seller_url, found)
    quiet += await _order(client, admin, found)
    for path in ("/v1/catalogue", f"/v1/runs?machineId={mid}&role=seller"):
        quiet.append(await client.get(path, headers=h))
    return found, quiet


async def _order(client: httpx.AsyncClient, admin: dict[str, str], found: dict[str, str]) -> list[httpx.Response]:
    """Another account's machine orders the listed capability (orders_view is scanned too)."""
    opened = await client.post("/v1/accounts", json={"name": "buyer"}, headers=admin)
    assert opened.status_code == 201, opened.text
    found["buyer apiKey"] = opened.json()["apiKey"]["key"]
    bh = auth(found["buyer apiKey"])
    buyer = (await active_machine(client, bh)).json()["id"]
    r = await client.post("/v1/market/orders", headers=bh, json={"buyerMachineId": buyer, "capability": "summarise",
                                                                 "input": {"text": "hello"}})
    assert r.status_code == 201, r.text
    return [r]


async def _task(client: httpx.AsyncClient, h: dict[str, str], c: Container, seller: str, endpoint: str,
                seller_url: str, found: dict[str, str]) -> list[httpx.Response]:
    """A listed capability served by the stub seller with its own token, and a buyer's task resolved to it with
    execution requested (answered 202: no worker runs yet; `mm worker` calls the seller later, at DEBUG)."""
    found["seller endpoint authToken"] = secrets.token_urlsafe(24)
    r = await client.put(endpoint, headers=h, json={"url": f"{seller_url}/echo",
                                                    "authToken": found["seller endpoint authToken"]})
    assert r.status_code == 201, r.text
    quiet = [r]
    data = {"name": "summarise", "price": {"amount": 5, "currency": "USD"}, "providerKey": "stub"}
    r = await client.post(f"/v1/machines/{seller}/graph/nodes", headers=h,
                          json={"type": "capability", "label": "summarise", "status": "active", "data": data})
    assert r.status_code == 201, r.text
    assert await wait_for(c.pool, "catalogue", LogPosition.parse(r.headers["x-log-position"]), 15)
    buyer = (await active_machine(client, h)).json()["id"]
    tasks = f"/v1/machines/{buyer}/tasks"
    r = await client.post(tasks, headers=h, json={"capability": "summarise", "input": {"text": "hello"}})
    assert r.status_code == 201, r.text
    task = r.json()["id"]
    for action, status in (("discover", 200), ("resolve", 201), ("execute", 202)):
        quiet.append(r := await client.post(f"{tasks}/{task}/{action}", headers={**h, "Prefer": "respond-async"}))
        assert r.status_code == status, r.text
    return quiet


async def test_no_secret_is_in_any_table_or_log(fresh_database: str, caplog: pytest.LogCaptureFixture,
                                                seller: StubSeller) -> None:
    caplog.set_level(logging.DEBUG)
    found = {"admin key": "mm_test_admin_" + secrets.token_urlsafe(32)}
    # Checkpoints every 5 records, so the audit projection's signed checkpoints are among the tables scanned.
    settings = Settings(projection_poll_interval_s=0.05, secret_key=TEST_SECRET_KEY, log_level="DEBUG",
                        audit_signing_key=TEST_AUDIT_KEY, audit_checkpoint_every=5)
    # The runner holds two connections per projection (lock, work) and one to listen; the app needs the rest.
    c = await Container.open(settings, fresh_database, min_size=2, max_size=20)
    runner = ProjectionRunner(c.pool, c.store, read_models(settings), poll_interval=0.05)
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
    try:
        ctx = CommandContext(at=datetime.now(UTC), actor="system:test-bootstrap")
        bootstrapped = await c.accounts.bootstrap_admin(ctx, found["admin key"])
        assert bootstrapped is not None and await wait_for(c.pool, "accounts", bootstrapped, 10)
        app = create_app(settings, container=c)
        # Litestar's logging config replaces the root's handlers and level: capture again, at DEBUG, and on
        # loggers that do not propagate to the root as well.
        caplog.set_level(logging.DEBUG)
        loggers = [logging.root, *(x for x in logging.root.manager.loggerDict.values()
                                   if isinstance(x, logging.Logger) and not x.propagate)]
        for logger in loggers:
            if caplog.handler not in logger.handlers:
                logger.addHandler(caplog.handler)
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            created, quiet = await _flow(client, auth(found["admin key"]), c, seller.url)
        found |= created
        captured_at = max(logging.getLogger("mm").getEffectiveLevel(), caplog.handler.level)
        head = await c.store.head()
        assert head is not None
        for p in read_models():
            assert await wait_for(c.pool, p.name, head, 15), f"{p.name} did not catch up"
    finally:
        stop.set()
        await task
        await c.close()
        for named in list(logging.root.manager.loggerDict.values()):
            if isinstance(named, logging.Logger) and caplog.handler in named.handlers:
                named.removeHandler(caplog.handler)
    # Keys and tokens carry a public prefix (listed, logged as ids); only the part after it is secret.
    assert all(_secret_part(v) != v for k, v in found.items() if "apiKey" in k or "agentToken" in k or "admin" in k)
    needles = _needles(found)

    # The processes that read the log after the API: a projector (read models and the relay into the
    # PostgreSQL broker) and a rebuild of the runtime read model, both logging at DEBUG.
    events = await asyncpg.connect(fresh_database)
    try:
        count = await events.fetchval("SELECT count(*) FROM events")
    finally:
        await events.close()
    projector, worker = await _run_projector_and_worker(fresh_database, found["admin key"], count)
    rebuild = await _mm(fresh_database, found["admin key"], "projections", "rebuild", "runtime")
    rebuilt, _ = await asyncio.wait_for(rebuild.communicate(), 120)
    assert rebuild.returncode == 0, rebuilt.decode()
    outputs = {"mm projector output": projector, "mm worker output": worker,
               "mm projections rebuild output": rebuilt}

    counts, leaks = await _scan_tables(fresh_database, needles)
    leaks += _log_leaks(caplog.records, needles)
    for where, blob in outputs.items():
        leaks += _leaks(where, blob, needles)
    for r in quiet:
        leaks += _leaks(f"response to {r.request.method} {r.request.url.path} ({r.status_code})", r.content, needles)
    if leaks:
        pytest.fail("secrets leaked:\n" + "\n".join(sorted(set(leaks))))

    # The scan was not vacuous: every table it must cover was there and held this flow's rows.
    empty = [t for t in (*MUST_SCAN, *(t for p in read_models() for t in p.tables)) if not counts.get(t)]
    assert not empty, f"nothing scanned in {empty}; tables: {counts}"
    assert counts["events"] > count and counts["snapshots"] >= 2, counts  # the worker's runs came after the count
    # The seller got the token it set, as the bearer of the one call the worker made.
    assert seller.stats.authorizations == [f"Bearer {found['seller endpoint authToken']}"]
    assert captured_at == logging.DEBUG and caplog.records, "the app's logs were not captured at DEBUG"
    assert all(len(b) > 0 for b in outputs.values())
    assert any(b"DEBUG" in b for b in outputs.values()), "the subprocesses did not log at DEBUG"

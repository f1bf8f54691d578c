"""Phase `market`: market orders' full lifecycle end to end through `mm api` + `mm projector` + `mm worker` and a
stub seller: POST order -> sign the intent -> POST payment -> (relay -> worker: escrow held, the task executed
against the stub) -> `executed` -> POST confirm -> released. 32 buyers at once, each its own account and wallet;
the rate is compared with the `tasks` phase of the same run when it ran first.
"""

from __future__ import annotations

import asyncio
import base64
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import urlsplit

import httpx
import psutil
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from app.sealing import new_secret_key
from app.services.task_waiter import OutcomeWaiter
from domain.shared.context import CommandContext
from domain.shared.money import Money
from ops.bench import tasks_seed
from ops.bench.commands import _wait_healthy_or_404
from ops.bench.db import reset, settle, tree_cpu
from ops.bench.http_api import _project, _runner, fan_out
from ops.bench.lean_http import LeanClient
from ops.bench.report import Report, Row
from ops.bench.tasks import CLIENT_CPU, WORKER_THREADS, Timed, _listed, mm_stack

ORDERS_RATE = 100.0  # issue 9: at least 100 orders/s end to end, 32 buyers at once
BUYERS = 32
CAPABILITY, PRICE = "bench-market-echo", 100
POLL_S = 0.02
tasks_rate: float | None = None  # the `tasks` phase's auto-task rate in this run, if it ran


@dataclass
class Buyer:
    account: uuid.UUID
    key: str
    machine: str
    private: Ed25519PrivateKey
    client: LeanClient | None = None


@dataclass
class MarketResult:
    orders: Timed
    one: Timed
    statuses: dict[str, int] = field(default_factory=dict)
    cpu_ms: dict[str, float] = field(default_factory=dict)  # CPU ms per order, by process (timed run)
    events_per_order: float = 0.0  # events the timed run appended, per order


async def _accounts(dsn: str, n: int) -> list[tuple[uuid.UUID, str]]:
    """n tenant accounts with their keys, projected so the keys authenticate."""
    async with _runner(dsn) as (runner, accounts):
        admin = CommandContext(at=datetime.now(UTC), actor="system:bench", is_admin=True)
        await accounts.bootstrap_admin(admin, "mm_bench_admin_" + uuid.uuid4().hex)
        out, last = [], None
        for i in range(n):
            account, issued = await accounts.open(admin, f"bench-buyer-{i}", is_admin=False)
            out.append((account.id, issued.key))
            last = issued.position
        await _project(runner, "accounts", last)
        return out


async def _buyer(client: httpx.AsyncClient, account: uuid.UUID, key: str) -> Buyer:
    private = Ed25519PrivateKey.generate()
    public = base64.b64encode(private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()
    h = {"Authorization": f"Bearer {key}"}
    mid = (await client.post("/v1/machines", headers=h, json={"name": "bench-buyer", "publicKey": public})).json()["id"]
    ch = (await client.post(f"/v1/machines/{mid}/identity/challenge", headers=h)).json()
    sig = base64.b64encode(private.sign(ch["nonce"].encode())).decode()
    await client.post(f"/v1/machines/{mid}/identity/verify", headers=h,
                      json={"challengeId": ch["challengeId"], "signature": sig})
    r = await client.post(f"/v1/machines/{mid}/activate", headers=h)
    assert r.status_code == 200, r.text
    return Buyer(account, key, mid, private)


async def _order(b: Buyer, listing: str, waiter: OutcomeWaiter, out: Timed) -> None:
    """One order's whole life, timed from the POST to the confirm's answer (escrow released). After paying it waits
    for the order's task outcome as the tasks phase does (the outcome row, woken by NOTIFY), then reads the order
    until the worker has recorded the execution (right after the outcome), then confirms."""
    assert b.client is not None
    c = b.client
    started = time.perf_counter()
    r = await c.post("/v1/market/orders", json={"buyerMachineId": b.machine, "listingId": listing,
                                                "input": {"text": "order"}})
    if r.status_code != 201:
        out.statuses[f"POST {r.status_code}"] += 1
        return
    order = r.json()
    signature = base64.b64encode(b.private.sign(order["paymentIntent"]["signingPayload"].encode())).decode()
    paid = await c.post(f"/v1/market/orders/{order['id']}/payment", json={"proof": {"signature": signature}})
    if paid.status_code != 200:
        out.statuses[f"pay {paid.status_code}"] += 1
        return
    await waiter.wait(uuid.UUID(order["taskId"]), 60)
    deadline = time.monotonic() + 60
    status = paid.json()["status"]
    while status not in ("executed", "execution-failed", "payment-failed") and time.monotonic() < deadline:
        status = (await c.get(f"/v1/market/orders/{order['id']}")).json()["status"]
        if status not in ("executed", "execution-failed", "payment-failed"):
            await asyncio.sleep(POLL_S)
    if status != "executed":
        out.statuses[status] += 1
        return
    done = await c.post(f"/v1/market/orders/{order['id']}/confirm")
    out.latencies.append(time.perf_counter() - started)
    out.statuses[done.json().get("escrow", {}).get("status", f"confirm {done.status_code}")] += 1


async def _run_orders(buyers: list[Buyer], listing: str, waiter: OutcomeWaiter, count: int) -> Timed:
    out = Timed()

    async def one(b: Buyer, _: int) -> None:
        await _order(b, listing, waiter, out)

    started = time.perf_counter()
    await fan_out(buyers, count, one)
    out.seconds = time.perf_counter() - started
    return out


def _backends(procs: dict[str, psutil.Process], dsn: str) -> list[psutil.Process]:
    """This database's PostgreSQL backends (the stack's pools are open by now): their CPU, unlike the whole
    server's, is not other work on a shared server (the server's shared processes, WAL writer and checkpointer,
    are left out)."""
    pg = next((p for name, p in procs.items() if name.startswith("PostgreSQL")), None)
    if pg is None:
        return []
    marker = f" {urlsplit(dsn).path.lstrip('/')} "
    out = []
    for child in pg.children():
        with suppress(psutil.Error):
            if marker in " ".join(child.cmdline()) + " ":
                out.append(child)
    return out


def _cpu(procs: list[psutil.Process]) -> float:
    total = 0.0
    for p in procs:
        with suppress(psutil.Error):
            total += sum(p.cpu_times()[:2])
    return total


@asynccontextmanager
async def _keyed_clients(port: int, buyers: list[Buyer]) -> AsyncIterator[None]:
    """One keep-alive, one-connection client per buyer, with its account's key (lean_http: the load generator's
    own CPU is taken from the services under test on this box)."""
    async with AsyncExitStack() as stack:
        for b in buyers:
            b.client = await stack.enter_async_context(
                LeanClient(f"http://127.0.0.1:{port}", {"Authorization": f"Bearer {b.key}"}))
        yield


async def run(dsn: str, orders: int, warmup: int) -> MarketResult:
    await reset(dsn)
    accounts = await _accounts(dsn, BUYERS)
    async with mm_stack(dsn, new_secret_key(), 8) as st:
        c, waiter, procs = st.c, st.waiter, st.procs
        seller = await tasks_seed.seller(c, uuid.uuid4(), "bench-market-seller", f"{st.stub}/echo",
                                         [(CAPABILITY, PRICE)])
        admin = CommandContext(at=datetime.now(UTC), actor="system:bench", is_admin=True)
        for account, _ in accounts:  # enough for every order of the run, each buyer its own wallet
            await c.ledger.deposit(admin, account, Money(PRICE * (orders + warmup), "USD"))
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{st.port}", timeout=30) as setup:
            await _wait_healthy_or_404(setup)
            setup.headers["Authorization"] = f"Bearer {accounts[0][1]}"
            await _listed(setup, CAPABILITY, 1)
            listing = (await setup.get("/v1/catalogue", params={"capability": CAPABILITY})).json()["data"][0]
            assert listing["seller"]["machineId"] == seller, listing
            buyers = [await _buyer(setup, account, key) for account, key in accounts]
        async with _keyed_clients(st.port, buyers):
            await _run_orders(buyers, listing["id"], waiter, warmup)
            async with c.pool.acquire() as conn:
                await settle(conn, analyze=True)
            backends = _backends(procs, dsn)
            before = {name: tree_cpu(p) for name, p in procs.items()}
            before_db, events_before = _cpu(backends), await c.pool.fetchval("SELECT count(*) FROM events")
            own = time.process_time()
            timed = await _run_orders(buyers, listing["id"], waiter, orders)
            cpu_ms = {name: (tree_cpu(p) - before[name]) / orders * 1000 for name, p in procs.items()}
            cpu_ms[CLIENT_CPU] = (time.process_time() - own) / orders * 1000
            if backends:
                cpu_ms["PostgreSQL (this database's backends)"] = (_cpu(backends) - before_db) / orders * 1000
            appended = await c.pool.fetchval("SELECT count(*) FROM events") - events_before
            one = await _run_orders(buyers[:1], listing["id"], waiter, max(10, orders // 30))
    return MarketResult(timed, one, dict(timed.statuses), cpu_ms, appended / orders)


def add_rows(report: Report, r: MarketResult, count: int) -> None:
    t = r.orders
    report.check("market", f"orders end to end (create -> pay -> hold -> execute -> confirm -> release), {BUYERS}"
                 " buyers at once", t.rate, ORDERS_RATE, ",.0f", " orders/s")
    report.add(Row("market", "  latency p50 / p99", f"{t.p(50):.1f} / {t.p(99):.1f} ms"))
    if tasks_rate:
        report.add(Row("market", "  ratio to the tasks phase's auto tasks/s (same run)", f"{t.rate / tasks_rate:.2f}"))
    released = r.statuses.get("released", 0)
    report.add(Row("market", "  orders released", f"{released:,} / {count:,}", f"{count:,}",
                   "PASS" if released == count else "FAIL"))
    report.add(Row("market", f"  1 buyer at a time: p50 ({r.one.count} orders)", f"{r.one.p(50):.1f} ms"))
    report.notes.append(
        f"market: `mm api` + `mm projector` + `mm worker --threads {WORKER_THREADS}` (PostgreSQL broker) and the stub"
        f" seller in its own process; {BUYERS} buyer accounts, each its own machine key and wallet; each order polls"
        f" after paying, waits for its task's outcome row (as the tasks phase does), reads the order until `executed`"
        f" ({POLL_S * 1000:.0f} ms apart), then confirms; statuses {r.statuses}; {r.events_per_order:.2f} events"
        f" per order; CPU per order: " + ", ".join(f"{name} {ms:.1f} ms" for name, ms in r.cpu_ms.items()))

"""PostgreSQL restarted mid-run under a live market (real `mm up` processes, a stub seller, buyers over HTTP):
every command the API acknowledged (2xx) is in the log afterwards, the order pipeline finishes what was paid,
`mm ledger verify` passes, and per order released + refunded == held, each at most once.

The test runs its own embedded PostgreSQL (unix socket only), so restarting it touches no other database.
The restart is an immediate shutdown (SIGQUIT to the postmaster: no checkpoint, crash recovery on start).
"""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import psutil
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from app.crypto import new_api_key
from app.embedded_db import ensure_embedded_postgres, stop_embedded_postgres
from app.outbound.stub_seller import StubSeller
from domain.market.ledger import wallet_id
from tests.integration.proc_tools import ROOT, Output, cleanup, free_port, mm_env, start_mm, tree, wait_healthy

PRICE, FUNDS, BUYERS, CAPABILITY = 25, 2_000, 4, "restart-echo"
TRANSIENT = (503,)  # the database is down: the client retries the same request (same Idempotency-Key)


class Acks:
    """What the API acknowledged (2xx), and every status it answered, from the driver threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.commands: list[tuple[str, str]] = []  # (kind, order id or account id)
        self.statuses: Counter[int] = Counter()
        self.unexpected: list[str] = []
        self.during_outage = 0  # requests that met the outage (503 or a dropped connection)

    def ack(self, kind: str, subject: str) -> None:
        with self.lock:
            self.commands.append((kind, subject))


class Client:
    def __init__(self, base: str, acks: Acks) -> None:
        self.http = httpx.Client(base_url=base, timeout=30)
        self.acks = acks

    def send(self, method: str, path: str, headers: dict[str, str], body: Any = None, *,
             deadline_s: float = 90) -> httpx.Response:
        """Retried with the same Idempotency-Key through an outage, as a client should; any other answer returns."""
        key = str(uuid.uuid4())
        sent = {**headers, "Idempotency-Key": key} if method == "POST" else headers
        deadline = time.monotonic() + deadline_s
        while True:
            try:
                r = self.http.request(method, path, headers=sent, json=body)
                with self.acks.lock:
                    self.acks.statuses[r.status_code] += 1
                # A first attempt that died with the database may still hold its key's claim for a lease:
                # 409 IDEMPOTENCY_KEY_IN_PROGRESS says retry shortly, as 503 does.
                in_progress = r.status_code == 409 and "IDEMPOTENCY_KEY_IN_PROGRESS" in r.text
                if r.status_code not in TRANSIENT and not in_progress:
                    if r.status_code >= 500:
                        with self.acks.lock:
                            self.acks.unexpected.append(f"{method} {path}: {r.status_code} {r.text[:300]}")
                    return r
            except httpx.TransportError:
                pass
            with self.acks.lock:
                self.acks.during_outage += 1
            assert time.monotonic() < deadline, f"{method} {path}: no answer but 503 for {deadline_s}s"
            time.sleep(0.25)


def _key_and_public() -> tuple[Ed25519PrivateKey, str]:
    key = Ed25519PrivateKey.generate()
    return key, base64.b64encode(key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()


def _ok(r: httpx.Response, *codes: int) -> Any:
    assert r.status_code in (codes or (200, 201)), f"{r.request.method} {r.request.url}: {r.status_code} {r.text}"
    return r.json() if r.content else None


class Party:
    def __init__(self, headers: dict[str, str], account: str, machine: str, key: Ed25519PrivateKey) -> None:
        self.headers, self.account, self.machine, self.key = headers, account, machine, key


def _party(c: Client, admin: dict[str, str], name: str) -> Party:
    opened = _ok(c.send("POST", "/v1/accounts", admin, {"name": name}), 201)
    h = {"Authorization": f"Bearer {opened['apiKey']['key']}"}
    key, public = _key_and_public()
    mid = _ok(c.send("POST", "/v1/machines", h, {"name": name, "publicKey": public}), 201)["id"]
    ch = _ok(c.send("POST", f"/v1/machines/{mid}/identity/challenge", h))
    _ok(c.send("POST", f"/v1/machines/{mid}/identity/verify", h, {
        "challengeId": ch["challengeId"], "signature": base64.b64encode(key.sign(ch["nonce"].encode())).decode()}))
    _ok(c.send("POST", f"/v1/machines/{mid}/activate", h))
    return Party(h, opened["account"]["id"], mid, key)


def _buy(c: Client, b: Party, acks: Acks, stop: threading.Event, orders: list[str]) -> None:
    try:
        _buy_until(c, b, acks, stop, orders)
    except BaseException as exc:  # a driver that dies says why, instead of silently trading no more
        acks.unexpected.append(f"buyer {b.machine}: {type(exc).__name__}: {exc}")
        raise


def _buy_until(c: Client, b: Party, acks: Acks, stop: threading.Event, orders: list[str]) -> None:
    """Create, pay, wait for the execution, confirm; over and over until told to stop."""
    while not stop.is_set():
        r = c.send("POST", "/v1/market/orders", b.headers, {
            "buyerMachineId": b.machine, "capability": CAPABILITY, "input": {"text": "hi"},
            "confirmWindowSeconds": 3})
        if r.status_code != 201:
            acks.unexpected.append(f"create: {r.status_code} {r.text[:300]}")
            return
        order = r.json()
        acks.ack("create", order["id"])
        orders.append(order["id"])
        signature = base64.b64encode(b.key.sign(order["paymentIntent"]["signingPayload"].encode())).decode()
        r = c.send("POST", f"/v1/market/orders/{order['id']}/payment", b.headers, {"proof": {"signature": signature}})
        if r.status_code != 200:
            acks.unexpected.append(f"pay: {r.status_code} {r.text[:300]}")
            return
        acks.ack("pay", order["id"])
        deadline = time.monotonic() + 60
        status = "paid"
        while status in ("paid", "escrow-held", "executing") and time.monotonic() < deadline:
            time.sleep(0.1)
            status = _ok(c.send("GET", f"/v1/market/orders/{order['id']}", b.headers))["status"]
        if status == "executed":
            r = c.send("POST", f"/v1/market/orders/{order['id']}/confirm", b.headers)
            if r.status_code == 200:
                acks.ack("confirm", order["id"])
            elif r.status_code != 409:  # the auto-confirm timer may win while the database is down
                acks.unexpected.append(f"confirm: {r.status_code} {r.text[:300]}")


def _postmaster(data_dir: Path) -> psutil.Process:
    return psutil.Process(int((data_dir / "postmaster.pid").read_text().split("\n", 1)[0]))


def _restart_immediately(data_dir: Path, down_s: float) -> None:
    """SIGQUIT: PostgreSQL's immediate shutdown (no checkpoint); the next start replays the WAL."""
    postmaster = _postmaster(data_dir)
    postmaster.send_signal(signal.SIGQUIT)
    postmaster.wait(30)
    time.sleep(down_s)
    ensure_embedded_postgres(data_dir, "mm")


async def _log(dsn: str) -> tuple[dict[str, list[tuple[str, dict[str, Any]]]], list[tuple[str, dict[str, Any]]]]:
    """Order events per order id, and every wallet movement, from the events table."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT stream_id, type, data::text AS data FROM events WHERE type LIKE"
                                " 'market:Order.%' OR type LIKE 'market:Wallet.%' ORDER BY tx_id, position")
    finally:
        await conn.close()
    orders: dict[str, list[tuple[str, dict[str, Any]]]] = defaultdict(list)
    wallets = []
    for row in rows:
        data = json.loads(row["data"])
        if row["type"].startswith("market:Order."):
            orders[str(row["stream_id"])].append((row["type"].rsplit(".", 1)[1], data))
        else:
            wallets.append((row["type"].rsplit(".", 1)[1], {**data, "wallet": str(row["stream_id"])}))
    return orders, wallets


UNSETTLED = {"ProofRecorded", "EscrowHeld", "ExecutionRequested", "Executed"}


def _unsettled(orders: dict[str, list[tuple[str, dict[str, Any]]]]) -> list[str]:
    """Paid orders whose money is not where it ends: proof without a failure, a hold without a settlement."""
    out = []
    for oid, events in orders.items():
        kinds = {k for k, _ in events}
        if "ProofRecorded" in kinds and not kinds & {"PaymentFailed", "Released", "Refunded"}:
            out.append(oid)
    return out


async def _diagnose(dsn: str, order_ids: list[str]) -> list[Any]:
    """Where each stuck order is: its events, and the broker's rows that name it."""
    conn = await asyncpg.connect(dsn)
    try:
        out = []
        for oid in order_ids:
            kinds = await conn.fetch("SELECT type, recorded_at FROM events WHERE stream_id = $1::uuid"
                                     " ORDER BY version", oid)
            messages = await conn.fetch("SELECT actor_name, state, eta, retries, attempts, updated_at"
                                        " FROM worker_messages WHERE position($1 in convert_from(message, 'UTF8'))"
                                        " > 0", oid)
            out.append((oid, [tuple(k) for k in kinds], [dict(m) for m in messages]))
        return out
    finally:
        await conn.close()


@pytest.fixture
def own_postgres() -> Iterator[tuple[Path, str]]:
    data_dir = ROOT / ".data" / "itest" / f"restart-{uuid.uuid4().hex[:8]}"
    try:
        yield data_dir, ensure_embedded_postgres(data_dir, "mm")
    finally:
        stop_embedded_postgres(data_dir)
        shutil.rmtree(data_dir, ignore_errors=True)
        (data_dir.parent / f".{data_dir.name}.lock").unlink(missing_ok=True)


@pytest.mark.slow
def test_postgres_restarted_mid_run_loses_no_acknowledged_command_and_the_ledger_holds(
    own_postgres: tuple[Path, str], tmp_path: Path
) -> None:
    data_dir, dsn = own_postgres
    admin_key, port = new_api_key()[0], free_port()
    env = mm_env(MM_DATABASE_URL=dsn, MM_PORT=str(port), MM_DATA_DIR=str(tmp_path), MM_ADMIN_TOKEN=admin_key,
                 MM_ALLOW_PRIVATE_ENDPOINTS="1", MM_READ_YOUR_WRITES_TIMEOUT_S="15")
    env.pop("MM_BROKER_URL", None)  # the PostgreSQL-backed queue: the restart takes the broker down too
    proc = start_mm("up", env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out, known, acks = Output(proc), [], Acks()
    base = f"http://127.0.0.1:{port}"
    try:
        with StubSeller() as stub:
            out.wait_for(r"^Press Ctrl-C", timeout=180)
            wait_healthy(base, proc)
            known = tree(proc.pid)
            c, admin = Client(base, acks), {"Authorization": f"Bearer {admin_key}"}
            seller = _party(c, admin, "restart-seller")
            _ok(c.send("POST", f"/v1/machines/{seller.machine}/graph/nodes", seller.headers, {
                "type": "capability", "label": CAPABILITY, "status": "active",
                "data": {"name": CAPABILITY, "price": {"amount": PRICE, "currency": "USD"}, "providerKey": "stub",
                         "inputSchema": {"type": "object"}}}), 201)
            _ok(c.send("PUT", f"/v1/machines/{seller.machine}/runtime-endpoints/stub", seller.headers,
                       {"url": f"{stub.url}/sleep/200/echo", "authToken": "restart-token"}))
            buyers = [_party(c, admin, f"restart-buyer-{i}") for i in range(BUYERS)]
            for b in buyers:
                _ok(c.send("POST", f"/v1/accounts/{b.account}/deposits", admin,
                           {"amount": {"amount": FUNDS, "currency": "USD"}}), 200, 201)
                acks.ack("deposit", b.account)
            deadline = time.monotonic() + 60  # the catalogue is a read model: wait for the listing
            while not _ok(c.send("GET", f"/v1/catalogue?capability={CAPABILITY}", buyers[0].headers))["data"]:
                assert time.monotonic() < deadline, "the listing never reached the catalogue"
                time.sleep(0.2)

            stop, orders = threading.Event(), [list[str]() for _ in buyers]
            threads = [threading.Thread(target=_buy, args=(Client(base, acks), b, acks, stop, orders[i]), daemon=True)
                       for i, b in enumerate(buyers)]
            for t in threads:
                t.start()
            deadline = time.monotonic() + 120
            while sum(k == "confirm" for k, _ in acks.commands) < 4:  # the market is running end to end
                assert time.monotonic() < deadline and not acks.unexpected, (acks.unexpected, out.text[-3000:])
                time.sleep(0.2)
            before = len(acks.commands)
            _restart_immediately(data_dir, down_s=3)
            restarted_at = time.monotonic()
            # Keep trading until commands are acknowledged again for a while after the restart.
            while len(acks.commands) < before + 12 or time.monotonic() - restarted_at < 10:
                assert time.monotonic() - restarted_at < 150 and not acks.unexpected, (
                    "no progress after the restart", acks.unexpected, dict(acks.statuses), len(acks.commands) - before,
                    [t.is_alive() for t in threads], out.text[-3000:])
                time.sleep(0.2)
            stop.set()
            for t in threads:
                t.join(120)
            assert not any(t.is_alive() for t in threads)

            settled_by = time.monotonic() + 120  # what was paid, the workers finish: held, executed, settled
            while (left := _unsettled(asyncio.run(_log(dsn))[0])) and time.monotonic() < settled_by:
                time.sleep(0.5)
            if left:
                for where in asyncio.run(_diagnose(dsn, left)):
                    print("STUCK", where)
            assert left == [], f"{len(left)} paid orders never settled"
            verify = subprocess.run([sys.executable, "-m", "app.cli", "ledger", "verify"], env=env, cwd=ROOT,
                                    capture_output=True, text=True, timeout=120)
        proc.send_signal(signal.SIGTERM)
        proc.wait(90)
    except BaseException:
        print(out.text[-6000:])
        raise
    finally:
        cleanup(proc, known)
        out.close()
    log = out.text

    assert acks.unexpected == [], (acks.unexpected, log[-8000:])  # never a 500: an outage is a 503 the client retries
    assert acks.during_outage > 0, "no request met the outage: the restart proved nothing"
    by_order, wallets = asyncio.run(_log(dsn))
    created = {oid for k, oid in acks.commands if k == "create"}
    assert len(created) >= 8 and len({oid for k, oid in acks.commands if k == "confirm"}) >= 4, acks.commands
    for kind, subject in acks.commands:  # every acknowledged command is in the log
        if kind == "deposit":
            continue
        kinds = [k for k, _ in by_order.get(subject, [])]
        want = {"create": "Placed", "pay": "ProofRecorded", "confirm": "Confirmed"}[kind]
        assert want in kinds, (kind, subject, kinds)
        if kind == "confirm":
            assert any(k == "Confirmed" and d["auto"] is False for k, d in by_order[subject]), by_order[subject]
    deposited = Counter(d["wallet"] for k, d in wallets if k == "Deposited")
    funded = [str(wallet_id(uuid.UUID(a), "USD")) for k, a in acks.commands if k == "deposit"]
    assert len(funded) == BUYERS and all(deposited[w] == 1 for w in funded), deposited
    per_order: dict[str, Counter[str]] = defaultdict(Counter)
    amounts: dict[str, Counter[str]] = defaultdict(Counter)
    for k, d in wallets:
        if k in ("EscrowHeld", "EscrowReleased", "EscrowRefunded"):
            per_order[d["order_id"]][k] += 1
            amounts[d["order_id"]][k] += d["amount"]
    for oid, n in per_order.items():  # each at most once, and the escrow leaves exactly as it came
        assert max(n.values()) == 1, (oid, n)
        assert amounts[oid]["EscrowReleased"] + amounts[oid]["EscrowRefunded"] == amounts[oid]["EscrowHeld"], oid
    assert {oid for oid, n in per_order.items() if n["EscrowHeld"]} >= {
        oid for oid, ev in by_order.items() if any(k == "EscrowHeld" for k, _ in ev)}
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert "ledger verified" in verify.stdout
    print(f"{len(acks.commands)} acknowledged commands, {len(created)} orders, {acks.during_outage} requests met"
          f" the outage; statuses {dict(acks.statuses)}; {verify.stdout.strip()}")

"""A small market for order tests: keyed buyers and sellers (the tests sign mandates and receipts), funded
wallets, orders placed and paid through the services, and the ledger's postings summed from the log."""

from __future__ import annotations

import base64
import json
import uuid
from collections import Counter
from typing import Any

import dramatiq
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from app.container import Container
from app.ledger_verify import verify_ledger
from domain.machines.aggregate import Machine
from domain.machines.commands import VerifyIdentity
from domain.market.order import Order
from domain.shared.context import CommandContext
from domain.shared.money import Money
from projections.relay import RelayProjection
from projections.runner import ProjectionRunner
from tests.factories import MachineKey, MachineKeyFactory
from tests.workers.harness import eventually
from tests.workers.tasks_market import CAPABILITY, ctx, read_models

ADMIN = "test-admin"


async def keyed_machine(c: Container, account: uuid.UUID) -> tuple[Machine, MachineKey]:
    key: MachineKey = MachineKeyFactory()
    machine = (await c.machines.register(ctx(account), name="m", description="", public_key=key.public_key,
                                         labels={})).machine
    challenge = (await c.machines.issue_challenge(ctx(account), machine.id)).machine.challenge
    assert challenge is not None
    await c.machines.verify_identity(ctx(account), machine.id, VerifyIdentity(
        challenge_id=challenge["id"], signature=key.sign(challenge["nonce"])))
    return (await c.machines.activate(ctx(account), machine.id)).machine, key


def seed_of(key: MachineKey) -> str:
    """The raw private seed, base64url: the stub seller signs receipts with it (/receipt/SEED)."""
    raw = key.private_key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


class Party:
    def __init__(self, account: uuid.UUID, machine: Machine, key: MachineKey) -> None:
        self.account, self.machine, self.key = account, machine, key


async def seller(c: Container, stub_url: str, price: int, *, path: str = "echo", receipts: bool = True) -> Party:
    account = uuid.uuid4()
    machine, key = await keyed_machine(c, account)
    url = f"{stub_url}/{path}" + (f"/receipt/{seed_of(key)}" if receipts else "")
    data = {"name": CAPABILITY, "price": {"amount": price, "currency": "USD"}, "providerKey": "stub",
            "inputSchema": {"type": "object"}}
    await c.graph.create_node(ctx(account), machine.id, node_type="capability", label=CAPABILITY, status="active",
                              data=data)
    await c.runtime.put_manual(ctx(account), machine.id, "stub", url=url, auth_token="tok", metadata={})
    return Party(account, machine, key)


async def funded_buyer(c: Container, amount: int) -> Party:
    account = uuid.uuid4()
    machine, key = await keyed_machine(c, account)
    admin = CommandContext(at=ctx().at, actor=ADMIN, is_admin=True)
    wallet = await c.ledger.wallet(admin, account, "USD")
    wallet.deposit(Money(amount, "USD"), admin.at, "test")
    await c.repo.save(wallet, admin)
    return Party(account, machine, key)


async def paid_order(c: Container, buyer: Party, *, window: int = 60, catch_up: bool = True) -> Order:
    if catch_up:
        await read_models(c)
    order = (await c.orders.place(ctx(buyer.account), buyer.machine.id, listing_id=None, capability=CAPABILITY,
                                  constraints=None, input={"text": "hi"}, confirm_window_s=window)).order
    return (await c.orders.pay(ctx(buyer.account), order.id, buyer.key.sign(order.signing_payload))).order


async def relay_until(c: Container, broker: dramatiq.Broker, order_id: uuid.UUID, statuses: set[str],
                      seconds: float = 30.0) -> Order:
    runner, relay = ProjectionRunner(c.pool, c.store, []), RelayProjection(broker)

    async def reached() -> bool:
        await runner.catch_up(relay)
        return (await c.orders.load(order_id)).status in statuses

    assert await eventually(reached, seconds), f"order {order_id}: {(await c.orders.load(order_id)).status}"
    return await c.orders.load(order_id)


async def balances(c: Container) -> Counter[str]:
    """Every wallet posting in the log summed per ledger account (`available:<id>`, `escrow:<id>`, `fees`, ...)."""
    totals: Counter[str] = Counter()
    for e in await c.pool.fetch("SELECT data FROM events WHERE type LIKE 'market:Wallet.%'"):
        data: dict[str, Any] = json.loads(e["data"]) if isinstance(e["data"], str) else e["data"]
        for p in data.get("postings", []):
            key = f"{p['ledger']}:{p['account_id']}" if p.get("account_id") else p["ledger"]
            totals[key] += p["amount"]
    assert sum(totals.values()) == 0, totals
    assert all(v >= 0 for k, v in totals.items() if k.startswith(("available", "escrow"))), totals
    return totals


async def order_events(c: Container, order_id: uuid.UUID) -> list[str]:
    return [e.type.rsplit(".", 1)[1] for e in await c.store.load(order_id)]


async def verified(dsn: str) -> None:
    """`mm ledger verify`'s checks over the whole log: balanced, never negative, each order settled once."""
    audit = await verify_ledger(dsn)
    assert audit.breaches == [], audit.breaches

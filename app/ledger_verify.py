"""`mm ledger verify`: the ledger's invariants checked from the event log alone (never from a read model).

In log order: every movement's postings balance in its one currency, and name known ledger accounts; mirror
events (seller credits, collected credits) carry no postings; no `available` or `escrow` ever goes below zero;
per currency the sum over all ledger accounts is zero; per order escrow is held at most once, released at most
once, refunded at most once, never settled without a hold, and released + refunded == held once settled; each
release's seller credit mirror carries exactly the seller's net, and no wallet counts (collects) more seller
credits than were mirrored before it.
"""

from __future__ import annotations

import re
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator
from typing import Any

import asyncpg

from app.store.event_store import COLUMNS, row_to_event
from app.store.types import RecordedEvent
from domain.market.ledger import wallet_id

W = "market:Wallet."
MOVEMENTS = frozenset({W + "Deposited", W + "Withdrawn", W + "EscrowHeld", W + "EscrowReleased", W + "EscrowRefunded"})
MIRRORS = frozenset({W + "CreditsCollected", "market:SellerCredits.Credited"})
SHARD_OPENED = "market:SellerCredits.Opened"
_LEDGERS = {"available": True, "escrow": True, "fees": False, "external": False}  # name -> per platform account?
_CURRENCY = re.compile(r"^[A-Z]{3}$")
# Every ledger event this snapshot sees, in log order. No xmin horizon as the live followers use: a one-shot
# check reads one consistent snapshot, and a transaction still running is simply not in it yet.
_SQL = f"SELECT {COLUMNS} FROM events WHERE type = ANY($1::text[]) ORDER BY events.tx_id, events.position"


class LedgerAudit:
    """Feed events in log order, then `finish()`: the breaches found (empty: the ledger holds)."""

    def __init__(self) -> None:
        self.breaches: list[str] = []
        self.balances: dict[tuple[str, str], int] = defaultdict(int)  # (ledger account key, currency) -> balance
        self.orders: dict[str, dict[str, Any]] = defaultdict(lambda: {"held": [], "released": [], "refunded": []})
        self.expected_credits: dict[str, int] = {}  # order -> the seller's net a release posted
        self.credits: dict[str, list[int]] = defaultdict(list)  # order -> mirrored seller credits
        self.shard_wallet: dict[uuid.UUID, uuid.UUID] = {}  # credit stream -> the seller's wallet
        self.credited: dict[uuid.UUID, int] = defaultdict(int)  # wallet -> credits mirrored so far
        self.collected: dict[uuid.UUID, int] = defaultdict(int)  # wallet -> credits it has counted so far
        self.movements = 0

    def feed(self, e: RecordedEvent) -> None:
        where = f"event {e.event_id} ({e.type} at {e.tx_id}.{e.position})"
        if e.type == SHARD_OPENED:
            self.shard_wallet[e.stream_id] = wallet_id(uuid.UUID(str(e.data["account_id"])), str(e.data["currency"]))
            return
        if e.type in MIRRORS:
            if e.data.get("postings"):
                self._breach(f"{where}: a mirror event carries postings (they would count twice)")
            self._mirror(where, e)
            return
        if e.type not in MOVEMENTS:
            return
        self.movements += 1
        currency = e.data.get("currency")
        postings = e.data.get("postings") or []
        if not isinstance(currency, str) or not _CURRENCY.match(currency):
            self._breach(f"{where}: no currency for its postings ({currency!r})")
            return
        if not postings:
            self._breach(f"{where}: a movement without postings")
            return
        if not self._well_formed(where, postings):
            return
        total = sum(p["amount"] for p in postings)
        if total != 0:
            self._breach(f"{where}: postings sum to {total} {currency}, not 0")
        for p in postings:
            key = f"{p['ledger']}:{p['account_id']}" if p.get("account_id") else p["ledger"]
            self.balances[(key, currency)] += p["amount"]
            if p["ledger"] in ("available", "escrow") and self.balances[(key, currency)] < 0:
                self._breach(f"{where}: {key} went negative ({self.balances[(key, currency)]} {currency})")
        self._order(where, e, currency)

    def _mirror(self, where: str, e: RecordedEvent) -> None:
        """A wallet may only count seller credits that were mirrored before it, in log order."""
        amount = int(e.data.get("amount", 0))
        if e.type == "market:SellerCredits.Credited":
            self.credits[str(e.data.get("order_id"))].append(amount)
            self.credited[self.shard_wallet.get(e.stream_id, e.stream_id)] += amount
            return
        self.collected[e.stream_id] += amount
        if self.collected[e.stream_id] > self.credited[e.stream_id]:
            self._breach(f"{where}: wallet {e.stream_id} counted {self.collected[e.stream_id]} of seller credits,"
                         f" only {self.credited[e.stream_id]} were credited")

    def _well_formed(self, where: str, postings: list[Any]) -> bool:
        for p in postings:
            if not (isinstance(p, dict) and p.get("ledger") in _LEDGERS and type(p.get("amount")) is int
                    and bool(p.get("account_id")) == _LEDGERS[p["ledger"]]):
                self._breach(f"{where}: malformed posting {p!r}")
                return False
        return True

    def _order(self, where: str, e: RecordedEvent, currency: str) -> None:
        order_id = e.data.get("order_id")
        if order_id is None:
            return
        kind = {W + "EscrowHeld": "held", W + "EscrowReleased": "released", W + "EscrowRefunded": "refunded"}[e.type]
        record = self.orders[str(order_id)]
        if record["held"] == [] and kind != "held":
            self._breach(f"{where}: order {order_id} {kind} without escrow held")
        if record[kind]:
            self._breach(f"{where}: order {order_id} {kind} twice")
        record[kind].append(int(e.data.get("amount", 0)))
        record["currency"] = currency
        if kind == "released":
            self.expected_credits[str(order_id)] = int(e.data.get("amount", 0)) - int(e.data.get("fee", 0))

    def finish(self) -> list[str]:
        sums: dict[str, int] = defaultdict(int)
        for (_, currency), balance in self.balances.items():
            sums[currency] += balance
        for currency, total in sorted(sums.items()):
            if total != 0:
                self._breach(f"{currency}: the ledger accounts sum to {total}, not 0")
        for order_id, r in self.orders.items():
            held, settled = sum(r["held"]), sum(r["released"]) + sum(r["refunded"])
            if (r["released"] or r["refunded"]) and settled != held:
                self._breach(f"order {order_id}: released {sum(r['released'])} + refunded {sum(r['refunded'])}"
                             f" != held {held} {r.get('currency')}")
        for order_id, net in self.expected_credits.items():
            mirrored = self.credits.get(order_id, [])
            if sum(mirrored) != net or len(mirrored) > 1:
                self._breach(f"order {order_id}: the seller's credit mirror is {mirrored}, the release posted {net}")
        for order_id in self.credits.keys() - self.expected_credits.keys():
            self._breach(f"order {order_id}: a seller credit without a release")
        return self.breaches

    def summary(self) -> str:
        currencies = sorted({c for _, c in self.balances})
        return (f"{self.movements} movements, {len(self.orders)} orders, currencies: "
                f"{', '.join(currencies) if currencies else 'none'}")

    def _breach(self, message: str) -> None:
        self.breaches.append(message)


async def ledger_events(conn: asyncpg.Connection, batch: int = 2000) -> AsyncIterator[RecordedEvent]:
    """Every ledger event committed in this transaction's snapshot, in log order (tx_id, position)."""
    async for row in conn.cursor(_SQL, sorted(MOVEMENTS | MIRRORS | {SHARD_OPENED}), prefetch=batch):
        yield row_to_event(row)


async def verify_ledger(dsn: str) -> LedgerAudit:
    audit = LedgerAudit()
    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            async for event in ledger_events(conn):
                audit.feed(event)
    finally:
        await conn.close()
    audit.finish()
    return audit

"""Ledger read model: every ledger account's balance per currency, and one entry per posting with the balance after.

Only movement events carry postings; the mirrors (SellerCredits.Credited, Wallet.CreditsCollected) carry none
and are not read here, so each movement counts exactly once.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg

from app.store.types import RecordedEvent
from projections.audit_names import public_name
from projections.base import Tables

NIL = uuid.UUID(int=0)  # the account id of the platform's ledger accounts (fees, external)
MOVEMENTS = frozenset({"market:Wallet.Deposited", "market:Wallet.Withdrawn", "market:Wallet.EscrowHeld",
                       "market:Wallet.EscrowReleased", "market:Wallet.EscrowRefunded"})

Key = tuple[uuid.UUID, str, str]  # (account, currency, ledger)
# Each column of a ledger entry with its SQL type (the multi-row insert's array parameters).
_ENTRY_TYPES = {"tx_id": "bigint", "position": "bigint", "line": "smallint", "event_id": "uuid", "type": "text",
                "ledger": "text", "account_id": "uuid", "currency": "text", "amount": "bigint",
                "balance_after": "bigint", "order_id": "uuid", "counterparty": "uuid", "recorded_at": "timestamptz"}
_INSERT_ENTRIES = (
    "INSERT INTO {table} (" + ", ".join(_ENTRY_TYPES) + ") SELECT * FROM unnest("
    + ", ".join(f"${i}::{t}[]" for i, t in enumerate(_ENTRY_TYPES.values(), 1)) + ")"
)


def lines_of(event: RecordedEvent) -> list[dict[str, Any]]:
    """The event's postings as entry rows (without balances), or none for anything but a movement."""
    if event.type not in MOVEMENTS:
        return []
    d = event.data
    currency = d["currency"]
    postings = d["postings"]
    seller = uuid.UUID(d["seller_account_id"]) if "seller_account_id" in d else None
    buyer = next((uuid.UUID(p["account_id"]) for p in postings if p["ledger"] == "escrow"), None)
    out = []
    for i, p in enumerate(postings):
        account = uuid.UUID(p["account_id"]) if p["account_id"] else NIL
        counterparty = None if seller is None else (seller if account == buyer else buyer)
        out.append({"tx_id": event.tx_id, "position": event.position, "line": i, "event_id": event.event_id,
                    "type": public_name(event.type), "ledger": p["ledger"], "account_id": account,
                    "currency": currency, "amount": int(p["amount"]),
                    "order_id": uuid.UUID(d["order_id"]) if d.get("order_id") else None,
                    "counterparty": counterparty, "recorded_at": datetime.fromisoformat(d["timestamp"])})
    return out


class LedgerProjection:
    name = "ledger"
    tables: tuple[str, ...] = ("ledger_balances", "ledger_entries")
    prefixes = ("market:Wallet.",)  # the shared feed moves only the checkpoint for batches without a movement

    async def apply_many(self, conn: asyncpg.Connection, events: Sequence[RecordedEvent], t: Tables) -> None:
        lines = [line for event in events for line in lines_of(event)]
        if lines:
            await _write(conn, t, lines)


async def _write(conn: asyncpg.Connection, t: Tables, lines: list[dict[str, Any]]) -> None:
    balances_table, entries_table = t["ledger_balances"], t["ledger_entries"]
    keys = list({(x["account_id"], x["currency"], x["ledger"]) for x in lines})
    rows = await conn.fetch(
        f"SELECT account_id, currency, ledger, balance, version FROM {balances_table}"
        " WHERE (account_id, currency, ledger) IN (SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[]))",
        [k[0] for k in keys], [k[1] for k in keys], [k[2] for k in keys])
    balances: dict[Key, list[Any]] = {(r["account_id"], r["currency"], r["ledger"]): [r["balance"], r["version"], None]
                                      for r in rows}
    for x in lines:
        b = balances.setdefault((x["account_id"], x["currency"], x["ledger"]), [0, 0, None])
        b[0] += x["amount"]
        b[1] += 1
        b[2] = x["recorded_at"]
        x["balance_after"] = b[0]
    # One multi-row statement per batch (executemany would run the executor once per posting).
    await conn.execute(_INSERT_ENTRIES.format(table=entries_table), *([x[c] for x in lines] for c in _ENTRY_TYPES))
    changed = [(k, b) for k, b in balances.items() if b[2] is not None]
    await conn.execute(
        f"INSERT INTO {balances_table} (account_id, currency, ledger, balance, version, updated_at)"
        " SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::bigint[], $5::bigint[], $6::timestamptz[])"
        " ON CONFLICT (account_id, currency, ledger) DO UPDATE SET balance = EXCLUDED.balance,"
        " version = EXCLUDED.version, updated_at = EXCLUDED.updated_at",
        [k[0] for k, _ in changed], [k[1] for k, _ in changed], [k[2] for k, _ in changed],
        [b[0] for _, b in changed], [b[1] for _, b in changed], [b[2] for _, b in changed])

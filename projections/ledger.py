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
from projections.rows import unnest_select

NIL = uuid.UUID(int=0)  # the account id of the platform's ledger accounts (fees, external)
MOVEMENTS = frozenset({"market:Wallet.Deposited", "market:Wallet.Withdrawn", "market:Wallet.EscrowHeld",
                       "market:Wallet.EscrowReleased", "market:Wallet.EscrowRefunded"})

# Each column of a posting line as the projection sends it (array parameters, in order), with its SQL type; the
# statement adds the balance after each line.
_LINE_TYPES = {"tx_id": "bigint", "position": "bigint", "line": "smallint", "event_id": "uuid", "type": "text",
               "ledger": "text", "account_id": "uuid", "currency": "text", "amount": "bigint", "order_id": "uuid",
               "counterparty": "uuid", "recorded_at": "timestamptz"}
_ENTRY_COLUMNS = (*_LINE_TYPES, "balance_after")
# A batch's postings in ONE statement (there were three round trips: read the balances, insert the entries, write
# the balances): each line's balance after is the account's stored balance plus the running sum of the batch's
# lines on it, in log order (the lines arrive in that order: `n`); the last line of each account sets its balance.
# The projection is the tables' only writer, inside the runner's transaction with its checkpoint.
_WRITE = (
    "WITH l AS (SELECT * FROM " + unnest_select(_LINE_TYPES)
    + " WITH ORDINALITY AS l(" + ", ".join(_LINE_TYPES) + ", n)),"
    " b AS (SELECT l.*, (COALESCE(c.balance, 0) + sum(l.amount) OVER w)::bigint AS balance_after,"
    " COALESCE(c.version, 0) + count(*) OVER w AS version"
    " FROM l LEFT JOIN {balances} AS c USING (account_id, currency, ledger)"
    " WINDOW w AS (PARTITION BY l.account_id, l.currency, l.ledger ORDER BY l.n)),"
    " e AS (INSERT INTO {entries} (" + ", ".join(_ENTRY_COLUMNS) + ") SELECT " + ", ".join(_ENTRY_COLUMNS)
    + " FROM b)"
    " INSERT INTO {balances} (account_id, currency, ledger, balance, version, updated_at)"
    " SELECT DISTINCT ON (account_id, currency, ledger) account_id, currency, ledger, balance_after, version,"
    " recorded_at FROM b ORDER BY account_id, currency, ledger, n DESC"
    " ON CONFLICT (account_id, currency, ledger) DO UPDATE SET balance = EXCLUDED.balance,"
    " version = EXCLUDED.version, updated_at = EXCLUDED.updated_at"
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
    sql = _WRITE.format(balances=t["ledger_balances"], entries=t["ledger_entries"])
    await conn.execute(sql, *([x[c] for x in lines] for c in _LINE_TYPES))

"""Orders read model: one row per order with its status, payment and escrow states (the list view)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg

from app.store.types import RecordedEvent
from domain.market import order_states as o
from projections.base import Tables
from projections.rows import unnest_select

P = "market:Order."
# The status, payment and escrow each event leaves behind (None: unchanged), as the aggregate's evolve sets them.
_EFFECT: dict[str, tuple[str | None, str | None, str | None]] = {
    "ProofRecorded": (o.PAID, o.P_PROVED, None),
    "EscrowHeld": (o.ESCROW_HELD, o.P_CAPTURED, o.E_HELD),
    "PaymentFailed": (o.PAYMENT_FAILED, o.P_FAILED, None),
    "ExecutionRequested": (o.EXECUTING, None, None),  # streams recorded before Order.EscrowHeld v2
    "Confirmed": (o.CONFIRMED, None, None),
    "Disputed": (o.DISPUTED, None, None),
}
# Each column of an order row after `id`, with its SQL type (the multi-row upsert's array parameters).
_TYPES = {"buyer_account_id": "uuid", "buyer_machine_id": "uuid", "seller_account_id": "uuid",
          "seller_machine_id": "uuid", "listing_id": "uuid", "task_id": "uuid", "capability": "text",
          "amount": "bigint", "fee": "bigint", "currency": "text", "status": "text", "payment_status": "text",
          "escrow_status": "text", "version": "bigint", "created_at": "timestamptz", "updated_at": "timestamptz"}
_COLUMNS = tuple(_TYPES)


class OrdersProjection:
    name = "orders"
    tables: tuple[str, ...] = ("orders_view",)
    prefixes = (P,)

    async def apply_many(self, conn: asyncpg.Connection, events: Sequence[RecordedEvent], t: Tables) -> None:
        """Folds a batch per order in memory (rows this batch did not create are read once), then writes."""
        rows: dict[uuid.UUID, dict[str, Any]] = {}
        mine = [e for e in events if e.type.startswith(P)]
        missing = list({e.stream_id for e in mine if e.type != P + "Placed"})
        if missing:
            for r in await conn.fetch(f"SELECT * FROM {t['orders_view']} WHERE id = ANY($1::uuid[])", missing):
                rows[r["id"]] = dict(r)
        for event in mine:
            kind, d = event.type[len(P):], event.data
            at = datetime.fromisoformat(d["timestamp"])
            if kind == "Placed":
                rows[event.stream_id] = {
                    "id": event.stream_id, "buyer_account_id": uuid.UUID(d["account_id"]),
                    "buyer_machine_id": uuid.UUID(d["machine_id"]),
                    "seller_account_id": uuid.UUID(d["seller_account_id"]),
                    "seller_machine_id": uuid.UUID(d["seller_machine_id"]), "listing_id": uuid.UUID(d["listing_id"]),
                    "task_id": uuid.UUID(d["task_id"]), "capability": d["capability"],
                    "amount": d["price"]["amount"], "fee": d["fee"]["amount"], "currency": d["price"]["currency"],
                    "status": o.AWAITING_PAYMENT, "payment_status": o.P_AWAITING, "escrow_status": o.E_NONE,
                    "created_at": at}
            row = rows.get(event.stream_id)
            if row is None:
                continue  # a rebuild that started mid-stream cannot happen; an unknown order is skipped
            _evolve(row, kind, d)
            row["version"], row["updated_at"] = event.version, at
        await _write(conn, t["orders_view"], rows)


def _evolve(row: dict[str, Any], kind: str, d: dict[str, Any]) -> None:
    if kind == "EscrowHeld" and d.get("execution_requested"):  # v2: held and executing in one event
        row["status"], row["payment_status"], row["escrow_status"] = o.EXECUTING, o.P_CAPTURED, o.E_HELD
    elif kind in _EFFECT:
        status, payment, escrow = _EFFECT[kind]
        row["status"] = status or row["status"]
        row["payment_status"] = payment or row["payment_status"]
        row["escrow_status"] = escrow or row["escrow_status"]
    elif kind == "Executed":
        row["status"] = o.EXECUTED if d["succeeded"] else o.EXECUTION_FAILED
    elif kind == "Released":
        row["escrow_status"] = o.E_SPLIT if row["escrow_status"] == o.E_REFUNDED else o.E_RELEASED
        if row["status"] in (o.CONFIRMED, o.DISPUTED):
            row["status"] = o.SETTLED
    elif kind == "Refunded":
        row["escrow_status"] = o.E_SPLIT if row["escrow_status"] == o.E_RELEASED else o.E_REFUNDED
        if row["status"] == o.DISPUTED:
            row["status"] = o.SETTLED
    elif kind == "Cancelled":
        row["status"] = o.CANCELLED
        row["payment_status"] = o.P_EXPIRED if d["expired"] else o.P_CANCELLED


async def _write(conn: asyncpg.Connection, table: str, rows: dict[uuid.UUID, dict[str, Any]]) -> None:
    if not rows:
        return
    cols = ", ".join(_COLUMNS)
    updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in _COLUMNS if c != "created_at")
    # One multi-row upsert per batch (executemany would run the executor once per order).
    await conn.execute(
        f"INSERT INTO {table} (id, {cols}) SELECT * FROM {unnest_select({'id': 'uuid', **_TYPES})}"
        f" ON CONFLICT (id) DO UPDATE SET {updates}",
        list(rows), *([r[c] for r in rows.values()] for c in _COLUMNS),
    )

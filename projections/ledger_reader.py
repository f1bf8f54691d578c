"""Queries the API runs against the ledger read model: an account's balances and its entries."""

from __future__ import annotations

import uuid
from typing import Any, TypeAlias

import asyncpg

Conn: TypeAlias = asyncpg.Pool | asyncpg.Connection


async def balances(conn: Conn, account_id: uuid.UUID, currency: str | None = None) -> list[dict[str, Any]]:
    """Per currency the account has ever moved: available and escrow (0 where one was never posted to)."""
    rows = await conn.fetch(
        "SELECT currency, COALESCE(sum(balance) FILTER (WHERE ledger = 'available'), 0)::bigint AS available,"
        " COALESCE(sum(balance) FILTER (WHERE ledger = 'escrow'), 0)::bigint AS escrow, max(updated_at) AS updated_at"
        " FROM ledger_balances WHERE account_id = $1 AND ($2::text IS NULL OR currency = $2)"
        " GROUP BY currency ORDER BY currency",
        account_id, currency,
    )
    return [dict(r) for r in rows]


async def entries(conn: Conn, account_id: uuid.UUID, *, currency: str | None, ledger: str | None,
                  order_id: uuid.UUID | None, after: tuple[int, int, int] | None,
                  limit: int) -> list[dict[str, Any]]:
    """The account's postings in log order, strictly after the (tx_id, position, line) cursor."""
    rows = await conn.fetch(
        "SELECT tx_id, position, line, event_id, type, ledger, currency, amount, balance_after, order_id,"
        " counterparty, recorded_at FROM ledger_entries WHERE account_id = $1"
        " AND ($2::text IS NULL OR currency = $2) AND ($3::text IS NULL OR ledger = $3)"
        " AND ($4::uuid IS NULL OR order_id = $4)"
        " AND ($5::bigint IS NULL OR (tx_id, position, line) > ($5, $6::bigint, $7::smallint))"
        " ORDER BY tx_id, position, line LIMIT $8",
        account_id, currency, ledger, order_id, *(after or (None, None, None)), limit,
    )
    return [dict(r) for r in rows]

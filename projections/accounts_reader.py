"""Queries the API runs against the accounts and API-key read models."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg


async def get_account(conn: asyncpg.Pool | asyncpg.Connection, account_id: uuid.UUID) -> dict[str, Any] | None:
    row = await conn.fetchrow("SELECT id, name, is_admin, created_at FROM accounts_view WHERE id = $1", account_id)
    return None if row is None else dict(row)


async def list_keys(conn: asyncpg.Pool | asyncpg.Connection, account_id: uuid.UUID) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        "SELECT id, account_id, prefix, label, created_at, revoked_at FROM api_keys_view"
        " WHERE account_id = $1 ORDER BY created_at, id",
        account_id,
    )
    return [dict(r) for r in rows]

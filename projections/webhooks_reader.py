"""Queries against the webhook endpoints read model (the API's reads, and the delivery fan-out's)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, TypeAlias

import asyncpg

Conn: TypeAlias = asyncpg.Pool | asyncpg.Connection
_COLS = ("id, account_id, url, types, description, enabled, version, created_at, updated_at,"
         " previous_secret_expires_at")
# NULL account: an admin, who sees every account's.
_VISIBLE = "($1::uuid IS NULL OR account_id = $1)"


async def get_endpoint(conn: Conn, endpoint_id: uuid.UUID, account_id: uuid.UUID | None) -> dict[str, Any] | None:
    row = await conn.fetchrow(f"SELECT {_COLS} FROM webhook_endpoints_view WHERE {_VISIBLE} AND id = $2",
                              account_id, endpoint_id)
    return None if row is None else dict(row)


async def list_endpoints(conn: Conn, *, account_id: uuid.UUID | None, enabled: bool | None,
                         after: tuple[datetime, uuid.UUID] | None, limit: int) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        f"SELECT {_COLS} FROM webhook_endpoints_view WHERE {_VISIBLE}"
        " AND ($2::boolean IS NULL OR enabled = $2)"
        " AND ($4::timestamptz IS NULL OR (created_at, id) > ($4, $5::uuid))"
        " ORDER BY created_at, id LIMIT $3",
        account_id, enabled, limit, after[0] if after else None, after[1] if after else None)
    return [dict(r) for r in rows]

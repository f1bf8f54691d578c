"""Queries the API runs against the machines read model."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import asyncpg
import msgspec

_COLS = (
    "id, account_id, name, description, public_key, labels::text AS labels, status,"
    " identity_verified_at, version, created_at, updated_at"
)


def row_to_dict(row: asyncpg.Record) -> dict[str, Any]:
    d = dict(row)
    d["labels"] = msgspec.json.decode(d["labels"])
    d["identity_verified"] = d["identity_verified_at"] is not None
    return d


async def get_machine(conn: asyncpg.Pool | asyncpg.Connection, machine_id: uuid.UUID,
                      account_id: uuid.UUID | None) -> dict[str, Any] | None:
    """`account_id` None means an admin caller (no tenant filter)."""
    row = await conn.fetchrow(
        f"SELECT {_COLS} FROM machines_view WHERE id = $1 AND ($2::uuid IS NULL OR account_id = $2)",
        machine_id, account_id,
    )
    return None if row is None else row_to_dict(row)


async def list_machines(
    conn: asyncpg.Pool | asyncpg.Connection,
    *,
    account_id: uuid.UUID | None,
    status: list[str] | None,
    labels_all: dict[str, str],
    label_keys: list[str],
    after: tuple[datetime, uuid.UUID] | None,
    limit: int,
) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        f"SELECT {_COLS} FROM machines_view"
        " WHERE ($1::uuid IS NULL OR account_id = $1)"
        " AND ($2::text[] IS NULL OR status = ANY($2))"
        " AND labels @> $3::jsonb AND labels ?& $4::text[]"
        " AND ($5::timestamptz IS NULL OR (created_at, id) > ($5, $6::uuid))"
        " ORDER BY created_at, id LIMIT $7",
        account_id, status, msgspec.json.encode(labels_all).decode(), label_keys,
        after[0] if after else None, after[1] if after else None, limit,
    )
    return [row_to_dict(r) for r in rows]

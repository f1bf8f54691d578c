"""Queries over the audit feed: filtered, account-scoped, in log order with a keyset cursor."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import asyncpg
import msgspec


async def list_audit_events(
    conn: asyncpg.Pool | asyncpg.Connection,
    *,
    account_id: uuid.UUID | None,
    types: list[str] | None,
    machine_id: uuid.UUID | None,
    subject: str | None,
    actor: str | None,
    since: datetime | None,
    until: datetime | None,
    after: tuple[int, int] | None,
    limit: int,
    correlation_id: str | None = None,
) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        "SELECT id, tx_id, position, type, occurred_at, actor, account_id, machine_id, subject,"
        " data::text AS data, request_id, correlation_id, causation_id FROM audit_events"
        " WHERE ($1::uuid IS NULL OR account_id = $1)"
        " AND ($2::text[] IS NULL OR type = ANY($2))"
        " AND ($3::uuid IS NULL OR machine_id = $3)"
        " AND ($4::text IS NULL OR subject = $4)"
        " AND ($5::text IS NULL OR actor = $5)"
        " AND ($6::timestamptz IS NULL OR occurred_at >= $6)"
        " AND ($7::timestamptz IS NULL OR occurred_at < $7)"
        " AND ($8::bigint IS NULL OR (tx_id, position) > ($8, $9::bigint))"
        " AND ($11::text IS NULL OR correlation_id = $11)"
        " ORDER BY tx_id, position LIMIT $10",
        account_id, types, machine_id, subject, actor, since, until,
        after[0] if after else None, after[1] if after else None, limit, correlation_id,
    )
    out = []
    for r in rows:
        d = dict(r)
        d["data"] = msgspec.json.decode(d["data"])
        out.append(d)
    return out

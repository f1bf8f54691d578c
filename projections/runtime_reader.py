"""Queries the API runs against the runtime read models (endpoints and agents)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, TypeAlias

import asyncpg
import msgspec

_ENDPOINT_COLS = (
    "machine_id, provider_key, url, has_auth_token, metadata::text AS metadata, source, agent_id, status,"
    " lease_expires_at, version, created_at, updated_at"
)
_AGENT_COLS = (
    "id, machine_id, name, allowed_provider_keys, lease_seconds, status, last_seen_at, last_lease_expires_at,"
    " version, created_at, updated_at"
)
Conn: TypeAlias = asyncpg.Pool | asyncpg.Connection


def _endpoint(row: asyncpg.Record) -> dict[str, Any]:
    d = dict(row)
    d["metadata"] = msgspec.json.decode(d["metadata"])
    return d


async def get_endpoint(conn: Conn, machine_id: uuid.UUID, provider_key: str) -> dict[str, Any] | None:
    row = await conn.fetchrow(
        f"SELECT {_ENDPOINT_COLS} FROM runtime_endpoints_view"
        " WHERE machine_id = $1 AND provider_key = $2 AND status <> 'deleted'",
        machine_id, provider_key,
    )
    return None if row is None else _endpoint(row)


async def list_endpoints(conn: Conn, machine_id: uuid.UUID, *, status: list[str] | None, source: str | None,
                         after: str | None, limit: int) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        f"SELECT {_ENDPOINT_COLS} FROM runtime_endpoints_view"
        " WHERE machine_id = $1 AND status <> 'deleted' AND ($2::text[] IS NULL OR status = ANY($2))"
        " AND ($3::text IS NULL OR source = $3) AND ($4::text IS NULL OR provider_key > $4)"
        " ORDER BY provider_key LIMIT $5",
        machine_id, status, source, after, limit,
    )
    return [_endpoint(r) for r in rows]


async def get_agent(conn: Conn, machine_id: uuid.UUID, agent_id: uuid.UUID) -> dict[str, Any] | None:
    row = await conn.fetchrow(
        f"SELECT {_AGENT_COLS} FROM machine_agents_view WHERE machine_id = $1 AND id = $2", machine_id, agent_id
    )
    return None if row is None else dict(row)


async def list_agents(conn: Conn, machine_id: uuid.UUID, *, status: list[str] | None,
                      after: tuple[datetime, uuid.UUID] | None, limit: int) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        f"SELECT {_AGENT_COLS} FROM machine_agents_view"
        " WHERE machine_id = $1 AND ($2::text[] IS NULL OR status = ANY($2))"
        " AND ($3::timestamptz IS NULL OR (created_at, id) > ($3, $4::uuid))"
        " ORDER BY created_at, id LIMIT $5",
        machine_id, status, after[0] if after else None, after[1] if after else None, limit,
    )
    return [dict(r) for r in rows]

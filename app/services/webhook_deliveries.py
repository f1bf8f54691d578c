"""The webhook delivery work list (rows the fan-out projection wrote): leases, the next due delivery, the
outcome of each attempt, and the CloudEvents body of a delivery's audit record."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any, TypeAlias

import asyncpg
import msgspec

from app.audit_cloudevents import COLUMNS, cloudevent

Conn: TypeAlias = asyncpg.Pool | asyncpg.Connection


async def take_lease(conn: Conn, endpoint_id: uuid.UUID, holder: uuid.UUID, lease_s: float) -> bool:
    """One drainer per endpoint (in-order delivery); a crashed holder's lease lapses after `lease_s`."""
    got = await conn.fetchval(
        "INSERT INTO webhook_endpoint_leases (endpoint_id, holder, locked_until)"
        " VALUES ($1, $2, now() + make_interval(secs => $3))"
        " ON CONFLICT (endpoint_id) DO UPDATE SET holder = EXCLUDED.holder, locked_until = EXCLUDED.locked_until"
        " WHERE webhook_endpoint_leases.locked_until < now() OR webhook_endpoint_leases.holder = $2"
        " RETURNING true", endpoint_id, holder, lease_s)
    return bool(got)


async def release_lease(conn: Conn, endpoint_id: uuid.UUID, holder: uuid.UUID) -> None:
    await conn.execute("DELETE FROM webhook_endpoint_leases WHERE endpoint_id = $1 AND holder = $2",
                       endpoint_id, holder)


async def next_pending(conn: Conn, endpoint_id: uuid.UUID) -> asyncpg.Record | None:
    """The oldest undelivered delivery in log order: later ones wait behind it (order per endpoint)."""
    return await conn.fetchrow(
        "SELECT id, event_id, attempts, next_attempt_at, first_failed_at FROM webhook_deliveries"
        " WHERE endpoint_id = $1 AND status = 'pending' ORDER BY tx_id, position LIMIT 1", endpoint_id)


async def record_attempt(conn: asyncpg.Pool, delivery_id: uuid.UUID, at: datetime, *, ok: bool,
                         status_code: int | None, error_class: str | None, error: str | None, duration_ms: int,
                         next_attempt_at: datetime | None, give_up: bool) -> int:
    """Logs the attempt and moves the delivery on, in one transaction; answers the attempt number."""
    async with conn.acquire() as c, c.transaction():
        attempt: int = await c.fetchval(
            "UPDATE webhook_deliveries SET attempts = attempts + 1, last_status = $2, last_error = $3,"
            " status = CASE WHEN $4 THEN 'delivered' WHEN $5 THEN 'failed' ELSE 'pending' END,"
            " delivered_at = CASE WHEN $4 THEN $6 ELSE delivered_at END,"
            " first_failed_at = CASE WHEN $4 THEN NULL ELSE coalesce(first_failed_at, $6) END,"
            " next_attempt_at = coalesce($7, next_attempt_at) WHERE id = $1 RETURNING attempts",
            delivery_id, status_code, error_class, ok, give_up, at, next_attempt_at)
        await c.execute(
            "INSERT INTO webhook_delivery_attempts (delivery_id, attempt, at, status_code, error_class, error,"
            " duration_ms) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            delivery_id, attempt, at, status_code, error_class, (error or "")[:500] or None, duration_ms)
    return attempt


async def retry_now(conn: Conn, endpoint_id: uuid.UUID, delivery_id: uuid.UUID) -> bool:
    """A client's retry: a failed (given up) or pending delivery becomes due now; False if there is none."""
    found = await conn.fetchval(
        "UPDATE webhook_deliveries SET status = 'pending', next_attempt_at = now(), first_failed_at = NULL"
        " WHERE id = $1 AND endpoint_id = $2 AND status <> 'delivered' RETURNING true", delivery_id, endpoint_id)
    return bool(found)


async def get_delivery(conn: Conn, endpoint_id: uuid.UUID, delivery_id: uuid.UUID) -> dict[str, Any] | None:
    row = await conn.fetchrow(f"SELECT {_COLS} FROM webhook_deliveries WHERE endpoint_id = $1 AND id = $2",
                              endpoint_id, delivery_id)
    return None if row is None else (await _with_attempts(conn, [dict(row)]))[0]


_COLS = ("id, endpoint_id, event_id, type, tx_id, position, status, attempts, next_attempt_at, last_status,"
         " last_error, created_at, delivered_at")


async def list_deliveries(conn: Conn, endpoint_id: uuid.UUID, after: tuple[int, int] | None,
                          limit: int) -> list[dict[str, Any]]:
    """Newest last (log order), each with its attempts."""
    rows = await conn.fetch(
        f"SELECT {_COLS} FROM webhook_deliveries WHERE endpoint_id = $1"
        " AND ($2::bigint IS NULL OR (tx_id, position) > ($2, $3::bigint)) ORDER BY tx_id, position LIMIT $4",
        endpoint_id, after[0] if after else None, after[1] if after else None, limit)
    return await _with_attempts(conn, [dict(r) for r in rows])


async def _with_attempts(conn: Conn, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    ids = [r["id"] for r in rows]
    attempts = await conn.fetch(
        "SELECT delivery_id, attempt, at, status_code, error_class, duration_ms FROM webhook_delivery_attempts"
        " WHERE delivery_id = ANY($1::uuid[]) ORDER BY delivery_id, attempt", ids) if ids else []
    by: dict[uuid.UUID, list[dict[str, Any]]] = {}
    for a in attempts:
        by.setdefault(a["delivery_id"], []).append(dict(a))
    for r in rows:
        r["attempt_log"] = by.get(r["id"], [])
    return rows


async def cloudevent_body(conn: Conn, event_id: uuid.UUID) -> bytes | None:
    """The audit record as one CloudEvents 1.0 structured JSON object (the export's cloudevents line);
    None while the audit projection has not written it yet."""
    r = await conn.fetchrow(f"SELECT {COLUMNS} FROM audit_events WHERE id = $1", event_id)
    return None if r is None else msgspec.json.encode(cloudevent(r))


def due_in_ms(at: datetime, now: datetime) -> int:
    return max(0, int((at - now) / timedelta(milliseconds=1)) + 1)

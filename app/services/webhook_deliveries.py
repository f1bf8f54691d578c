"""The webhook delivery work list (rows the fan-out projection wrote): leases, the next due delivery, the
outcome of each attempt, and the CloudEvents body of a delivery's audit record."""

from __future__ import annotations

import base64
import uuid
from datetime import datetime, timedelta
from typing import Any, TypeAlias

import asyncpg
import msgspec

Conn: TypeAlias = asyncpg.Pool | asyncpg.Connection
CE_SOURCE = "urn:machine-markets:audit"  # as app/api/audit_formats.py (the export) says
CONTENT_TYPE = "application/cloudevents+json"


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


def _cursor(tx_id: int, position: int) -> str:
    # The feed's cursor (app.api.pagination.encode_cursor of [tx_id, position]), spelled out: workers stay
    # clear of the HTTP layer.
    return base64.urlsafe_b64encode(f"[{tx_id},{position}]".encode()).rstrip(b"=").decode()


async def cloudevent_body(conn: Conn, event_id: uuid.UUID) -> bytes | None:
    """The audit record as one CloudEvents 1.0 structured JSON object (the export's cloudevents line);
    None while the audit projection has not written it yet."""
    r = await conn.fetchrow(
        "SELECT id, tx_id, position, type, occurred_at, actor, account_id, machine_id, subject, data::text AS data,"
        " request_id, correlation_id, causation_id, seq, prev_hash, hash FROM audit_events WHERE id = $1", event_id)
    if r is None:
        return None
    event = {
        "specversion": "1.0", "id": str(r["id"]), "source": CE_SOURCE, "type": r["type"], "time": r["occurred_at"],
        "subject": r["subject"], "datacontenttype": "application/json", "cursor": _cursor(r["tx_id"], r["position"]),
        "seq": r["seq"], "prevhash": r["prev_hash"].hex() if r["prev_hash"] else None,
        "hash": r["hash"].hex() if r["hash"] else None,
        "data": {"actor": r["actor"], "accountId": r["account_id"], "machineId": r["machine_id"],
                 "data": msgspec.Raw(r["data"].encode()), "requestId": r["request_id"],
                 "correlationId": r["correlation_id"], "causationId": r["causation_id"]},
    }
    return msgspec.json.encode({k: v for k, v in event.items() if v is not None})


def due_in_ms(at: datetime, now: datetime) -> int:
    return max(0, int((at - now) / timedelta(milliseconds=1)) + 1)

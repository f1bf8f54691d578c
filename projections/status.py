"""Lag of each projection behind the log: in events (bounded count) and in seconds."""

from __future__ import annotations

from typing import Any

import asyncpg

_LAG_COUNT_CAP = 1_000_000

_STATUS_SQL = f"""
SELECT c.name, c.tx_id::text::bigint AS tx_id, c.position, c.events_applied, c.updated_at,
       (SELECT count(*) FROM (SELECT 1 FROM events e
                              WHERE (e.tx_id, e.position) > (c.tx_id, c.position) LIMIT {_LAG_COUNT_CAP}) x)
         AS lag_events,
       COALESCE(EXTRACT(EPOCH FROM clock_timestamp() - (
           SELECT min(e.recorded_at) FROM (SELECT recorded_at FROM events e
               WHERE (e.tx_id, e.position) > (c.tx_id, c.position)
               ORDER BY e.tx_id, e.position LIMIT 1) e)), 0)::float8 AS lag_seconds
FROM projection_checkpoints c
WHERE c.name = ANY($1::text[])
ORDER BY c.name
"""


async def projection_status(conn: asyncpg.Pool | asyncpg.Connection, names: list[str]) -> list[dict[str, Any]]:
    return [dict(r) for r in await conn.fetch(_STATUS_SQL, names)]


async def oldest_write_transaction_seconds(conn: asyncpg.Pool | asyncpg.Connection) -> float:
    """Age of the oldest open transaction holding an xid: it holds back every log reader."""
    value = await conn.fetchval(
        "SELECT COALESCE(EXTRACT(EPOCH FROM max(clock_timestamp() - xact_start)), 0)::float8"
        " FROM pg_stat_activity WHERE backend_xid IS NOT NULL"
    )
    return float(value or 0.0)

"""The stream-version lookup (every lease timer, every If-Match pre-check) costs one index step however long the
stream is. An agent's endpoint stream grows by one event per heartbeat without end, and most streams are short,
so PostgreSQL 15's generic plan for `max(version)` aggregated over every index entry of the stream (this test
fails that way with `max(version)` on 15.20; PostgreSQL 18, the embedded server, plans it as one step too)."""

from __future__ import annotations

import json
import uuid
from typing import Any

import asyncpg

from app.store.event_store import STREAM_VERSION_SQL, EventStore

LONG = 600


async def _rows_read(conn: asyncpg.Connection, sql: str, stream_id: uuid.UUID) -> tuple[int, Any]:
    """Rows the plan's scan of `events` returned, and the value, under the generic plan of a prepared statement
    (as asyncpg's statement cache runs it after five calls)."""
    await conn.execute("SET plan_cache_mode = force_generic_plan")
    name = f"q_{uuid.uuid4().hex}"
    await conn.execute(f"PREPARE {name}(uuid) AS {sql}")
    plan = json.loads(await conn.fetchval(f"EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE {name}('{stream_id}')"))[0]["Plan"]
    value = await conn.fetchval(f"EXECUTE {name}('{stream_id}')")
    scans: list[int] = []

    def walk(node: dict[str, Any]) -> None:
        if node.get("Relation Name") == "events":
            scans.append(node["Actual Rows"])
        for child in node.get("Plans", []):
            walk(child)

    walk(plan)
    assert len(scans) == 1, plan
    return scans[0], value


async def test_the_version_of_a_long_stream_among_short_ones_is_one_index_step(fresh_database: str) -> None:
    conn = await asyncpg.connect(fresh_database)
    try:
        long_id = uuid.uuid4()
        await conn.execute(
            "INSERT INTO events (event_id, stream_id, stream_type, version, type, data)"
            " SELECT gen_random_uuid(), s.id, 'test:Short', v, 'test:Short.Happened', '{}'"
            " FROM (SELECT gen_random_uuid() AS id FROM generate_series(1, 10000)) s, generate_series(1, 1) v")
        await conn.execute(
            "INSERT INTO events (event_id, stream_id, stream_type, version, type, data)"
            " SELECT gen_random_uuid(), $1, 'test:Long', v, 'test:Long.Happened', '{}'"
            " FROM generate_series(1, $2) v", long_id, LONG)
        await conn.execute("ANALYZE events")
        read, version = await _rows_read(conn, STREAM_VERSION_SQL, long_id)
        assert version == LONG and read == 1
        pool = await asyncpg.create_pool(fresh_database, min_size=1, max_size=1)
        try:
            store = EventStore(pool)
            assert await store.stream_version(long_id) == LONG
            assert await store.stream_version(uuid.uuid4()) is None
        finally:
            await pool.close()
    finally:
        await conn.close()

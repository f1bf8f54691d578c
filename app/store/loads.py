"""Current-state loads of one or several streams in one statement: each stream's snapshot and the events after it."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence

import asyncpg

from app.store.event_store import COLUMNS, as_uuid, row_to_event
from app.store.types import RecordedEvent

log = logging.getLogger("mm.store")

# A snapshot travels as a row of the events' shape whose event_id is NULL (data = its state), ahead of the events
# after it. LATERAL keeps both lookups on their indexes whatever the planner guesses for unnest's row count.
_LOAD_STREAMS = """
WITH wanted AS MATERIALIZED (
    SELECT * FROM unnest($1::uuid[], $2::text[], $3::int[]) AS w(stream_id, stream_type, schema_version)),
s AS MATERIALIZED (
    SELECT w.stream_id, sn.version, sn.state, sn.taken_at FROM wanted w CROSS JOIN LATERAL (
        SELECT version, state, taken_at FROM snapshots WHERE snapshots.stream_id = w.stream_id
        AND snapshots.stream_type = w.stream_type AND snapshots.schema_version = w.schema_version) sn)
SELECT NULL::bigint AS position, NULL::bigint AS tx_id, NULL::uuid AS event_id, s.stream_id,
    NULL::text AS stream_type, s.version, NULL::text AS type, s.state::text AS data, NULL::text AS metadata,
    s.taken_at AS recorded_at FROM s
UNION ALL
SELECT e.* FROM wanted w CROSS JOIN LATERAL (
    SELECT position, tx_id::text::bigint AS tx_id, event_id, stream_id, stream_type, version, type,
        data::text AS data, metadata::text AS metadata, recorded_at FROM events
    WHERE events.stream_id = w.stream_id
    AND events.version > COALESCE((SELECT s.version FROM s WHERE s.stream_id = w.stream_id), 0)) e
ORDER BY stream_id, version
"""


class StreamLoad:
    """One stream as loaded: its snapshot row (version, state JSON, taken at), if any, and the events after it."""

    __slots__ = ("events", "snapshot")

    def __init__(self) -> None:
        self.snapshot: asyncpg.Record | None = None
        self.events: list[RecordedEvent] = []


async def load_streams(pool: asyncpg.Pool,
                       wanted: Sequence[tuple[uuid.UUID, str, int | None]]) -> dict[uuid.UUID, StreamLoad]:
    """(stream id, stream type, snapshot schema version or None for no snapshot) -> each stream's load."""
    unique = list({w[0]: w for w in wanted}.values())  # a stream asked for twice is read once
    out = {w[0]: StreamLoad() for w in unique}
    async with pool.acquire() as conn:
        try:
            rows = await conn.fetch(_LOAD_STREAMS, [w[0] for w in unique], [w[1] for w in unique],
                                    [w[2] for w in unique])
        except asyncpg.PostgresError as exc:
            # A snapshot is a cache: if they cannot be read, replay the streams whole.
            log.warning("snapshots not read, replaying %d stream(s): %s", len(unique), exc)
            rows = await conn.fetch(f"SELECT {COLUMNS} FROM events WHERE stream_id = ANY($1::uuid[])"
                                    " ORDER BY stream_id, version", [w[0] for w in unique])
    for row in rows:
        load = out[as_uuid(row["stream_id"])]
        if row["event_id"] is None:
            load.snapshot = row
        else:
            load.events.append(row_to_event(row))
    return out

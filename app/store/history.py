"""Reads of the log for debugging: a stream's history page by page, its version at a moment, a trace's events."""

from __future__ import annotations

import uuid
from datetime import datetime

import asyncpg

from app.store.event_store import COLUMNS, row_to_event
from app.store.types import RecordedEvent

# A trace is one request's consequences; more than this is a runaway loop, not something to page through.
MAX_TRACE_EVENTS = 5000


def owner_of(event: RecordedEvent) -> uuid.UUID | None:
    """The account a stream belongs to: its aggregate's account (metadata ownerAccountId), the account itself
    for an account's own stream, else the acting account. None: only admins may read it."""
    raw = event.metadata.get("ownerAccountId")
    if raw is None and event.stream_type == "accounts:Account":
        return event.stream_id
    raw = raw or event.metadata.get("accountId")
    try:
        return uuid.UUID(str(raw)) if raw else None
    except ValueError:
        return None


class History:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def first(self, stream_id: uuid.UUID) -> RecordedEvent | None:
        """The stream's first event (its type and owner), or None if it has none."""
        row = await self.pool.fetchrow(f"SELECT {COLUMNS} FROM events WHERE stream_id = $1 AND version = 1",
                                       stream_id)
        return None if row is None else row_to_event(row)

    async def page(self, stream_id: uuid.UUID, *, from_version: int, to_version: int | None, limit: int
                   ) -> list[RecordedEvent]:
        """Events from `from_version` (inclusive) to `to_version` (inclusive, if given), in version order."""
        rows = await self.pool.fetch(
            f"SELECT {COLUMNS} FROM events WHERE stream_id = $1 AND version >= $2"
            " AND ($3::bigint IS NULL OR version <= $3) ORDER BY version LIMIT $4",
            stream_id, from_version, to_version, limit,
        )
        return [row_to_event(r) for r in rows]

    async def version_at(self, stream_id: uuid.UUID, at: datetime) -> int | None:
        """The stream's version at moment `at` (the last event recorded at or before it); None: not yet begun."""
        version: int | None = await self.pool.fetchval(
            # Backward from the stream's end (see EventStore.stream_version), not an aggregate over all of it.
            "SELECT version FROM events WHERE stream_id = $1 AND recorded_at <= $2 ORDER BY version DESC LIMIT 1",
            stream_id, at
        )
        return version

    async def traced(self, trace_id: str) -> list[RecordedEvent]:
        """Every event carrying this correlation id, or the correlation ids of the request with this id, in
        log order. Actors copy the triggering event's correlation id, so this is the whole causal tree.
        At most MAX_TRACE_EVENTS + 1: more than MAX_TRACE_EVENTS means the trace is cut short."""
        async with self.pool.acquire() as conn:
            aliases = await conn.fetch(
                "SELECT DISTINCT metadata->>'correlationId' AS c FROM events WHERE metadata->>'requestId' = $1"
                " AND metadata->>'requestId' <> metadata->>'correlationId'", trace_id,
            )
            ids = [trace_id, *(r["c"] for r in aliases if r["c"])]
            rows = await conn.fetch(
                f"SELECT {COLUMNS} FROM events WHERE metadata->>'correlationId' = ANY($1::text[])"
                " ORDER BY events.tx_id, events.position LIMIT $2",
                ids, MAX_TRACE_EVENTS + 1,  # one more than shown tells the caller the trace was cut short
            )
        return [row_to_event(r) for r in rows]

    async def streams(self, stream_ids: list[uuid.UUID], up_to: dict[uuid.UUID, int]) -> list[RecordedEvent]:
        """Whole streams from version 1 to `up_to[stream]`, for a debug bundle that replays them offline."""
        rows = await self.pool.fetch(
            f"SELECT {COLUMNS} FROM events e JOIN unnest($1::uuid[], $2::bigint[]) AS w(sid, upto)"
            " ON e.stream_id = w.sid AND e.version <= w.upto ORDER BY e.stream_id, e.version",
            stream_ids, [up_to[s] for s in stream_ids],
        )
        return [row_to_event(r) for r in rows]

"""Current-state loads of one or several streams in one statement: each stream's snapshot and the events after it."""

from __future__ import annotations

import functools
import logging
import uuid
from collections.abc import Sequence

import asyncpg

from app.db import database_unavailable
from app.store.event_store import COLUMNS, as_uuid, row_to_event
from app.store.types import RecordedEvent

log = logging.getLogger("mm.store")

# One block per stream, scalar parameters only: the plan of each variant is cached and reused (an unnest() of
# array parameters was planned afresh on every call, which doubled PostgreSQL's CPU per heartbeat). A snapshot
# travels as a row of the events' shape whose event_id is NULL (data = its state), ahead of the events after it.
_SNAPSHOT = (
    "SELECT NULL::bigint AS position, NULL::bigint AS tx_id, NULL::uuid AS event_id, stream_id,"
    " NULL::text AS stream_type, version, NULL::text AS type, state::text AS data, NULL::text AS metadata,"
    " taken_at AS recorded_at FROM snapshots WHERE stream_id = ${i} AND stream_type = ${t}"
    " AND schema_version = ${v}"
)
_AFTER_SNAPSHOT = (
    f"SELECT {COLUMNS} FROM events WHERE stream_id = ${{i}} AND version > COALESCE((SELECT version FROM snapshots"
    " WHERE stream_id = ${i} AND stream_type = ${t} AND schema_version = ${v}), 0)"
)
_WHOLE = f"SELECT {COLUMNS} FROM events WHERE stream_id = ${{i}}"
# A stream this process holds a copy of (app/store/aggregate_cache.py): the copy's own last event, then the rest.
_FROM = f"SELECT {COLUMNS} FROM events WHERE stream_id = ${{i}} AND version >= ${{f}}"
SNAPSHOT, WHOLE, FROM = "snapshot", "whole", "from"


@functools.lru_cache(maxsize=256)
def _sql(kinds: tuple[str, ...]) -> str:
    """The statement for streams read from their snapshot (SNAPSHOT: id, type, schema version), whole (WHOLE: id)
    or from a version on (FROM: id, version)."""
    blocks, n = [], 0
    for kind in kinds:
        if kind == SNAPSHOT:
            i, t, v = n + 1, n + 2, n + 3
            blocks += [_SNAPSHOT.format(i=i, t=t, v=v), _AFTER_SNAPSHOT.format(i=i, t=t, v=v)]
            n += 3
        elif kind == FROM:
            blocks.append(_FROM.format(i=n + 1, f=n + 2))
            n += 2
        else:
            blocks.append(_WHOLE.format(i=n + 1))
            n += 1
    return " UNION ALL ".join(f"({b})" for b in blocks) + " ORDER BY 4, 6"  # stream, version


def _block(w: tuple[uuid.UUID, str, int | None, int | None]) -> tuple[str, tuple[object, ...]]:
    """How one wanted stream is read (see _sql), and its parameters."""
    stream_id, stream_type, schema, start = w
    if start is not None:
        return FROM, (stream_id, start)
    return (SNAPSHOT, (stream_id, stream_type, schema)) if schema is not None else (WHOLE, (stream_id,))


class StreamLoad:
    """One stream as loaded: its snapshot row (version, state JSON, taken at), if any, and the events after it."""

    __slots__ = ("events", "snapshot")

    def __init__(self) -> None:
        self.snapshot: asyncpg.Record | None = None
        self.events: list[RecordedEvent] = []


async def load_streams(pool: asyncpg.Pool, wanted: Sequence[tuple[uuid.UUID, str, int | None, int | None]],
                       ) -> dict[uuid.UUID, StreamLoad]:
    """(stream id, stream type, snapshot schema version or None for no snapshot, version to read from or None)
    -> each stream's load: from that version on if one is given, else from its snapshot, else whole."""
    unique = list({w[0]: w for w in wanted}.values())  # a stream asked for twice is read once
    out = {w[0]: StreamLoad() for w in unique}
    async with pool.acquire() as conn:
        try:
            blocks = [_block(w) for w in unique]
            rows = await conn.fetch(_sql(tuple(kind for kind, _ in blocks)), *(p for _, ps in blocks for p in ps))
        except asyncpg.PostgresError as exc:
            if database_unavailable(exc):
                # The connection or the server is gone (or the statement timed out): there is no snapshot
                # problem to work around, and a dead connection is already back in the pool, detached.
                raise
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

"""Snapshots of long streams: taken every SNAPSHOT_EVERY events, used to start a load part-way."""

from __future__ import annotations

import logging
import uuid
from typing import Any

import asyncpg
from eventsourcing.domain import Aggregate, Snapshot
from eventsourcing.persistence import DatetimeAsISO, DecimalAsStr, JSONTranscoder, UUIDAsHex
from eventsourcing.utils import get_topic

from app.db import database_unavailable

log = logging.getLogger("mm.store")

# eventsourcing's transcoder tags UUIDs, datetimes and decimals, so nested values come back typed.
_transcoder = JSONTranscoder()
for _transcoding in (UUIDAsHex(), DatetimeAsISO(), DecimalAsStr()):
    _transcoder.register(_transcoding)


def snapshot_every(cls: type[Aggregate]) -> int | None:
    """An aggregate opts in with a class attribute SNAPSHOT_EVERY = N (events between snapshots)."""
    every = getattr(cls, "SNAPSHOT_EVERY", None)
    return int(every) if every else None


def schema_version(cls: type[Aggregate]) -> int:
    return int(getattr(cls, "SNAPSHOT_VERSION", 1))


class SnapshotStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def save(self, aggregate: Aggregate, stream_type: str) -> None:
        """Best effort: a snapshot is a cache, so failing to write one must not fail the command."""
        try:
            snapshot = Snapshot.take(aggregate)
            # One statement: the latest (for loads now) and the history (for time travel) are written together.
            await self.pool.execute(
                "WITH kept AS (INSERT INTO snapshot_history (stream_id, stream_type, version, schema_version, state)"
                " VALUES ($1, $2, $3, $4, $5::jsonb) ON CONFLICT DO NOTHING)"
                " INSERT INTO snapshots (stream_id, stream_type, version, schema_version, state)"
                " VALUES ($1, $2, $3, $4, $5::jsonb)"
                " ON CONFLICT (stream_id) DO UPDATE SET version = EXCLUDED.version,"
                " schema_version = EXCLUDED.schema_version, state = EXCLUDED.state, taken_at = now()"
                " WHERE snapshots.version < EXCLUDED.version",
                aggregate.id, stream_type, aggregate.version, schema_version(type(aggregate)),
                _transcoder.encode(snapshot.state).decode(),
            )
        except Exception:  # any failure, even an untranscodable value: a snapshot is a cache, the command stands
            log.exception("snapshot of %s at version %d not saved", aggregate.id, aggregate.version)

    async def load(self, cls: type[Aggregate], stream_id: uuid.UUID, stream_type: str,
                   at_most: int | None = None) -> Aggregate | None:
        """The latest usable snapshot, or None (then the caller replays the whole stream).

        `at_most` (time travel): a snapshot above that version holds state from later events and is never used.
        """
        try:
            if at_most is None:
                row = await self.pool.fetchrow(
                    "SELECT version, state::text AS state, taken_at FROM snapshots"
                    " WHERE stream_id = $1 AND stream_type = $2 AND schema_version = $3",
                    stream_id, stream_type, schema_version(cls),
                )
            else:  # the nearest at or below: from the history, or the latest (taken before the history existed)
                row = await self.pool.fetchrow(
                    "SELECT version, state::text AS state, taken_at FROM ("
                    " (SELECT version, state, taken_at FROM snapshot_history WHERE stream_id = $1 AND stream_type = $2"
                    "  AND schema_version = $3 AND version <= $4 ORDER BY version DESC LIMIT 1)"
                    " UNION ALL"
                    " SELECT version, state, taken_at FROM snapshots WHERE stream_id = $1 AND stream_type = $2"
                    "  AND schema_version = $3 AND version <= $4) s ORDER BY version DESC LIMIT 1",
                    stream_id, stream_type, schema_version(cls), at_most,
                )
        except asyncpg.PostgresError as exc:
            if database_unavailable(exc):
                raise  # an outage is not an unreadable snapshot: the replay would meet it too
            log.warning("snapshot of %s not read, replaying the stream: %s", stream_id, exc)
            return None
        return None if row is None else restore(cls, stream_id, row["version"], row["state"], row["taken_at"])


def restore(cls: type[Aggregate], stream_id: uuid.UUID, version: int, state_json: str, taken_at: Any) -> Aggregate:
    """The aggregate a snapshot row holds."""
    state: dict[str, Any] = _transcoder.decode(state_json.encode())
    snapshot = Snapshot(originator_id=stream_id, originator_version=version, timestamp=taken_at,
                        topic=get_topic(cls), state=state)
    aggregate = snapshot.mutate(None)
    assert isinstance(aggregate, cls)
    return aggregate

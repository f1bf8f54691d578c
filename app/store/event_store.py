"""EventStore: append with optimistic concurrency and idempotent event ids; gap-free global reads."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any, Protocol

import asyncpg
import msgspec

from app.store.credentials import ApiKeyCredentials
from app.store.group_append import INSERT_ROWS, RECORDED, GroupAppender, row_columns, version_taken
from app.store.notifier import Notifier
from app.store.types import AppendResult, LogPosition, NewEvent, RecordedEvent
from domain.shared.errors import ConcurrencyConflict

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(dict[str, Any]).decode

COLUMNS = (
    "position, tx_id::text::bigint AS tx_id, event_id, stream_id, stream_type, version, type,"
    " data::text AS data, metadata::text AS metadata, recorded_at"
)

_INSERT_MANY = f"{INSERT_ROWS} ON CONFLICT (event_id) DO NOTHING RETURNING {RECORDED}"
STREAM_VERSION_SQL = "SELECT version FROM events WHERE stream_id = $1 ORDER BY version DESC LIMIT 1"
# Only rows whose writing transaction is older than every transaction still running are safe to
# hand out: a smaller position may still commit later, but a smaller tx_id below xmin cannot.
READ_ALL_SQL = (
    f"SELECT {COLUMNS} FROM events"
    " WHERE (tx_id, position) > ($1::text::xid8, $2::bigint)"
    " AND tx_id < pg_snapshot_xmin(pg_current_snapshot())"
    # Qualified: a bare tx_id here would sort by the bigint output alias and bypass the index.
    " ORDER BY events.tx_id, events.position LIMIT $3"
)


def as_uuid(value: uuid.UUID) -> uuid.UUID:
    # asyncpg answers its own UUID subclass; ids flow into aggregate state and snapshots, whose transcoder
    # knows only the exact uuid.UUID type. Built from the int without UUID.__init__'s parsing: a third of the
    # cost, and every loaded or followed event converts two ids.
    if type(value) is uuid.UUID:
        return value
    exact = object.__new__(uuid.UUID)
    object.__setattr__(exact, "int", value.int)
    object.__setattr__(exact, "is_safe", uuid.SafeUUID.unknown)
    return exact


def row_to_event(row: asyncpg.Record) -> RecordedEvent:
    return RecordedEvent(
        position=row["position"],
        tx_id=row["tx_id"],
        event_id=as_uuid(row["event_id"]),
        stream_id=as_uuid(row["stream_id"]),
        stream_type=row["stream_type"],
        version=row["version"],
        type=row["type"],
        data=_decode(row["data"]),
        metadata=_decode(row["metadata"]),
        recorded_at=row["recorded_at"],
    )


class InlineProjection(Protocol):
    """Rows the write side keeps in the append's own transaction (only where a projection's lag is not
    acceptable, e.g. authentication). `types` are the event types it reads."""

    types: frozenset[str]

    async def apply(self, conn: asyncpg.Connection, events: Sequence[NewEvent]) -> None: ...

    def committed(self, events: Sequence[NewEvent]) -> None:
        """Called after the append's transaction has committed (e.g. to drop an in-process cache)."""


class EventStore:
    def __init__(self, pool: asyncpg.Pool, notifier: Notifier | None = None,
                 inline: Sequence[InlineProjection] = (ApiKeyCredentials(),)) -> None:
        self.pool = pool
        self.notifier = notifier
        self.inline = tuple(inline)
        self._group: GroupAppender | None = None

    async def append(self, events: Sequence[NewEvent]) -> AppendResult:
        """Append one command's events atomically. The versions are the optimistic-concurrency check."""
        if not events:
            raise ValueError("nothing to append")
        inline = [p for p in self.inline if any(e.type in p.types for e in events)]
        try:
            if inline:
                outcome = await self._append_with(inline, events)
            else:
                if self._group is None:
                    self._group = GroupAppender(self.pool)
                outcome = await self._group.append(events)  # with the other appends in flight
        except asyncpg.DeadlockDetectedError:
            # Waiting on a concurrent append of the same stream versions while it waited on ours: PostgreSQL
            # rolled this one back. It is the same clash as a version taken, met in another order.
            raise version_taken(events[0].stream_id) from None
        if isinstance(outcome, LogPosition):  # all of them recorded before: a retry
            return AppendResult(last=outcome, duplicate=True)
        for projection in inline:
            projection.committed(events)
        if self.notifier is not None:
            self.notifier.poke()
        last = max(outcome, key=lambda r: (r["tx_id"], r["position"]))
        return AppendResult(last=LogPosition(last["tx_id"], last["position"]), events=_recorded(events, outcome))

    async def _append_with(self, inline: Sequence[InlineProjection],
                           events: Sequence[NewEvent]) -> list[asyncpg.Record] | LogPosition:
        """The events and the inline projections' rows in one transaction: the rows recorded, or where the last
        event was recorded before (a retry)."""
        try:
            async with self.pool.acquire() as conn:
                async with conn.transaction():
                    rows: list[asyncpg.Record] = await conn.fetch(_INSERT_MANY, *_columns(events))
                    if 0 < len(rows) < len(events):
                        # Some ids recorded, some not: not a retry of one command. Refuse it whole.
                        raise ConcurrencyConflict("part of this batch of events was already recorded")
                    if rows:  # a retry recorded nothing, and so changes nothing here either
                        for projection in inline:
                            await projection.apply(conn, events)
                if not rows:
                    return await self._position_of(conn, events[-1].event_id)
        except asyncpg.UniqueViolationError as exc:
            if exc.constraint_name == "events_stream_version_key":
                raise version_taken(events[0].stream_id) from None
            raise
        return rows

    async def close(self) -> None:
        """Wait for the grouped appends being written (before the pool closes under them)."""
        if self._group is not None:
            await self._group.close()

    async def load(self, stream_id: uuid.UUID, after_version: int = 0,
                   to_version: int | None = None) -> list[RecordedEvent]:
        """The stream's events after `after_version`, up to `to_version` (inclusive) if given."""
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
                f"SELECT {COLUMNS} FROM events WHERE stream_id = $1 AND version > $2"
                " AND ($3::bigint IS NULL OR version <= $3) ORDER BY version",
                stream_id,
                after_version,
                to_version,
            )
        return [row_to_event(r) for r in rows]

    async def stream_version(self, stream_id: uuid.UUID) -> int | None:
        """The stream's current version (one index lookup), or None if it has no events."""
        async with self.pool.acquire() as conn:
            # Not max(version): for a stream the planner takes for short (most streams are), its generic plan
            # aggregates over every index entry of the stream, and an agent's endpoint stream grows by one event
            # per heartbeat, without end. This is one backward index step however long the stream.
            version: int | None = await conn.fetchval(STREAM_VERSION_SQL, stream_id)
        return version

    async def read_all(
        self, after: LogPosition, limit: int = 500, conn: asyncpg.Connection | None = None
    ) -> list[RecordedEvent]:
        """The next committed events after `after`, in the stable (tx_id, position) order; never skips one."""
        if conn is None:
            async with self.pool.acquire() as own:
                rows = await own.fetch(READ_ALL_SQL, str(after.tx_id), after.position, limit)
        else:
            rows = await conn.fetch(READ_ALL_SQL, str(after.tx_id), after.position, limit)
        return [row_to_event(r) for r in rows]

    async def head(self) -> LogPosition | None:
        """The last event committed and visible to readers (what a fully caught-up follower has seen)."""
        async with self.pool.acquire() as conn:
            row = await conn.fetchrow(
                "SELECT position, tx_id::text::bigint AS tx_id FROM events"
                " WHERE tx_id < pg_snapshot_xmin(pg_current_snapshot())"
                " ORDER BY events.tx_id DESC, events.position DESC LIMIT 1"
            )
        return None if row is None else LogPosition(row["tx_id"], row["position"])

    async def event(self, event_id: uuid.UUID) -> RecordedEvent | None:
        async with self.pool.acquire() as conn:
            row = await conn.fetchrow(f"SELECT {COLUMNS} FROM events WHERE event_id = $1", event_id)
        return None if row is None else row_to_event(row)

    async def command_of(self, event_id: uuid.UUID) -> LogPosition | None:
        """Where the append that recorded `event_id` ended, or None if no append recorded it: its transaction's
        last event. An append's events share one transaction, which may hold other commands' appends
        too (GroupAppender): then this is at or after the command's own last event, never before it."""
        async with self.pool.acquire() as conn:
            row = await conn.fetchrow(
                "SELECT e.tx_id::text::bigint AS tx_id, max(e.position) AS position FROM events e"
                " WHERE e.tx_id = (SELECT tx_id FROM events WHERE event_id = $1) GROUP BY e.tx_id", event_id)
        return None if row is None else LogPosition(row["tx_id"], row["position"])

    async def _position_of(self, conn: asyncpg.Connection, event_id: uuid.UUID) -> LogPosition:
        row = await conn.fetchrow(
            "SELECT position, tx_id::text::bigint AS tx_id FROM events WHERE event_id = $1", event_id
        )
        assert row is not None  # the conflict that brought us here proves the row exists
        return LogPosition(row["tx_id"], row["position"])


def _recorded(events: Sequence[NewEvent], rows: Sequence[asyncpg.Record]) -> tuple[RecordedEvent, ...]:
    """The appended events as recorded: each new event with its row's position, tx_id and recorded_at."""
    by_id = {as_uuid(r["event_id"]): r for r in rows}
    return tuple(
        RecordedEvent(position=r["position"], tx_id=r["tx_id"], event_id=e.event_id, stream_id=e.stream_id,
                      stream_type=e.stream_type, version=e.version, type=e.type, data=e.data, metadata=e.metadata,
                      recorded_at=r["recorded_at"])
        for e in events if (r := by_id.get(e.event_id)) is not None
    )


def _columns(events: Sequence[NewEvent]) -> list[list[Any]]:
    return row_columns(events, [_encode(e.data).decode() for e in events],
                       [_encode(e.metadata).decode() for e in events])

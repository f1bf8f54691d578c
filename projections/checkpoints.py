"""Projection checkpoints: read and advance them inside the projection's own transaction."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from app.store.types import LogPosition


async def ensure(conn: asyncpg.Connection, name: str) -> None:
    await conn.execute("INSERT INTO projection_checkpoints (name) VALUES ($1) ON CONFLICT DO NOTHING", name)


async def lock(conn: asyncpg.Connection, name: str) -> LogPosition:
    """Lock the checkpoint row for this transaction: the one guard against two writers applying a batch."""
    row = await conn.fetchrow(
        "SELECT tx_id::text::bigint AS tx_id, position FROM projection_checkpoints WHERE name = $1 FOR UPDATE",
        name,
    )
    if row is None:
        raise LookupError(f"no checkpoint row for projection {name!r}")
    return LogPosition(row["tx_id"], row["position"])


async def advance(
    conn: asyncpg.Connection, name: str, to: LogPosition, applied: int, last_event_at: datetime | None
) -> None:
    await conn.execute(
        "UPDATE projection_checkpoints SET tx_id = $2::text::xid8, position = $3,"
        " events_applied = events_applied + $4, updated_at = now(),"
        " last_event_at = COALESCE($5, last_event_at) WHERE name = $1",
        name,
        str(to.tx_id),
        to.position,
        applied,
        last_event_at,
    )


async def advance_from(
    conn: asyncpg.Connection, name: str, expected: LogPosition, to: LogPosition, applied: int,
    last_event_at: datetime | None,
) -> bool:
    """Compare-and-set in one statement: advance only if the checkpoint is still at `expected`. The UPDATE
    takes the row lock (waiting for a concurrent writer to finish) and re-checks its condition on the row it
    then sees, so False means another writer moved it first."""
    moved = await conn.fetchval(
        "UPDATE projection_checkpoints SET tx_id = $4::text::xid8, position = $5,"
        " events_applied = events_applied + $6, updated_at = now(),"
        " last_event_at = COALESCE($7, last_event_at)"
        " WHERE name = $1 AND tx_id = $2::text::xid8 AND position = $3 RETURNING true",
        name, str(expected.tx_id), expected.position, str(to.tx_id), to.position, applied, last_event_at,
    )
    return bool(moved)


# SQLSTATE of mm_checkpoint_advance (sql/0160) when the checkpoint is no longer where the batch started.
MOVED_SQLSTATE = "MMC01"


def commit_advancing_sql(advance: Advance, notify_channel: str | None = None) -> str:
    """One simple-protocol message that ends a projection's batch: the checkpoint's compare-and-set (the
    function raises MOVED_SQLSTATE on a miss, which abandons the rest of the message, COMMIT included), then
    COMMIT, then the projection's NOTIFY (after the commit, in its own implicit transaction, as before).

    Values are inlined (the simple protocol takes no parameters): integers, an ISO timestamp and a projection
    name, each rendered as a literal here."""
    a = advance
    at = "NULL" if a.last_event_at is None else f"{_literal(a.last_event_at.isoformat())}::timestamptz"
    sql = (f"SELECT mm_checkpoint_advance({_literal(a.name)}, '{int(a.expected.tx_id)}'::xid8,"
           f" {int(a.expected.position)}, '{int(a.to.tx_id)}'::xid8, {int(a.to.position)}, {int(a.applied)}, {at});"
           " COMMIT")
    if notify_channel is not None:
        if not notify_channel.isidentifier():
            raise ValueError(f"not a channel name: {notify_channel!r}")
        sql += f"; NOTIFY {notify_channel}"
    return sql


def _literal(text: str) -> str:
    """A SQL string literal for the values above (a name from code, an ISO timestamp): quotes doubled; NUL and
    backslashes refused, so the literal means the same whatever standard_conforming_strings says."""
    if "\x00" in text or "\\" in text:
        raise ValueError(f"not inlinable in SQL: {text!r}")
    return "'" + text.replace("'", "''") + "'"


@dataclass(frozen=True, slots=True)
class Advance:
    """One `advance_from`: move `name` from `expected` to `to`, counting `applied` events."""

    name: str
    expected: LogPosition
    to: LogPosition
    applied: int
    last_event_at: datetime | None


_ADVANCE_MANY = """
UPDATE projection_checkpoints AS c SET tx_id = u.to_tx::xid8, position = u.to_pos,
    events_applied = c.events_applied + u.applied, updated_at = now(),
    last_event_at = COALESCE(u.last_event_at, c.last_event_at)
FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[], $5::bigint[], $6::bigint[], $7::timestamptz[])
    AS u(name, from_tx, from_pos, to_tx, to_pos, applied, last_event_at)
WHERE c.name = u.name AND c.tx_id = u.from_tx::xid8 AND c.position = u.from_pos
RETURNING c.name
"""


async def advance_many(conn: asyncpg.Connection, advances: Sequence[Advance]) -> set[str]:
    """`advance_from` for several checkpoints in one statement (autocommit); returns the names whose
    compare-and-set won. Sorted by name, so two such statements meeting on the same rows (two projector
    processes during a failover) lock them in the same order; a deadlock all the same is an error to retry."""
    todo = sorted(advances, key=lambda a: a.name)
    rows = await conn.fetch(
        _ADVANCE_MANY,
        [a.name for a in todo], [str(a.expected.tx_id) for a in todo], [a.expected.position for a in todo],
        [str(a.to.tx_id) for a in todo], [a.to.position for a in todo], [a.applied for a in todo],
        [a.last_event_at for a in todo],
    )
    return {r["name"] for r in rows}


async def reset(conn: asyncpg.Connection, name: str, to: LogPosition, applied: int) -> None:
    await conn.execute(
        "UPDATE projection_checkpoints SET tx_id = $2::text::xid8, position = $3, events_applied = $4,"
        " updated_at = now() WHERE name = $1",
        name,
        str(to.tx_id),
        to.position,
        applied,
    )


async def position(conn: asyncpg.Connection, name: str) -> LogPosition | None:
    row = await conn.fetchrow(
        "SELECT tx_id::text::bigint AS tx_id, position FROM projection_checkpoints WHERE name = $1", name
    )
    return None if row is None else LogPosition(row["tx_id"], row["position"])

"""Group commit: the appends of concurrent commands, written as one statement and one transaction.

Appended one by one, each command is a statement, a commit (a WAL flush) and a pool round trip of its own; under
load PostgreSQL spends more on that per-statement and per-commit work than on the rows. Here an append that
arrives while another group is being written waits for it and goes in the next, with every other append that
arrived meanwhile (nothing is held back on purpose: a lone append is written at once). Each command is
acknowledged only once the group's transaction has committed: nothing acknowledged is lost.

`ON CONFLICT DO NOTHING` keeps one command's clash from failing the others in its group: an event whose id is
already recorded (a retried command) or whose stream version is taken (a concurrent change) is skipped, and
told apart afterwards. A command of several events (a heartbeat: the agent's and its endpoint's) stays atomic:
the statement fails whole if any command got some of its rows but not all (mm_events_all_or_none, which names
them), and the group is written again without them; each of them alone then records nothing and is told apart as
above.

A command's rows stay together and in its own order (projections read them in log order); the group's commands
go in the (stream, version) order of their first event, so two groups (two API processes) of one-event commands
take their rows' locks in one order. A row whose stream version another transaction holds uncommitted waits for
it, and its group with it (every append is one short statement, so such waits are short). Two commands of several
events that touch the same stream versions in opposite orders can deadlock (a heartbeat cannot: it takes its
agent's row first): PostgreSQL rolls one group back after deadlock_timeout, the group is retried a command at a
time, and a lone command so rolled back fails as a version taken. Other failures caused by one row (a value
PostgreSQL refused) are retried the same way, so only the command at fault fails; a lost session or server fails
the whole group, as it would each append alone.

Measured (ops/bench `commands`, same machine, back to back): one-event commands grouped, POST /v1/machines
790-917 -> 1,131-1,163 req/s, p99 87-97 -> 45-54 ms; the API's CPU per request 788-871 -> 602-618 us, its
PostgreSQL sessions' 375-412 -> 97-104 us. Commands of several events grouped too, the heartbeat (two events)
997-1,120 -> 1,534 req/s, p99 48-54 -> 37 ms, API CPU per request 720-785 -> 540 us, PostgreSQL 530-540 -> 340 us.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Sequence
from typing import Any, TypeAlias

import asyncpg
import msgspec

from app.store.types import LogPosition, NewEvent
from domain.shared.errors import ConcurrencyConflict

_encode = msgspec.json.Encoder().encode
log = logging.getLogger("mm.store")

# What an append reads back of each row it recorded (AppendResult.events).
RECORDED = "position, tx_id::text::bigint AS tx_id, event_id, recorded_at"
# The events table's columns, and the arrays (one per column, row_columns) its rows are given as.
_COLUMNS = "event_id, stream_id, stream_type, version, type, data, metadata"
_ARRAYS = "$1::uuid[], $2::uuid[], $3::text[], $4::bigint[], $5::text[], $6::jsonb[], $7::jsonb[]"
# Rows of the events table from one array per column: one statement for any number of events.
INSERT_ROWS = f"INSERT INTO events ({_COLUMNS}) SELECT * FROM unnest({_ARRAYS})"
_INSERT_GROUP = f"{INSERT_ROWS} ON CONFLICT DO NOTHING RETURNING {RECORDED}"
# A group holding a command of several events: each row says which command it is part of ($8: its place in the
# group), the rows go in the order given (ORDER BY the ordinality: the positions follow it), and the statement
# fails (PARTIAL_SQLSTATE, sql/0170, naming those commands in its DETAIL) unless every command got all of its rows
# or none.
_INSERT_COMMANDS = (
    f"WITH given AS MATERIALIZED (SELECT * FROM unnest({_ARRAYS}, $8::int[]) WITH ORDINALITY"
    f" AS g({_COLUMNS}, command, ord)),"
    f" recorded AS (INSERT INTO events ({_COLUMNS}) SELECT {_COLUMNS} FROM given ORDER BY ord"
    f" ON CONFLICT DO NOTHING RETURNING {RECORDED})"
    " SELECT * FROM recorded WHERE mm_events_all_or_none((SELECT COALESCE(array_agg(command), '{}') FROM"
    " (SELECT g.command FROM given g LEFT JOIN recorded r ON r.event_id = g.event_id GROUP BY g.command"
    " HAVING count(r.event_id) NOT IN (0, count(*))) AS partly))"
)
PARTIAL_SQLSTATE = "MME01"
_RECORDED_BEFORE = (
    "SELECT event_id, position, tx_id::text::bigint AS tx_id FROM events WHERE event_id = ANY($1::uuid[])"
)

# What one append resolves to: its rows as recorded (in its events' order), or where its last event was recorded
# before (a retry).
Outcome: TypeAlias = list[asyncpg.Record] | LogPosition
# An append waiting for its group: its events, their data and metadata as JSON text, and its caller's future.
_Waiting: TypeAlias = tuple[Sequence[NewEvent], list[str], list[str], "asyncio.Future[Outcome]"]


class GroupAppender:
    """Writes queued appends in groups of up to `max_rows` rows (a larger command alone), at most `max_groups`
    groups at a time."""

    def __init__(self, pool: asyncpg.Pool, max_rows: int = 128, max_groups: int = 1) -> None:
        self.pool, self.max_rows, self.max_groups = pool, max_rows, max_groups
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiting: list[_Waiting] = []
        self._writers = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self.groups = 0  # statements written (tests count them)

    async def append(self, events: Sequence[NewEvent]) -> Outcome:
        """The events' rows once their group has committed, or where the last was recorded before (all of them
        were: a retry). Raises ConcurrencyConflict when a stream version was taken, or when only some of the
        events were recorded before (not a retry of one command)."""
        if not events:
            raise ValueError("nothing to append")
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # first use, or a new event loop (tests): nothing of the old one carries over
            self._loop, self._waiting, self._writers, self._tasks = loop, [], 0, set()
        # Encoded here, by its own caller: a value that cannot be encoded fails this append, not its group.
        data = [_encode(e.data).decode() for e in events]
        metadata = [_encode(e.metadata).decode() for e in events]
        future: asyncio.Future[Outcome] = loop.create_future()
        self._waiting.append((events, data, metadata, future))
        if self._writers < self.max_groups:
            # A task of its own, not this request's: a cancelled request must not strand the others' appends.
            self._writers += 1
            task = asyncio.create_task(self._write_while_waiting())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return await future

    async def _write_while_waiting(self) -> None:
        try:
            while self._waiting:
                await self._write(self._next_group())
        finally:
            self._writers -= 1

    def _next_group(self) -> list[_Waiting]:
        """The waiting appends that fit in `max_rows` rows, first come first; at least the first. An append sharing an
        event id with one already taken (the same command sent twice at once) waits for the next group, where it
        finds that one recorded and is answered as its retry."""
        group: list[_Waiting] = []
        rest: list[_Waiting] = []
        rows, ids = 0, set[uuid.UUID]()
        for waiting in self._waiting:
            mine = {e.event_id for e in waiting[0]}
            if group and (rows + len(waiting[0]) > self.max_rows or not ids.isdisjoint(mine)):
                rest.append(waiting)
                continue
            group.append(waiting)
            rows += len(waiting[0])
            ids |= mine
        self._waiting = rest
        return group

    async def _write(self, group: list[_Waiting]) -> None:
        try:
            try:
                async with self.pool.acquire() as conn:
                    self.groups += 1
                    outcomes = await _insert(conn, group)
            except (asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                if len(group) == 1:
                    raise
                if partly := _partly(exc):
                    # Only these commands got some of their rows (a concurrent change took a stream version of
                    # theirs): the others go again as one group, and these alone, where they record nothing.
                    await self._write([w for k, w in enumerate(group) if k not in partly])
                    for k in sorted(partly):
                        await self._write([group[k]])
                    return
                if not _row_fault(exc):
                    raise
                # One append's own fault (a value PostgreSQL refused) failed the whole group: alone, only it fails.
                for waiting in group:
                    await self._write([waiting])
                return
        except Exception as exc:
            for *_, future in group:
                if not future.done():
                    future.set_exception(exc)
            return
        except BaseException:
            for *_, future in group:  # cancelled (shut down) mid-write: whether it committed is unknown
                future.cancel()
            raise
        for (*_, future), outcome in zip(group, outcomes, strict=True):
            if not future.done():
                if isinstance(outcome, Exception):
                    future.set_exception(outcome)
                else:
                    future.set_result(outcome)

    async def close(self) -> None:
        """Wait for the groups being written (their commands were acknowledged to no one yet)."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


def _partly(exc: BaseException) -> set[int]:
    """The places in its group of the commands a failed group statement named as recorded in part (none, if that
    is not why it failed)."""
    if getattr(exc, "sqlstate", None) != PARTIAL_SQLSTATE:
        return set()
    return {int(k) for k in str(getattr(exc, "detail", "") or "").split(",") if k.strip()}


def _row_fault(exc: BaseException) -> bool:
    """A failure caused by a row's values (a check, a bad value) or by a concurrent transaction (a deadlock),
    not by the session or the server: worth retrying the group's appends one at a time."""
    # ValueError: asyncpg's client-side DataError (a parameter it cannot encode) is an InterfaceError and one.
    return isinstance(exc, asyncpg.IntegrityConstraintViolationError | asyncpg.DataError
                      | asyncpg.TransactionRollbackError | ValueError)


async def _insert(conn: asyncpg.Connection, group: Sequence[_Waiting]) -> list[Outcome | Exception]:
    """Each append's outcome, in the group's order; the rows are written command by command, the commands in the
    (stream, version) order of their first event."""
    events: list[NewEvent] = []
    data: list[str] = []
    metadata: list[str] = []
    commands: list[int] = []
    for k, (evs, d, m, _) in sorted(enumerate(group), key=lambda kw: _lock_order(kw[1])):
        events += evs
        data += d
        metadata += m
        commands += [k] * len(evs)
    columns = row_columns(events, data, metadata)
    if len(events) == len(group):
        rows = await conn.fetch(_INSERT_GROUP, *columns)
    else:
        try:
            rows = await conn.fetch(_INSERT_COMMANDS, *columns, commands)
        except asyncpg.PostgresError as exc:
            if getattr(exc, "sqlstate", None) != PARTIAL_SQLSTATE or len(group) > 1:
                raise
            rows = []  # the lone command got some of its rows, so none were kept: told apart below
    by_id: dict[uuid.UUID, Any] = {r["event_id"]: r for r in rows}
    missing = [e.event_id for e in events if e.event_id not in by_id]
    # Skipped: recorded before (a retry), or a stream version was taken (a concurrent change).
    before = {r["event_id"]: LogPosition(r["tx_id"], r["position"])
              for r in (await conn.fetch(_RECORDED_BEFORE, missing) if missing else ())}
    return [_outcome(evs, by_id, before) for evs, *_ in group]


def _outcome(events: Sequence[NewEvent], recorded: dict[uuid.UUID, Any],
             before: dict[uuid.UUID, LogPosition]) -> Outcome | Exception:
    rows = [recorded.get(e.event_id) for e in events]
    if all(r is not None for r in rows):
        return rows
    if any(r is not None for r in rows):  # the statement's all-or-none check failed to stop it: say so loudly
        log.critical("a command's events were recorded in part: %s", [e.event_id for e in events])
    found = sum(e.event_id in before for e in events)
    if found == len(events):
        return before[events[-1].event_id]
    if found:
        # Some ids recorded, some not: not a retry of one command. Refused whole.
        return ConcurrencyConflict("part of this batch of events was already recorded")
    return version_taken(events[0].stream_id)


def row_columns(events: Sequence[NewEvent], data: Sequence[str], metadata: Sequence[str]) -> list[list[Any]]:
    """INSERT_ROWS's arguments: the events' columns, with their data and metadata already encoded as JSON text."""
    return [[e.event_id for e in events], [e.stream_id for e in events], [e.stream_type for e in events],
            [e.version for e in events], [e.type for e in events], list(data), list(metadata)]


def _lock_order(waiting: _Waiting) -> tuple[uuid.UUID, int]:
    return waiting[0][0].stream_id, waiting[0][0].version


def version_taken(stream_id: uuid.UUID) -> ConcurrencyConflict:
    """What an append whose stream version another command took meanwhile raises."""
    return ConcurrencyConflict("the resource changed since it was read; reload and retry", stream_id=str(stream_id))

"""A live batch sent as one autocommit statement when its rows fit in one: the writes and the checkpoint together.

A live batch used to cost BEGIN, the projection's statements, then the checkpoint's compare-and-set with COMMIT:
three round trips for a projection that writes one statement (most batches of most projections), which was most
of the projector's CPU per live event (ops/bench `commands`). `OneStatementBatch` stands in for the session while
the projection writes: it holds back the first write and, if nothing else follows, sends it with the checkpoint's
compare-and-set as a single statement, `WITH mm_batch_1 AS (<write>) SELECT mm_checkpoint_advance(...)`. One
statement is one transaction: both commit, or neither (the function raises when the checkpoint moved, a write
that fails fails the statement). Anything else (a second write, which might read the first one's rows; a read
after a write; executemany) opens the transaction first, sends what was held back, and the batch ends as before.

A projection whose batch is several writes that never read each other's rows says so with `independent()`; a
plain read that comes before every write and that the compare-and-set re-validates uses `prefetch()`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import asyncpg

from projections.checkpoints import Advance

# Statements a data-modifying CTE may hold. Not SELECT: a CTE nothing references is never run. Not WITH: PostgreSQL
# refuses a data-modifying WITH below the top level.
_WRITES = ("INSERT", "UPDATE", "DELETE")
_ADVANCE = ("SELECT mm_checkpoint_advance(${0}, ${1}::text::xid8, ${2}, ${3}::text::xid8, ${4}, ${5},"
            " ${6}::timestamptz)")


def _writes(sql: str) -> bool:
    return sql.lstrip()[:6].upper() in _WRITES


def compose(parts: Sequence[str], tail: str) -> str:
    """`parts` (writes whose parameters are numbered across all of them) as CTEs ahead of `tail`."""
    ctes = ", ".join(f"mm_batch_{i} AS ({sql})" for i, sql in enumerate(parts, 1))
    return f"WITH {ctes} {tail}"


class OneStatementBatch:
    """The session a projection writes a live batch with (see the module's docstring). After `apply_many`, the
    runner calls `finish()`: True if it committed the batch (and moved the checkpoint), False if the
    transaction is open and the runner ends it as usual."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn
        self.begun = False
        self._parts: list[str] = []
        self._args: list[Any] = []

    async def execute(self, sql: str, *args: Any) -> str:
        if not self.begun and not self._parts and args and _writes(sql):
            self._parts, self._args = [sql], list(args)
            return ""  # no projection reads an execute's status tag
        await self._begin()
        return str(await self.conn.execute(sql, *args))

    def independent(self, parts: Sequence[str], args: Sequence[Any]) -> bool:
        """Hold back several writes, none of which reads what another writes (one statement runs them all
        against the same snapshot), their parameters numbered across all of them. False (nothing held) if the
        batch cannot take them so: the caller writes them its usual way."""
        if self.begun or self._parts or not parts or not all(map(_writes, parts)):
            return False
        self._parts, self._args = list(parts), list(args)
        return True

    async def prefetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        """A read before any write, sent outside the transaction. Only for what the batch's compare-and-set
        re-validates: rows only this projection writes, which a concurrent batch cannot change without also
        moving the checkpoint (see projections.base.writes)."""
        if self.begun or self._parts:
            return await self.fetch(sql, *args)
        rows: list[asyncpg.Record] = await self.conn.fetch(sql, *args)
        return rows

    async def fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        await self._begin()
        rows: list[asyncpg.Record] = await self.conn.fetch(sql, *args)
        return rows

    async def fetchrow(self, sql: str, *args: Any) -> asyncpg.Record | None:
        await self._begin()
        row: asyncpg.Record | None = await self.conn.fetchrow(sql, *args)
        return row

    async def fetchval(self, sql: str, *args: Any) -> Any:
        await self._begin()
        return await self.conn.fetchval(sql, *args)

    async def executemany(self, sql: str, args: Any) -> None:
        await self._begin()
        await self.conn.executemany(sql, args)

    def unbatched(self) -> asyncpg.Connection:
        """The session itself, for a statement that commits on its own ahead of the batch: the relay's hand-off of
        messages, which the compare-and-set need not cover (a message sent again is the same message id)."""
        if self.begun or self._parts:
            raise RuntimeError("the batch has begun: a statement on the session now would be part of it")
        return self.conn

    def __getattr__(self, name: str) -> Any:
        # Anything else a projection might use (a cursor, a savepoint) is a session feature this batch does not
        # offer: a loud error in tests, never a write outside the batch's transaction.
        raise AttributeError(f"OneStatementBatch has no {name!r}: a live batch offers execute, executemany,"
                             " fetch, fetchrow, fetchval, prefetch, independent and unbatched")

    async def _begin(self) -> None:
        if self.begun:
            return
        self.begun = True
        await self.conn.execute("BEGIN")
        if self._parts:
            parts, args, self._parts, self._args = self._parts, self._args, [], []
            await self.conn.execute(parts[0] if len(parts) == 1 else compose(parts, "SELECT 1"), *args)

    async def finish(self, advance: Advance) -> bool:
        """Commit the held-back writes with the checkpoint's compare-and-set in one statement, unless the
        transaction was opened (False: the caller ends it)."""
        if self.begun:
            return False
        n = len(self._args)
        tail = _ADVANCE.format(*range(n + 1, n + 8))
        sql = compose(self._parts, tail) if self._parts else tail
        await self.conn.execute(
            sql, *self._args, advance.name, str(advance.expected.tx_id), advance.expected.position,
            str(advance.to.tx_id), advance.to.position, advance.applied, advance.last_event_at,
        )
        return True


class IndependentWrites:
    """A batch's writes none of which reads what another writes (different rows, or different tables), collected
    to be sent as one statement with a live batch's checkpoint (`OneStatementBatch.independent`), else one by one.
    Each is added as a function of its first parameter's number, so it can be numbered across all of them or
    on its own."""

    def __init__(self) -> None:
        self._writes: list[tuple[Callable[[int], str], Sequence[Any]]] = []

    def add(self, sql: Callable[[int], str], args: Sequence[Any]) -> None:
        self._writes.append((sql, args))

    async def send(self, conn: asyncpg.Connection | OneStatementBatch) -> None:
        if len(self._writes) > 1 and isinstance(conn, OneStatementBatch):
            parts: list[str] = []
            args: list[Any] = []
            for sql, more in self._writes:
                parts.append(sql(len(args) + 1))
                args += more
            if conn.independent(parts, args):
                return
        for sql, more in self._writes:
            await conn.execute(sql(1), *more)

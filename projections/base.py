"""What a projection is: a name, the tables it owns, and a handler that writes rows for one event."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol, cast, runtime_checkable

import asyncpg

from app.store.types import LogPosition, RecordedEvent

# Logical table name -> the physical table to write (the live one, or its shadow during a rebuild).
Tables = Mapping[str, str]

SHADOW_SUFFIX = "__rebuild"


@runtime_checkable
class Projection(Protocol):
    name: str
    # Logical names of the tables this projection owns; each has a DDL file under sql/.
    tables: tuple[str, ...]

    async def apply_many(self, conn: asyncpg.Connection, events: Sequence[RecordedEvent], t: Tables) -> None:
        """Write the effect of these events, in order, with `conn` (inside the batch transaction).

        Takes a whole batch so a projection can write it in a few round trips; unknown types are ignored. A live
        batch's `conn` is a projections.one_statement.OneStatementBatch: a batch that is one write goes with the
        checkpoint as one statement, anything more opens the transaction first.
        """


class AsksWrites(Protocol):
    """A projection that answers whether a batch writes any row (see `writes`). The runner finds the method by
    name; a projection that has one inherits this too, so mypy holds the method to the signature called."""

    async def writes(self, conn: asyncpg.Connection, events: Sequence[RecordedEvent], t: Tables,
                     at: LogPosition) -> bool: ...


def reads(projection: Projection, event: RecordedEvent) -> bool:
    """Whether `projection` may do anything for `event`. A projection may declare `prefixes`, the event types
    (or prefixes of them) it reads; the runner skips its batch transaction for a batch of none of those
    (moving only its checkpoint). Without `prefixes` it reads every event."""
    prefixes: tuple[str, ...] | None = getattr(projection, "prefixes", None)
    return prefixes is None or event.type.startswith(prefixes)


async def writes(projection: Projection, conn: asyncpg.Connection, events: Sequence[RecordedEvent],
                 t: Tables, at: LogPosition) -> bool:
    """Whether this batch, which holds events `projection` reads and starts after checkpoint `at`, writes any
    row. A projection may declare `async def writes(conn, events, t, at)` to answer from its own tables, asked
    on `conn` outside any transaction, before the batch's; when it says no, the runner only moves the checkpoint,
    with a compare-and-set from `at`. That answer is sound only for tables the projection alone writes: if the
    CAS wins, nothing else committed a batch of it since the start, so what the question read was its tables as
    they stood there (a batch committed meanwhile moved the checkpoint, and the CAS loses). Without it: always
    yes."""
    if not hasattr(projection, "writes"):
        return True
    return bool(await cast(AsksWrites, projection).writes(conn, events, t, at))


def live_tables(projection: Projection) -> dict[str, str]:
    return {name: name for name in projection.tables}


def shadow_tables(projection: Projection) -> dict[str, str]:
    return {name: name + SHADOW_SUFFIX for name in projection.tables}

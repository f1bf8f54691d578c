"""Multi-row writes: a batch's rows as one statement over `unnest` of one array per column.

`executemany` runs the statement's executor once per row; a projection that writes a live batch of dozens of
rows that way spends most of its PostgreSQL time on per-row overhead. One `unnest` statement runs the
executor once. The column table (name -> SQL type) is the single place a statement's columns are spelled:
the column list and the numbered, typed array parameters are derived from it, so they cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

Columns = Mapping[str, str]  # column name -> SQL type of one element ("uuid", "text", "jsonb", ...)


def unnest_select(columns: Columns, first: int = 1) -> str:
    """`unnest($1::uuid[], $2::text[], ...)` over `columns`, parameters numbered from `first`."""
    return "unnest(" + ", ".join(f"${i}::{t}[]" for i, t in enumerate(columns.values(), first)) + ")"


def insert_rows(table: str, columns: Columns, tail: str = "", first: int = 1) -> str:
    """`INSERT INTO table (columns) SELECT * FROM unnest(...)`, then `tail` (an ON CONFLICT clause, say);
    parameters numbered from `first`."""
    return f"INSERT INTO {table} ({', '.join(columns)}) SELECT * FROM {unnest_select(columns, first)}{tail}"


def update_rows(table: str, key: str, columns: Columns, sets: Iterable[str], first: int = 1) -> str:
    """`UPDATE table t SET <sets> FROM unnest(...) AS u(columns) WHERE t.key = u.key`: one statement for many
    rows, each matched by `key` (the first column). `sets` name the new values as `u.<column>`; parameters
    numbered from `first`."""
    names = ", ".join(columns)
    return (f"UPDATE {table} t SET {', '.join(sets)} FROM {unnest_select(columns, first)} AS u({names})"
            f" WHERE t.{key} = u.{key}")


def arrays(columns: Columns, rows: Sequence[Sequence[Any]]) -> list[list[Any]]:
    """The statement's arguments: one list per column, from rows given in the column table's order."""
    if not rows:
        return [[] for _ in columns]
    out = [list(column) for column in zip(*rows, strict=True)]
    if len(out) != len(columns):
        raise ValueError(f"rows have {len(out)} values, the column table {len(columns)}")
    return out

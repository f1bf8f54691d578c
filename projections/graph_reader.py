"""Queries the API runs against the graph read model (callers have already checked the machine's owner)."""

from __future__ import annotations

import uuid
from typing import Any, TypeAlias

import asyncpg
import msgspec

Conn: TypeAlias = asyncpg.Pool | asyncpg.Connection

_NODE_COLS = "id, machine_id, type, label, status, data::text AS data, version, created_at, updated_at"
_EDGE_COLS = (
    "id, machine_id, from_node_id, to_node_id, type, data::text AS data, version, created_at, updated_at"
)


def _row(row: asyncpg.Record) -> dict[str, Any]:
    d = dict(row)
    d["data"] = msgspec.json.decode(d["data"])
    return d


async def list_nodes(conn: Conn, machine_id: uuid.UUID) -> list[dict[str, Any]]:
    """All of a machine's nodes, oldest first (a graph is bounded, so there is no paging)."""
    rows = await conn.fetch(
        f"SELECT {_NODE_COLS} FROM graph_nodes_view WHERE machine_id = $1 ORDER BY created_at, id", machine_id
    )
    return [_row(r) for r in rows]


async def list_edges(conn: Conn, machine_id: uuid.UUID) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        f"SELECT {_EDGE_COLS} FROM graph_edges_view WHERE machine_id = $1 ORDER BY created_at, id", machine_id
    )
    return [_row(r) for r in rows]


async def get_node(conn: Conn, machine_id: uuid.UUID, node_id: uuid.UUID) -> dict[str, Any] | None:
    row = await conn.fetchrow(
        f"SELECT {_NODE_COLS} FROM graph_nodes_view WHERE id = $1 AND machine_id = $2", node_id, machine_id
    )
    return None if row is None else _row(row)


async def get_edge(conn: Conn, machine_id: uuid.UUID, edge_id: uuid.UUID) -> dict[str, Any] | None:
    row = await conn.fetchrow(
        f"SELECT {_EDGE_COLS} FROM graph_edges_view WHERE id = $1 AND machine_id = $2", edge_id, machine_id
    )
    return None if row is None else _row(row)

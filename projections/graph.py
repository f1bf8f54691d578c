"""Graph read model: one row per node and one per edge, kept current from the MachineGraph streams."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg
import msgspec

from app.store.types import RecordedEvent
from projections.base import Tables

P = "graph:MachineGraph."
_json = msgspec.json.Encoder().encode
NODE_COLUMNS = ("machine_id", "account_id", "type", "label", "status", "data", "version", "created_at", "updated_at")
EDGE_COLUMNS = ("machine_id", "account_id", "from_node_id", "to_node_id", "type", "data", "version", "created_at",
                "updated_at")


class _Rows:
    """One table's writes for a batch, folded so each row is deleted, inserted or updated at most once.

    Applied as DELETE, INSERT, UPDATE: an id deleted and created again in one batch is deleted first,
    and a row created in the batch takes its later changes in memory, so updates only touch older rows.
    """

    def __init__(self) -> None:
        self.inserts: dict[uuid.UUID, dict[str, Any]] = {}
        self.updates: dict[uuid.UUID, dict[str, Any]] = {}
        self.deletes: set[uuid.UUID] = set()

    def change(self, row_id: uuid.UUID, changes: dict[str, Any], at: datetime) -> None:
        row = self.inserts.get(row_id)
        if row is None:
            row = self.updates.setdefault(row_id, {"version": 0})
        row.update({k: v for k, v in changes.items() if v is not None})
        row["version"] += 1  # for an update, the number of revisions to add to the stored version
        row["updated_at"] = at

    def delete(self, row_id: uuid.UUID) -> None:
        self.inserts.pop(row_id, None)
        self.updates.pop(row_id, None)
        self.deletes.add(row_id)

    async def write(self, conn: asyncpg.Connection, table: str, columns: tuple[str, ...],
                    mutable: tuple[str, ...]) -> None:
        def cast(c: str) -> str:
            return "::jsonb" if c == "data" else ""

        if self.deletes:
            await conn.execute(f"DELETE FROM {table} WHERE id = ANY($1::uuid[])", list(self.deletes))
        if self.inserts:
            values = ", ".join(f"${i}{cast(c)}" for i, c in enumerate(columns, 2))
            await conn.executemany(
                f"INSERT INTO {table} (id, {', '.join(columns)}) VALUES ($1, {values})",
                [(row_id, *(r[c] for c in columns)) for row_id, r in self.inserts.items()],
            )
        if self.updates:
            # COALESCE keeps a column the batch did not touch; none of them is ever set back to NULL.
            sets = ", ".join(f"{c} = COALESCE(${i}{cast(c)}, {c})" for i, c in enumerate(mutable, 2))
            n = len(mutable) + 2
            await conn.executemany(
                f"UPDATE {table} SET {sets}, version = version + ${n}, updated_at = ${n + 1} WHERE id = $1",
                [(row_id, *(u.get(c) for c in mutable), u["version"], u["updated_at"])
                 for row_id, u in self.updates.items()],
            )


class GraphProjection:
    name = "graph"
    prefixes = (P,)
    tables: tuple[str, ...] = ("graph_nodes_view", "graph_edges_view")

    async def apply_many(self, conn: asyncpg.Connection, events: Sequence[RecordedEvent], t: Tables) -> None:
        nodes, edges = _Rows(), _Rows()
        for event in events:
            if event.type.startswith(P):
                _fold(event, nodes, edges)
        await nodes.write(conn, t["graph_nodes_view"], NODE_COLUMNS, ("type", "label", "status", "data"))
        await edges.write(conn, t["graph_edges_view"], EDGE_COLUMNS, ("type", "data"))


def _fold(event: RecordedEvent, nodes: _Rows, edges: _Rows) -> None:
    kind, d = event.type[len(P):], event.data
    at = datetime.fromisoformat(d["timestamp"])
    data = None if d.get("data") is None else _json(d["data"]).decode()
    # The repository files every graph event under its machine and owner, so no event repeats them.
    owner = {"machine_id": event.metadata["machineId"], "account_id": event.metadata["ownerAccountId"],
             "version": 1, "created_at": at, "updated_at": at, "data": data}
    if kind == "NodeCreated":
        nodes.inserts[uuid.UUID(d["node_id"])] = {
            **owner, "type": d["node_type"], "label": d["label"], "status": d["status"]}
    elif kind == "NodeRevised":
        nodes.change(uuid.UUID(d["node_id"]), {
            "type": d["node_type"], "label": d["label"], "status": d["status"], "data": data}, at)
    elif kind == "NodeDeleted":
        nodes.delete(uuid.UUID(d["node_id"]))
    elif kind == "EdgeCreated":
        edges.inserts[uuid.UUID(d["edge_id"])] = {
            **owner, "from_node_id": d["from_node_id"], "to_node_id": d["to_node_id"], "type": d["edge_type"]}
    elif kind == "EdgeRevised":
        edges.change(uuid.UUID(d["edge_id"]), {"type": d["edge_type"], "data": data}, at)
    elif kind == "EdgeDeleted":
        edges.delete(uuid.UUID(d["edge_id"]))

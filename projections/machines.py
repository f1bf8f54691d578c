"""Machines read model: one row per machine, kept current from the Machine stream."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg
import msgspec

from app.store.types import RecordedEvent
from projections.base import Tables
from projections.rows import Columns, arrays, insert_rows, update_rows

P = "machines:Machine."
_json = msgspec.json.Encoder().encode
_COLUMNS = ("name", "description", "labels", "status", "identity_verified_at")
_INSERT: Columns = {"id": "uuid", "account_id": "uuid", "name": "text", "description": "text", "public_key": "text",
                    "labels": "jsonb", "status": "text", "identity_verified_at": "timestamptz", "version": "bigint",
                    "created_at": "timestamptz", "updated_at": "timestamptz"}
# A changed row: NULL for a column the batch did not touch (COALESCE keeps it; none is ever set back to NULL).
_CHANGED: Columns = {"id": "uuid", **{c: _INSERT[c] for c in _COLUMNS}, "version": "bigint",
                     "updated_at": "timestamptz"}
_SETS = (*(f"{c} = COALESCE(u.{c}, t.{c})" for c in _COLUMNS), "version = u.version", "updated_at = u.updated_at")


class MachinesProjection:
    name = "machines"
    prefixes = (P,)
    tables: tuple[str, ...] = ("machines_view",)

    async def apply_many(self, conn: asyncpg.Connection, events: Sequence[RecordedEvent], t: Tables) -> None:
        """Folds the batch to one INSERT or one UPDATE per machine, written with one statement each.

        Rows of different machines are independent, and within a machine the fold applies events in
        log order, so the result equals applying them one by one.
        """
        inserts: dict[uuid.UUID, dict[str, Any]] = {}
        updates: dict[uuid.UUID, dict[str, Any]] = {}
        for event in events:
            if not event.type.startswith(P):
                continue
            kind, d = event.type[len(P):], event.data
            at = datetime.fromisoformat(d["timestamp"])
            if kind == "Registered":
                inserts[event.stream_id] = {
                    "account_id": d["account_id"], "name": d["name"], "description": d["description"],
                    "public_key": d["public_key"], "labels": _json(d["labels"]).decode(), "status": "registered",
                    "identity_verified_at": None, "created_at": at,
                }
                row = inserts[event.stream_id]
            else:
                row = inserts.get(event.stream_id) or updates.setdefault(event.stream_id, {})
                row.update(_changes(kind, d, at))
            row["version"], row["updated_at"] = event.version, at
        table = t["machines_view"]
        if inserts:
            await conn.execute(insert_rows(table, _INSERT), *arrays(_INSERT, [
                (mid, *(r[c] for c in _INSERT if c != "id")) for mid, r in inserts.items()]))
        if updates:
            await conn.execute(update_rows(table, "id", _CHANGED, _SETS), *arrays(_CHANGED, [
                (mid, *(r.get(c) for c in _CHANGED if c != "id")) for mid, r in updates.items()]))


def _changes(kind: str, d: dict[str, Any], at: datetime) -> dict[str, Any]:
    if kind == "IdentityVerified":
        return {"identity_verified_at": at}
    if kind in ("Activated", "Reactivated"):
        return {"status": "active"}
    if kind == "Suspended":
        return {"status": "suspended"}
    if kind == "Retired":
        return {"status": "retired"}
    if kind == "ProfileRevised":
        out: dict[str, Any] = {}
        if d.get("name") is not None:
            out["name"] = d["name"]
        if d.get("description") is not None:
            out["description"] = d["description"]
        if d.get("labels") is not None:
            out["labels"] = _json(d["labels"]).decode()
        return out
    return {}  # challenge events change no column, but still bump version and updated_at

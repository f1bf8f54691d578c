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

P = "machines:Machine."
_json = msgspec.json.Encoder().encode
_COLUMNS = ("name", "description", "labels", "status", "identity_verified_at")


class MachinesProjection:
    name = "machines"
    prefixes = (P,)
    tables: tuple[str, ...] = ("machines_view",)

    async def apply_many(self, conn: asyncpg.Connection, events: Sequence[RecordedEvent], t: Tables) -> None:
        """Folds the batch to one INSERT or one UPDATE per machine, written with two executemany calls.

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
            await conn.executemany(
                f"INSERT INTO {table} (id, account_id, name, description, public_key, labels, status,"
                " identity_verified_at, version, created_at, updated_at)"
                " VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7, $8, $9, $10, $11)",
                [(mid, r["account_id"], r["name"], r["description"], r["public_key"], r["labels"], r["status"],
                  r["identity_verified_at"], r["version"], r["created_at"], r["updated_at"])
                 for mid, r in inserts.items()],
            )
        if updates:
            # COALESCE keeps a column the batch did not touch; none of them is ever set back to NULL.
            await conn.executemany(
                f"UPDATE {table} SET name = COALESCE($2, name), description = COALESCE($3, description),"
                " labels = COALESCE($4::jsonb, labels), status = COALESCE($5, status),"
                " identity_verified_at = COALESCE($6, identity_verified_at), version = $7, updated_at = $8"
                " WHERE id = $1",
                [(mid, *(r.get(c) for c in _COLUMNS), r["version"], r["updated_at"]) for mid, r in updates.items()],
            )


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

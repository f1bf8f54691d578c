"""Machines read model: one row per machine, kept current from the Machine stream."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg
import msgspec

from app.store.types import RecordedEvent
from projections.base import Tables

P = "machines:Machine."
_json = msgspec.json.encode


class MachinesProjection:
    name = "machines"
    tables = ("machines_view",)

    async def apply(self, conn: asyncpg.Connection, event: RecordedEvent, t: Tables) -> None:
        if not event.type.startswith(P):
            return
        kind = event.type[len(P):]
        d = event.data
        table = t["machines_view"]
        if kind == "Registered":
            await conn.execute(
                f"INSERT INTO {table} (id, account_id, name, description, public_key, labels, status,"
                " version, created_at, updated_at)"
                " VALUES ($1, $2, $3, $4, $5, $6::jsonb, 'registered', $7, $8, $8)",
                event.stream_id, d["account_id"], d["name"], d["description"], d["public_key"],
                _json(d["labels"]).decode(), event.version, _ts(d),
            )
            return
        sets = _changes(kind, d)
        assignments = ", ".join(f"{col} = ${i}" for i, col in enumerate(sets, start=4))
        await conn.execute(
            f"UPDATE {table} SET version = $2, updated_at = $3{', ' + assignments if sets else ''}"
            " WHERE id = $1",
            event.stream_id, event.version, _ts(d), *sets.values(),
        )


def _ts(d: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(d["timestamp"])


def _changes(kind: str, d: dict[str, Any]) -> dict[str, Any]:
    if kind == "IdentityVerified":
        return {"identity_verified_at": _ts(d)}
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
    return {}  # challenge events change no column, but still bump version/updated_at

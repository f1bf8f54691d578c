"""Policies read model: each policy's current version, and every version it has had."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg
import msgspec

from app.store.types import RecordedEvent
from projections.base import Tables

P = "policies:Policy."
_json = msgspec.json.Encoder().encode
_DEFINITION = ("name", "description", "scope", "scope_type", "machine_ids", "scope_labels", "mode", "rules")


def _definition(d: dict[str, Any]) -> dict[str, Any]:
    scope = d["scope"]
    return {"name": d["name"], "description": d["description"], "scope": _json(scope).decode(),
            "scope_type": scope["type"], "machine_ids": [uuid.UUID(m) for m in scope.get("machineIds", [])],
            "scope_labels": _json(scope.get("labels", {})).decode(), "mode": d["mode"],
            "rules": _json(d["rules"]).decode()}


class PoliciesProjection:
    name = "policies"
    prefixes = (P,)
    tables: tuple[str, ...] = ("policies_view", "policy_versions_view")

    async def apply_many(self, conn: asyncpg.Connection, events: Sequence[RecordedEvent], t: Tables) -> None:
        """Every event carries the policy's whole definition, so a batch folds to its last one per policy."""
        inserts: dict[uuid.UUID, dict[str, Any]] = {}
        updates: dict[uuid.UUID, dict[str, Any]] = {}
        versions: list[tuple[Any, ...]] = []
        for event in events:
            if not event.type.startswith(P):
                continue
            kind, d = event.type[len(P):], event.data
            at = datetime.fromisoformat(d["timestamp"])
            row = {**_definition(d), "version": event.version, "updated_at": at}
            if kind == "Defined":
                inserts[event.stream_id] = {**row, "created_at": at, "account_id": uuid.UUID(d["account_id"]),
                                            "platform": d["platform"]}
                changed = ["name", "description", "scope", "mode", "rules"]  # a definition sets them all
            elif kind == "Revised":
                (inserts[event.stream_id] if event.stream_id in inserts else updates.setdefault(
                    event.stream_id, {})).update(row)
                changed = list(d["changed"])
            else:
                continue
            versions.append((event.stream_id, event.version, row["name"],
                             row["description"], row["scope"], row["mode"], row["rules"], changed,
                             event.metadata.get("actor"), at))
        await _write(conn, t, inserts, updates, versions)


async def _write(conn: asyncpg.Connection, t: Tables, inserts: dict[uuid.UUID, dict[str, Any]],
                 updates: dict[uuid.UUID, dict[str, Any]], versions: list[tuple[Any, ...]]) -> None:
    table, history = t["policies_view"], t["policy_versions_view"]
    if inserts:
        await conn.executemany(
            f"INSERT INTO {table} (id, account_id, platform, name, description, scope, scope_type, machine_ids,"
            " scope_labels, mode, rules, version, created_at, updated_at)"
            " VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7, $8, $9::jsonb, $10, $11::jsonb, $12, $13, $14)",
            [(pid, r["account_id"], r["platform"], *(r[c] for c in _DEFINITION), r["version"], r["created_at"],
              r["updated_at"]) for pid, r in inserts.items()],
        )
    if updates:
        await conn.executemany(
            f"UPDATE {table} SET name = $2, description = $3, scope = $4::jsonb, scope_type = $5,"
            " machine_ids = $6, scope_labels = $7::jsonb, mode = $8, rules = $9::jsonb, version = $10,"
            " updated_at = $11 WHERE id = $1",
            [(pid, *(r[c] for c in _DEFINITION), r["version"], r["updated_at"]) for pid, r in updates.items()],
        )
    if versions:
        # A revision carries no owner: it comes from the current row (written above when defined in this batch).
        await conn.executemany(
            f"INSERT INTO {history} (policy_id, version, account_id, platform, name, description, scope, mode,"
            " rules, changed, actor, recorded_at)"
            " SELECT $1, $2, p.account_id, p.platform, $3, $4, $5::jsonb, $6, $7::jsonb, $8, $9, $10"
            f" FROM {table} p WHERE p.id = $1",
            versions,
        )


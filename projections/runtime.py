"""Runtime read models: one row per runtime endpoint and per machine agent, folded a batch at a time."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg
import msgspec

from app.store.types import RecordedEvent
from projections.base import Tables

EP, AG = "runtime:RuntimeEndpoint.", "runtime:MachineAgent."
_json = msgspec.json.Encoder().encode
_FULL = ("url", "has_auth_token", "metadata", "source", "agent_id", "status", "lease_expires_at")


def _ts(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def _endpoint_state(d: dict[str, Any]) -> dict[str, Any]:
    """Every upsert carries the endpoint's whole state, so the last one in a batch wins."""
    return {
        "url": d["url"], "has_auth_token": d["auth_token"] is not None, "metadata": _json(d["metadata"]).decode(),
        "source": d["source"], "agent_id": d["agent_id"], "status": "active",
        "lease_expires_at": _ts(d["lease_expires_at"]),
    }


class RuntimeProjection:
    name = "runtime"
    prefixes = (EP, AG)
    tables: tuple[str, ...] = ("runtime_endpoints_view", "machine_agents_view")

    async def apply_many(self, conn: asyncpg.Connection, events: Sequence[RecordedEvent], t: Tables) -> None:
        # Heartbeats dominate the log, so each batch folds to one write per stream (rows of different
        # streams are independent; within a stream the fold applies events in log order).
        await self._endpoints(conn, [e for e in events if e.type.startswith(EP)], t["runtime_endpoints_view"])
        await self._agents(conn, [e for e in events if e.type.startswith(AG)], t["machine_agents_view"])

    async def _endpoints(self, conn: asyncpg.Connection, events: list[RecordedEvent], table: str) -> None:
        inserts: dict[uuid.UUID, dict[str, Any]] = {}
        updates: dict[uuid.UUID, dict[str, Any]] = {}
        for event in events:
            kind, d = event.type[len(EP):], event.data
            if kind == "Opened":
                inserts[event.stream_id] = row = {
                    "account_id": d["account_id"], "machine_id": d["machine_id"], "provider_key": d["provider_key"],
                    "created_at": _ts(d["timestamp"]), **_endpoint_state(d),
                }
            else:
                row = inserts.get(event.stream_id) or updates.setdefault(event.stream_id, {})
                if kind == "Upserted":
                    row.update(_endpoint_state(d))
                elif kind in ("Expired", "Deleted"):
                    row["status"] = kind.lower()
                if kind == "Deleted" and "has_auth_token" in row:
                    row["has_auth_token"] = False  # a deleted endpoint forgets its token
            row["version"], row["updated_at"] = event.version, _ts(event.data["timestamp"])
        if inserts:
            await conn.executemany(
                f"INSERT INTO {table} (id, account_id, machine_id, provider_key, url, has_auth_token, metadata,"
                " source, agent_id, status, lease_expires_at, version, created_at, updated_at)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8, $9, $10, $11, $12, $13, $14)",
                [(sid, r["account_id"], r["machine_id"], r["provider_key"], *(r[c] for c in _FULL), r["version"],
                  r["created_at"], r["updated_at"]) for sid, r in inserts.items()],
            )
        full = {sid: r for sid, r in updates.items() if "url" in r}
        if full:
            await conn.executemany(
                f"UPDATE {table} SET url = $2, has_auth_token = $3, metadata = $4::jsonb, source = $5, agent_id = $6,"
                " status = $7, lease_expires_at = $8, version = $9, updated_at = $10 WHERE id = $1",
                [(sid, *(r[c] for c in _FULL), r["version"], r["updated_at"]) for sid, r in full.items()],
            )
        status_only = [(sid, r["status"], r["version"], r["updated_at"])
                       for sid, r in updates.items() if sid not in full]
        if status_only:
            await conn.executemany(
                f"UPDATE {table} SET status = $2, version = $3, updated_at = $4,"
                " has_auth_token = has_auth_token AND $2 <> 'deleted' WHERE id = $1", status_only
            )

    async def _agents(self, conn: asyncpg.Connection, events: list[RecordedEvent], table: str) -> None:
        inserts: dict[uuid.UUID, dict[str, Any]] = {}
        updates: dict[uuid.UUID, dict[str, Any]] = {}
        for event in events:
            kind, d = event.type[len(AG):], event.data
            at = _ts(d["timestamp"])
            if kind == "Enrolled":
                inserts[event.stream_id] = row = {
                    "account_id": d["account_id"], "machine_id": d["machine_id"], "name": d["name"],
                    "allowed_provider_keys": d["allowed_provider_keys"], "lease_seconds": d["lease_seconds"],
                    "status": "enrolled", "last_seen_at": None, "last_lease_expires_at": None, "created_at": at,
                }
            else:
                row = inserts.get(event.stream_id) or updates.setdefault(event.stream_id, {})
                if kind == "HeartbeatReceived":
                    row.update(status="active", last_seen_at=at, last_lease_expires_at=_ts(d["lease_expires_at"]))
                elif kind == "Revoked":
                    row["status"] = "revoked"
            row["version"], row["updated_at"] = event.version, at
        if inserts:
            await conn.executemany(
                f"INSERT INTO {table} (id, account_id, machine_id, name, allowed_provider_keys, lease_seconds, status,"
                " last_seen_at, last_lease_expires_at, version, created_at, updated_at)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
                [(sid, r["account_id"], r["machine_id"], r["name"], r["allowed_provider_keys"], r["lease_seconds"],
                  r["status"], r["last_seen_at"], r["last_lease_expires_at"], r["version"], r["created_at"],
                  r["updated_at"]) for sid, r in inserts.items()],
            )
        if updates:
            # COALESCE keeps what the batch did not touch; none of these columns is ever set back to NULL.
            await conn.executemany(
                f"UPDATE {table} SET status = COALESCE($2, status), last_seen_at = COALESCE($3, last_seen_at),"
                " last_lease_expires_at = COALESCE($4, last_lease_expires_at), version = $5, updated_at = $6"
                " WHERE id = $1",
                [(sid, r.get("status"), r.get("last_seen_at"), r.get("last_lease_expires_at"), r["version"],
                  r["updated_at"]) for sid, r in updates.items()],
            )

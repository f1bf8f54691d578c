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
from projections.one_statement import IndependentWrites
from projections.rows import Columns, arrays, insert_rows, update_rows

EP, AG = "runtime:RuntimeEndpoint.", "runtime:MachineAgent."
_json = msgspec.json.Encoder().encode
_STATE_TYPES = {"url": "text", "has_auth_token": "boolean", "metadata": "jsonb", "source": "text", "agent_id": "uuid",
                "status": "text", "lease_expires_at": "timestamptz"}
_EP_ROW: Columns = {"id": "uuid", "account_id": "uuid", "machine_id": "uuid", "provider_key": "text", **_STATE_TYPES,
                    "version": "bigint", "created_at": "timestamptz", "updated_at": "timestamptz"}
# An upsert carries the endpoint's whole state: every column is replaced.
_EP_STATE: Columns = {"id": "uuid", **_STATE_TYPES, "version": "bigint", "updated_at": "timestamptz"}
_EP_STATE_SETS = tuple(f"{c} = u.{c}" for c in _EP_STATE if c != "id")
_EP_STATUS: Columns = {"id": "uuid", "status": "text", "version": "bigint", "updated_at": "timestamptz"}
_EP_STATUS_SETS = ("status = u.status", "version = u.version", "updated_at = u.updated_at",
                   "has_auth_token = t.has_auth_token AND u.status <> 'deleted'")
_AG_SEEN: Columns = {"id": "uuid", "status": "text", "last_seen_at": "timestamptz",
                     "last_lease_expires_at": "timestamptz", "version": "bigint", "updated_at": "timestamptz"}
# COALESCE keeps what the batch did not touch; none of these columns is ever set back to NULL.
_AG_SEEN_SETS = ("status = COALESCE(u.status, t.status)", "last_seen_at = COALESCE(u.last_seen_at, t.last_seen_at)",
                 "last_lease_expires_at = COALESCE(u.last_lease_expires_at, t.last_lease_expires_at)",
                 "version = u.version", "updated_at = u.updated_at")


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
        # streams are independent; within a stream the fold applies events in log order). The writes touch
        # different rows or tables and read none of each other's: a heartbeat batch (its endpoints' and agents'
        # updates) is one statement with the checkpoint, not a transaction of four round trips.
        writes = IndependentWrites()
        self._endpoints([e for e in events if e.type.startswith(EP)], t["runtime_endpoints_view"], writes)
        enrolled = self._agents([e for e in events if e.type.startswith(AG)], t["machine_agents_view"], writes)
        if enrolled:
            await conn.executemany(
                f"INSERT INTO {t['machine_agents_view']} (id, account_id, machine_id, name, allowed_provider_keys,"
                " lease_seconds, status, last_seen_at, last_lease_expires_at, version, created_at, updated_at)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)", enrolled)
        await writes.send(conn)

    def _endpoints(self, events: list[RecordedEvent], table: str, writes: IndependentWrites) -> None:
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
        # One statement per kind of write and batch (one executor run, not one per row as executemany would).
        if inserts:
            writes.add(lambda n: insert_rows(table, _EP_ROW, first=n), arrays(_EP_ROW, [
                (sid, *(r[c] for c in _EP_ROW if c != "id")) for sid, r in inserts.items()]))
        full = {sid: r for sid, r in updates.items() if "url" in r}
        if full:
            writes.add(lambda n: update_rows(table, "id", _EP_STATE, _EP_STATE_SETS, n), arrays(_EP_STATE, [
                (sid, *(r[c] for c in _EP_STATE if c != "id")) for sid, r in full.items()]))
        status_only = [(sid, r["status"], r["version"], r["updated_at"])
                       for sid, r in updates.items() if sid not in full]
        if status_only:
            writes.add(lambda n: update_rows(table, "id", _EP_STATUS, _EP_STATUS_SETS, n),
                       arrays(_EP_STATUS, status_only))

    def _agents(self, events: list[RecordedEvent], table: str, writes: IndependentWrites) -> list[tuple[Any, ...]]:
        """Adds the agents' updates to `writes`; returns the rows of newly enrolled agents (inserted with
        executemany: their provider keys are an array per row, which one unnest of arrays cannot carry)."""
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
        if updates:
            writes.add(lambda n: update_rows(table, "id", _AG_SEEN, _AG_SEEN_SETS, n), arrays(_AG_SEEN, [
                (sid, r.get("status"), r.get("last_seen_at"), r.get("last_lease_expires_at"), r["version"],
                 r["updated_at"]) for sid, r in updates.items()]))
        return [(sid, r["account_id"], r["machine_id"], r["name"], r["allowed_provider_keys"], r["lease_seconds"],
                 r["status"], r["last_seen_at"], r["last_lease_expires_at"], r["version"], r["created_at"],
                 r["updated_at"]) for sid, r in inserts.items()]

"""Catalogue read model: a row per graph node, with the machine and endpoint state that decide if it is listed."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg
import msgspec

from app.store.types import RecordedEvent
from domain.shared.ids import derived_id
from projections.base import Tables
from projections.one_statement import IndependentWrites
from projections.rows import Columns, arrays, insert_rows, update_rows

MACHINE, ENDPOINT, GRAPH = "machines:Machine.", "runtime:RuntimeEndpoint.", "graph:MachineGraph."
_json = msgspec.json.Encoder().encode
_MAX_BIGINT = 2**63 - 1
# The machine events that can change whether it is operational (a name change shows through the read join).
_OPERATIONAL_CHANGES = frozenset({"IdentityVerified", "Activated", "Suspended", "Reactivated", "Retired"})
_FIELDS = ("capability", "provider_key", "price_amount", "price_currency", "input_schema")
_NODE_COLUMNS = ("node_id", "machine_id", "account_id", "node_type", "node_status", *_FIELDS, "created_at",
                 "updated_at")


def listing_id(node_id: uuid.UUID) -> uuid.UUID:
    """A listing's id follows from its node's, so it is stable across rebuilds (orders name it)."""
    return derived_id("listing", node_id)


def _ts(value: str) -> datetime:
    return datetime.fromisoformat(value)


def capability_fields(data: dict[str, Any]) -> dict[str, Any]:
    """What a listing shows of a node's data, read leniently: any node's data may become a capability's
    (domain/graph/rules.py validates a capability's), and a malformed field just leaves the node unlisted."""
    name, provider, schema, price = (data.get(k) for k in ("name", "providerKey", "inputSchema", "price"))
    amount = price.get("amount") if isinstance(price, dict) else None
    currency = price.get("currency") if isinstance(price, dict) else None
    priced = type(amount) is int and 0 <= amount <= _MAX_BIGINT and isinstance(currency, str)
    return {
        "capability": name if isinstance(name, str) else None,
        "provider_key": provider.strip().lower() if isinstance(provider, str) else None,
        "price_amount": amount if priced else None,
        "price_currency": currency if priced else None,
        "input_schema": _json(schema if isinstance(schema, dict) else {}).decode(),
    }


class _Fold:
    """One table's writes for a batch: a full row for what the batch created, a patch for older rows."""

    def __init__(self) -> None:
        self.full: dict[uuid.UUID, dict[str, Any]] = {}
        self.patch: dict[uuid.UUID, dict[str, Any]] = {}
        self.deleted: set[uuid.UUID] = set()

    def create(self, row_id: uuid.UUID, row: dict[str, Any]) -> None:
        self.deleted.discard(row_id)
        self.patch.pop(row_id, None)
        self.full[row_id] = row

    def change(self, row_id: uuid.UUID, changes: dict[str, Any]) -> None:
        (self.full.get(row_id) or self.patch.setdefault(row_id, {})).update(changes)

    def delete(self, row_id: uuid.UUID) -> None:
        self.full.pop(row_id, None)
        self.patch.pop(row_id, None)
        self.deleted.add(row_id)


class CatalogueProjection:
    """Listed = an active capability node of an operational machine whose endpoint for the node's provider key
    is active. The machine and endpoint tables are this projection's own copies, so a listing's flags are
    refreshed from them after every batch, for every machine the batch touched, whatever the events' order."""

    name = "catalogue"
    prefixes = (MACHINE, ENDPOINT, GRAPH)
    tables: tuple[str, ...] = ("catalogue_listings", "catalogue_machines", "catalogue_endpoints")

    async def apply_many(self, conn: asyncpg.Connection, events: Sequence[RecordedEvent], t: Tables) -> None:
        machines, endpoints, nodes = _Fold(), _Fold(), _Fold()
        touched: set[uuid.UUID] = set()
        for event in events:
            if event.type.startswith(MACHINE):
                _machine(event, machines)
                if event.type[len(MACHINE):] in _OPERATIONAL_CHANGES:
                    touched.add(event.stream_id)
            elif event.type.startswith(ENDPOINT):
                _endpoint(event, endpoints)  # its machine is found by the endpoint's id in the refresh
            elif event.type.startswith(GRAPH) and event.type[len(GRAPH):].startswith("Node"):
                _node(event, nodes)
                touched.add(uuid.UUID(event.metadata["machineId"]))
        endpoint_ids = [*endpoints.full, *endpoints.patch]
        if endpoints.patch and not (touched or endpoints.full or machines.full or machines.patch or nodes.full
                                    or nodes.patch or nodes.deleted):
            await _heartbeats(conn, t, endpoints)
            return
        await _write_machines(conn, t["catalogue_machines"], machines)
        await _write_endpoints(conn, t["catalogue_endpoints"], endpoints)
        await _write_nodes(conn, t["catalogue_listings"], nodes)
        if touched or endpoint_ids:
            await conn.execute(_REFRESH.format(**t), list(touched), endpoint_ids)


def _machine(event: RecordedEvent, machines: _Fold) -> None:
    kind, d = event.type[len(MACHINE):], event.data
    if kind == "Registered":
        machines.create(event.stream_id, {"account_id": d["account_id"], "name": d["name"],
                                          "identity_verified": False, "status": "registered"})
    elif kind == "IdentityVerified":
        machines.change(event.stream_id, {"identity_verified": True})
    elif kind in ("Activated", "Reactivated"):
        machines.change(event.stream_id, {"status": "active"})
    elif kind in ("Suspended", "Retired"):
        machines.change(event.stream_id, {"status": kind.lower()})
    elif kind == "ProfileRevised" and d.get("name") is not None:
        machines.change(event.stream_id, {"name": d["name"]})
    machines.change(event.stream_id, {"version": event.version, "updated_at": _ts(d["timestamp"])})


def _endpoint(event: RecordedEvent, endpoints: _Fold) -> None:
    kind, d = event.type[len(ENDPOINT):], event.data
    at = _ts(d["timestamp"])
    lease = None if d.get("lease_expires_at") is None else _ts(d["lease_expires_at"])
    if kind == "Opened":
        endpoints.create(event.stream_id, {"machine_id": d["machine_id"], "provider_key": d["provider_key"],
                                           "status": "active", "source": d["source"], "lease_expires_at": lease,
                                           "last_seen_at": at})
    elif kind == "Upserted":
        # A manual upsert clears the lease, so the lease is always written, never coalesced.
        endpoints.change(event.stream_id, {"status": "active", "source": d["source"], "lease": True,
                                           "lease_expires_at": lease, "last_seen_at": at})
    elif kind in ("Expired", "Deleted"):
        endpoints.change(event.stream_id, {"status": kind.lower()})
    endpoints.change(event.stream_id, {"version": event.version})


def _node(event: RecordedEvent, nodes: _Fold) -> None:
    kind, d = event.type[len(GRAPH):], event.data
    at = _ts(d["timestamp"])
    row_id = listing_id(uuid.UUID(d["node_id"]))
    if kind == "NodeCreated":
        nodes.create(row_id, {"node_id": d["node_id"], "machine_id": event.metadata["machineId"],
                              "account_id": event.metadata["ownerAccountId"], "node_type": d["node_type"],
                              "node_status": d["status"], **capability_fields(d["data"]), "created_at": at,
                              "updated_at": at})
    elif kind == "NodeRevised":
        # A revision carries only what changed; its data, when present, is the node's whole data.
        changes: dict[str, Any] = {"updated_at": at}
        if d.get("node_type") is not None:
            changes["node_type"] = d["node_type"]
        if d.get("status") is not None:
            changes["node_status"] = d["status"]
        if d.get("data") is not None:
            changes.update(capability_fields(d["data"]), data=True)
        nodes.change(row_id, changes)
    elif kind == "NodeDeleted":
        nodes.delete(row_id)


_MACHINE: Columns = {"id": "uuid", "account_id": "uuid", "name": "text", "identity_verified": "boolean",
                     "status": "text", "version": "bigint", "updated_at": "timestamptz"}
# COALESCE keeps what the batch did not touch; none of these columns is ever set back to NULL.
_MACHINE_SETS = ("name = COALESCE(u.name, t.name)", "identity_verified = COALESCE(u.identity_verified,"
                 " t.identity_verified)", "status = COALESCE(u.status, t.status)", "version = u.version",
                 "updated_at = u.updated_at")
_ENDPOINT: Columns = {"id": "uuid", "machine_id": "uuid", "provider_key": "text", "status": "text", "source": "text",
                      "lease_expires_at": "timestamptz", "last_seen_at": "timestamptz", "version": "bigint"}
# `lease`: whether the batch wrote the lease (a manual upsert clears it, so NULL is a value here).
_ENDPOINT_PATCH: Columns = {"id": "uuid", "status": "text", "source": "text", "lease": "boolean",
                            "lease_expires_at": "timestamptz", "last_seen_at": "timestamptz", "version": "bigint"}
_ENDPOINT_SETS = ("status = COALESCE(u.status, t.status)", "source = COALESCE(u.source, t.source)",
                  "lease_expires_at = CASE WHEN u.lease THEN u.lease_expires_at ELSE t.lease_expires_at END",
                  "last_seen_at = COALESCE(u.last_seen_at, t.last_seen_at)", "version = u.version")


async def _write_machines(conn: asyncpg.Connection, table: str, f: _Fold) -> None:
    # One statement each for the batch's new and changed rows (one executor run, not one per row).
    if f.full:
        await conn.execute(insert_rows(table, _MACHINE), *arrays(_MACHINE, [
            (mid, *(r[c] for c in _MACHINE if c != "id")) for mid, r in f.full.items()]))
    if f.patch:
        await conn.execute(update_rows(table, "id", _MACHINE, _MACHINE_SETS), *arrays(_MACHINE, [
            (mid, None, *(r.get(c) for c in _MACHINE if c not in ("id", "account_id")))
            for mid, r in f.patch.items()]))


async def _heartbeats(conn: asyncpg.Connection, t: Tables, endpoints: _Fold) -> None:
    """A batch that only changes endpoints the catalogue already has (heartbeats, expiries): the endpoints' update
    and the listings' refresh as independent writes, one statement with a live batch's checkpoint. The refresh
    reads the endpoints as they were and overlays the statuses the batch sets (see _REFRESH_PATCHED), so it does
    not need to see the update's rows; run one after the other (a transaction) it reads the same statuses."""
    ids = list(endpoints.patch)
    statuses = [r.get("status") for r in endpoints.patch.values()]
    writes = IndependentWrites()
    writes.add(lambda n: update_rows(t["catalogue_endpoints"], "id", _ENDPOINT_PATCH, _ENDPOINT_SETS, n),
               _endpoint_patch_args(endpoints))
    writes.add(lambda n: _REFRESH_PATCHED.format(ids=n, statuses=n + 1, **t), [ids, statuses])
    await writes.send(conn)


def _endpoint_patch_args(f: _Fold) -> list[list[Any]]:
    return arrays(_ENDPOINT_PATCH, [
        (sid, r.get("status"), r.get("source"), bool(r.get("lease")), r.get("lease_expires_at"), r.get("last_seen_at"),
         r["version"]) for sid, r in f.patch.items()])


async def _write_endpoints(conn: asyncpg.Connection, table: str, f: _Fold) -> None:
    if f.full:
        await conn.execute(insert_rows(table, _ENDPOINT), *arrays(_ENDPOINT, [
            (sid, *(r[c] for c in _ENDPOINT if c != "id")) for sid, r in f.full.items()]))
    if f.patch:
        await conn.execute(update_rows(table, "id", _ENDPOINT_PATCH, _ENDPOINT_SETS), *_endpoint_patch_args(f))


async def _write_nodes(conn: asyncpg.Connection, table: str, f: _Fold) -> None:
    if f.deleted:
        await conn.execute(f"DELETE FROM {table} WHERE id = ANY($1::uuid[])", list(f.deleted))
    if f.full:
        # A node deleted and created again under the same id replaces its row, flags included (refreshed below).
        cols = ", ".join(_NODE_COLUMNS)
        values = ", ".join(f"${i}{'::jsonb' if c == 'input_schema' else ''}" for i, c in enumerate(_NODE_COLUMNS, 2))
        sets = ", ".join(f"{c} = EXCLUDED.{c}" for c in _NODE_COLUMNS)
        await conn.executemany(
            f"INSERT INTO {table} (id, {cols}) VALUES ($1, {values}) ON CONFLICT (id) DO UPDATE SET {sets},"
            " machine_operational = false, endpoint_active = false",
            [(row_id, *(r[c] for c in _NODE_COLUMNS)) for row_id, r in f.full.items()])
    if f.patch:
        data_sets = ", ".join(f"{c} = CASE WHEN $4 THEN ${i}{'::jsonb' if c == 'input_schema' else ''} ELSE {c} END"
                              for i, c in enumerate(_FIELDS, 5))
        await conn.executemany(
            f"UPDATE {table} SET node_type = COALESCE($2, node_type), node_status = COALESCE($3, node_status),"
            f" {data_sets}, updated_at = $10 WHERE id = $1",
            [(row_id, r.get("node_type"), r.get("node_status"), bool(r.get("data")), *(r.get(c) for c in _FIELDS),
              r["updated_at"]) for row_id, r in f.patch.items()])


# Writes only the rows whose flags change, so a heartbeat of an already active endpoint writes no listing. The
# machines come as an InitPlan array, so listings are found through their machine index (no scan, no self-join).
_OPERATIONAL = "COALESCE((SELECT m.operational FROM {catalogue_machines} m WHERE m.id = l.machine_id), false)"
_ACTIVE = ("COALESCE((SELECT e.status = 'active' FROM {catalogue_endpoints} e"
           " WHERE e.machine_id = l.machine_id AND e.provider_key = l.provider_key), false)")
_REFRESH = f"""
UPDATE {{catalogue_listings}} l SET machine_operational = {_OPERATIONAL}, endpoint_active = {_ACTIVE}
WHERE l.machine_id = ANY(ARRAY(SELECT unnest($1::uuid[]) UNION
                               SELECT machine_id FROM {{catalogue_endpoints}} WHERE id = ANY($2::uuid[])))
  AND (l.machine_operational <> {_OPERATIONAL} OR l.endpoint_active <> {_ACTIVE})
"""
# The refresh for a batch of endpoint changes only, in the same statement as their update: each endpoint's status
# is the one the batch sets (parameter `statuses`, NULL where it sets none), else the one stored.
_ACTIVE_PATCHED = ("COALESCE((SELECT COALESCE(u.status, e.status) = 'active' FROM {catalogue_endpoints} e"
                   " LEFT JOIN unnest(${ids}::uuid[], ${statuses}::text[]) AS u(id, status) ON u.id = e.id"
                   " WHERE e.machine_id = l.machine_id AND e.provider_key = l.provider_key), false)")
_REFRESH_PATCHED = f"""
UPDATE {{catalogue_listings}} l SET machine_operational = {_OPERATIONAL}, endpoint_active = {_ACTIVE_PATCHED}
WHERE l.machine_id = ANY(ARRAY(SELECT machine_id FROM {{catalogue_endpoints}} WHERE id = ANY(${{ids}}::uuid[])))
  AND (l.machine_operational <> {_OPERATIONAL} OR l.endpoint_active <> {_ACTIVE_PATCHED})
"""

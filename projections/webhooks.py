"""Webhook endpoints read model: each live endpoint's current definition (the sealed secret stays in the log)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

import asyncpg

from app.store.types import RecordedEvent
from projections.base import Tables

P = "webhooks:WebhookEndpoint."


class WebhooksProjection:
    name = "webhooks"
    prefixes = (P,)
    tables: tuple[str, ...] = ("webhook_endpoints_view",)

    async def apply_many(self, conn: asyncpg.Connection, events: Sequence[RecordedEvent], t: Tables) -> None:
        # Endpoints change rarely: one statement per event keeps the fold obvious.
        table = t["webhook_endpoints_view"]
        for event in events:
            if not event.type.startswith(P):
                continue
            kind, d = event.type[len(P):], event.data
            at = datetime.fromisoformat(d["timestamp"])
            if kind == "Registered":
                await conn.execute(
                    f"INSERT INTO {table} (id, account_id, url, types, description, enabled, version, created_at,"
                    " updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8) ON CONFLICT (id) DO NOTHING",
                    event.stream_id, uuid.UUID(d["account_id"]), d["url"], d["types"], d["description"],
                    d["enabled"], event.version, at)
            elif kind == "Revised":
                await conn.execute(
                    f"UPDATE {table} SET url = $2, types = $3, description = $4, enabled = $5, version = $6,"
                    " updated_at = $7 WHERE id = $1",
                    event.stream_id, d["url"], d["types"], d["description"], d["enabled"], event.version, at)
            elif kind == "SecretRotated":
                await conn.execute(
                    f"UPDATE {table} SET previous_secret_expires_at = $2, version = $3, updated_at = $4"
                    " WHERE id = $1",
                    event.stream_id, datetime.fromisoformat(d["previous_valid_until"]), event.version, at)
            elif kind == "DisabledForFailures":
                await conn.execute(f"UPDATE {table} SET enabled = false, version = $2, updated_at = $3"
                                   " WHERE id = $1", event.stream_id, event.version, at)
            elif kind == "DeliveryRetryRequested":  # changes no field shown, but the version (the ETag)
                await conn.execute(f"UPDATE {table} SET version = $2 WHERE id = $1", event.stream_id, event.version)
            elif kind == "Deleted":
                await conn.execute(f"DELETE FROM {table} WHERE id = $1", event.stream_id)

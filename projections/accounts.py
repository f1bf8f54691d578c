"""Accounts and API-key read models; authentication looks keys up here by digest."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import asyncpg

from app.store.types import RecordedEvent
from projections.base import Tables

P = "accounts:Account."


class AccountsProjection:
    name = "accounts"
    prefixes = (P,)
    tables: tuple[str, ...] = ("accounts_view", "api_keys_view")

    async def apply_many(self, conn: asyncpg.Connection, events: Sequence[RecordedEvent], t: Tables) -> None:
        # Account events are rare (sign-ups, key changes): one statement each is plenty.
        for event in events:
            if event.type.startswith(P):
                await self._apply(conn, event, t)

    async def _apply(self, conn: asyncpg.Connection, event: RecordedEvent, t: Tables) -> None:
        kind = event.type[len(P):]
        d = event.data
        at = datetime.fromisoformat(d["timestamp"])
        if kind == "Opened":
            await conn.execute(
                f"INSERT INTO {t['accounts_view']} (id, name, is_admin, created_at) VALUES ($1, $2, $3, $4)",
                event.stream_id, d["name"], d["is_admin"], at,
            )
        elif kind == "ApiKeyIssued":
            await conn.execute(
                f"INSERT INTO {t['api_keys_view']} (id, account_id, key_hash, prefix, label, created_at)"
                " VALUES ($1, $2, $3, $4, $5, $6)",
                d["key_id"], event.stream_id, d["key_hash"], d["prefix"], d["label"], at,
            )
        elif kind == "ApiKeyRevoked":
            await conn.execute(
                f"UPDATE {t['api_keys_view']} SET revoked_at = $2 WHERE id = $1", d["key_id"], at
            )
